"""Preview normalised dataset records exactly as the model will see them: template applied,
tokenised, and split into segments that do or do not carry loss.

It uses the same ``danlu_kit.conversation_tokens`` functions as the training worker, so what
the preview marks as trained is what training trains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any, NamedTuple

from danlu_kit.chat_templates import resolve_chat_template
from danlu_kit.conversation_tokens import (
    TokenizedSample,
    render_conversation,
    tokenize_text,
    tokenize_with_loss_mask,
)
from danlu_registry.core.formats import Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class PreviewSegment(NamedTuple):
    """Consecutive tokens with the same loss flag, decoded back to text."""

    text: str
    trains: bool
    token_count: int


@dataclass(frozen=True)
class PreviewRecordResult:
    index: int  # position in the records given
    text: str  # the rendered conversation (chat) or the raw text (text), before truncation
    segments: list[PreviewSegment]  # the tokens kept after truncation, in order
    token_count: int
    loss_token_count: int
    truncated: bool


@dataclass(frozen=True)
class DatasetPreview:
    # "tokenizer" (the tokenizer's own), a named template, or "" for text (no template).
    chat_template: str
    records: list[PreviewRecordResult]


def preview_records(
    tokenizer: PreTrainedTokenizerBase,
    records: Iterable[Mapping[str, Any]],
    *,
    task: Task,
    chat_template_name: str = "",
    system_prompt: str = "",
    max_length: int = 0,
) -> DatasetPreview:
    """Render and tokenise canonical records (``{"messages": [...]}`` or ``{"text": ...}``).

    ``max_length`` 0 means no truncation. Chat template and system prompt apply to chat only.
    """
    limit = max_length if max_length > 0 else None
    template, template_name = "", ""
    if task == "chat":
        template, template_name = resolve_chat_template(tokenizer, chat_template_name or None)

    results: list[PreviewRecordResult] = []
    for index, record in enumerate(records):
        if task == "chat":
            rendered = render_conversation(
                tokenizer,
                record["messages"],
                chat_template=template,
                system_prompt=system_prompt or None,
            )
            text = rendered.text
            sample = tokenize_with_loss_mask(tokenizer, rendered, max_length=limit)
        else:
            text = record["text"]
            sample = tokenize_text(tokenizer, text, limit)
        results.append(
            PreviewRecordResult(
                index=index,
                text=text,
                segments=_segments(tokenizer, sample),
                token_count=len(sample.input_ids),
                loss_token_count=sample.loss_token_count,
                truncated=sample.truncated,
            )
        )
    return DatasetPreview(chat_template=template_name, records=results)


def _segments(tokenizer: PreTrainedTokenizerBase, sample: TokenizedSample) -> list[PreviewSegment]:
    segments = []
    pairs = zip(sample.input_ids, sample.loss_mask, strict=True)
    for trains, group in groupby(pairs, key=lambda pair: pair[1]):
        ids = [token for token, _ in group]
        # Special tokens are shown (they are what the model sees); no space clean-up, so the
        # segments concatenate back to the tokenised text.
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        segments.append(PreviewSegment(text, trains, len(ids)))
    return segments

"""Conversation → token ids + loss mask: the one implementation that the dataset preview and
the training worker share, so the preview shows exactly what the model is trained on.

How the assistant turns are found: the chat template itself is the only authority on what a
turn looks like, so nothing here knows any template's tokens. For each assistant message i,
rendering ``messages[:i]`` with ``add_generation_prompt=True`` gives the prompt the model sees
at inference; rendering ``messages[:i+1]`` adds the assistant turn. What the second adds to
the first is the text the model must produce: the content and the end-of-turn marker
(``<|im_end|>``, ``<|eot_id|>``), which teaches it to stop. Whitespace after the marker (ChatML's
``"\\n"`` between turns) is the separator before the next turn and carries no loss, as in
XTuner (SUFFIX trained, SEP not). Templates for which these renderings are not prefixes of one
another (e.g. ones that rewrite earlier turns) are refused rather than guessed at.

Tokens are then marked through the fast tokenizer's offset mapping: a token carries loss when
its characters overlap a loss span. The text is tokenised once as a whole, as at inference
(segment-wise tokenisation can split differently at turn boundaries); BOS and friends are not
added a second time, since the template writes them where the model wants them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jinja2 import TemplateError

from danlu_kit.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class RenderedConversation:
    text: str
    # Character ranges [start, end) of ``text`` that carry loss, in order, not overlapping.
    loss_spans: list[tuple[int, int]]


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: list[int]
    loss_mask: list[bool]  # per token: does predicting it count in the loss?
    truncated: bool

    @property
    def loss_token_count(self) -> int:
        return sum(self.loss_mask)


def render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    *,
    chat_template: str,
    system_prompt: str | None = None,
) -> RenderedConversation:
    """Render canonical ``messages`` (role/content dicts) with ``chat_template``.

    ``system_prompt`` is added as a first system message only when the conversation has none:
    a dataset's own system message is part of its data.
    """
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in chat):
        chat.insert(0, {"role": "system", "content": system_prompt})
    if not chat:
        raise InvalidArgument(
            message="the conversation has no messages", reason="EMPTY_CONVERSATION"
        )

    text = _render(tokenizer, chat, chat_template, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise InvalidArgument(
                message="the conversation starts with an assistant message: it has no prompt",
                reason="CONVERSATION_INVALID",
            )
        prompt = _render(tokenizer, chat[:i], chat_template, add_generation_prompt=True)
        with_turn = _render(tokenizer, chat[: i + 1], chat_template, add_generation_prompt=False)
        if not (with_turn.startswith(prompt) and text.startswith(with_turn)):
            raise FailedPrecondition(
                message=(
                    f"the chat template is not prefix-stable: rendering the first {i} messages "
                    "(with the generation prompt) is not a prefix of rendering the whole "
                    "conversation, so the assistant turns cannot be located; use a named "
                    "template or fix the tokenizer's chat_template"
                ),
                reason="CHAT_TEMPLATE_NOT_PREFIX_STABLE",
            )
        start = len(prompt)
        end = start + len(with_turn[start:].rstrip())
        if end > start:
            spans.append((start, end))
    return RenderedConversation(text=text, loss_spans=spans)


def tokenize_with_loss_mask(
    tokenizer: PreTrainedTokenizerBase,
    rendered: RenderedConversation,
    *,
    max_length: int | None,
) -> TokenizedSample:
    """Tokenise a rendered conversation; mark tokens overlapping its loss spans.

    ``max_length`` keeps the first tokens (the prompt context comes first); None: no limit.
    """
    _require_fast(tokenizer)
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    mask = _overlap_mask(encoding["offset_mapping"], rendered.loss_spans)
    return _truncate(ids, mask, max_length)


def tokenize_text(
    tokenizer: PreTrainedTokenizerBase, text: str, max_length: int | None = None
) -> TokenizedSample:
    """Tokenise raw text for continued pre-training: every token carries loss, EOS ends it.

    The tokenizer's own special-token policy applies (a Llama tokenizer adds its BOS, a Qwen
    one adds nothing); EOS is appended so that documents packed together stay separable.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise FailedPrecondition(
            message="the tokenizer has no eos_token: raw text samples cannot be terminated",
            reason="EOS_TOKEN_MISSING",
        )
    ids: list[int] = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not ids or ids[-1] != eos:
        ids.append(eos)
    return _truncate(ids, [True] * len(ids), max_length)


def _render(
    tokenizer: PreTrainedTokenizerBase,
    chat: list[dict[str, str]],
    chat_template: str,
    *,
    add_generation_prompt: bool,
) -> str:
    try:
        return tokenizer.apply_chat_template(
            chat,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    except TemplateError as e:
        # Templates raise on conversations they do not support (e.g. a system message).
        raise FailedPrecondition(
            message=f"the chat template cannot render this conversation: {e}",
            reason="CHAT_TEMPLATE_ERROR",
        ) from e


def _overlap_mask(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[bool]:
    # Offsets and spans are both sorted, so one forward pass suffices.
    mask: list[bool] = []
    k = 0
    for start, end in offsets:
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            mask.append(False)
            continue
        span_start, span_end = spans[k]
        if end > start:
            mask.append(end > span_start and start < span_end)
        else:  # a zero-width token: inside the span or not
            mask.append(span_start <= start < span_end)
    return mask


def _truncate(ids: list[int], mask: list[bool], max_length: int | None) -> TokenizedSample:
    if max_length is not None and max_length <= 0:
        raise ValueError("max_length must be positive (or None for no limit)")
    if max_length is not None and len(ids) > max_length:
        return TokenizedSample(ids[:max_length], mask[:max_length], truncated=True)
    return TokenizedSample(ids, mask, truncated=False)


def _require_fast(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise FailedPrecondition(
            message="a fast (Rust `tokenizers`) tokenizer is needed to map tokens onto text",
            reason="FAST_TOKENIZER_REQUIRED",
        )

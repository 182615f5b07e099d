"""Dataset preview: records rendered and split into trained / not trained segments."""

from __future__ import annotations

import io
import json

import pytest
from transformers import PreTrainedTokenizerBase

from danlu_kit.errors import InvalidArgument
from danlu_registry.core.formats import iter_canonical_records, normalize_dataset
from danlu_registry.core.preview import PreviewSegment, preview_records
from demo.tiny_tokenizer import build_tiny_tokenizer

RECORDS = [
    {
        "messages": [
            {"role": "user", "content": "请介绍一下你自己"},
            {"role": "assistant", "content": "我是丹炉的小助手。"},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
        ]
    },
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_chat_preview_with_the_tokenizer_template(tokenizer: PreTrainedTokenizerBase) -> None:
    preview = preview_records(tokenizer, RECORDS, task="chat")
    assert preview.chat_template == "tokenizer"
    first, second = preview.records
    assert first.index == 0 and second.index == 1
    # Qwen2's own template adds its default system prompt.
    assert first.text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert first.segments == [
        PreviewSegment(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n",
            False,
            first.segments[0].token_count,
        ),
        PreviewSegment("我是丹炉的小助手。<|im_end|>", True, first.segments[1].token_count),
        PreviewSegment("\n", False, 1),
    ]
    for record in preview.records:
        assert "".join(s.text for s in record.segments) == record.text
        assert sum(s.token_count for s in record.segments) == record.token_count
        assert sum(s.token_count for s in record.segments if s.trains) == record.loss_token_count
        assert not record.truncated
    assert [s.text for s in second.segments if s.trains] == ["4<|im_end|>", "6<|im_end|>"]


def test_named_template_and_system_prompt(tokenizer: PreTrainedTokenizerBase) -> None:
    preview = preview_records(
        tokenizer, RECORDS, task="chat", chat_template_name="qwen_chat", system_prompt="Be nice."
    )
    assert preview.chat_template == "chatml"
    first, second = preview.records
    assert first.text.startswith("<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\n")
    assert second.text.startswith("<|im_start|>system\nBe terse.<|im_end|>")  # its own wins


def test_truncation(tokenizer: PreTrainedTokenizerBase) -> None:
    (full,) = preview_records(tokenizer, RECORDS[1:], task="chat").records
    (cut,) = preview_records(tokenizer, RECORDS[1:], task="chat", max_length=10).records
    assert (cut.token_count, cut.truncated) == (10, True)
    assert cut.text == full.text  # the text is the whole record; segments show what is kept
    assert sum(s.token_count for s in cut.segments) == 10
    assert cut.loss_token_count == 0  # the answers lie beyond the first 10 tokens


def test_text_preview_trains_everything(tokenizer: PreTrainedTokenizerBase) -> None:
    preview = preview_records(tokenizer, [{"text": "hello world"}], task="text")
    assert preview.chat_template == ""
    (record,) = preview.records
    assert record.text == "hello world"
    assert record.segments == [PreviewSegment("hello world<|im_end|>", True, record.token_count)]
    assert record.loss_token_count == record.token_count


def test_unknown_template_name(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(InvalidArgument) as info:
        preview_records(tokenizer, RECORDS, task="chat", chat_template_name="nope")
    assert info.value.reason == "UNKNOWN_CHAT_TEMPLATE"


def test_normalised_alpaca_previews_end_to_end(tokenizer: PreTrainedTokenizerBase) -> None:
    upload = json.dumps(
        [{"instruction": "Translate", "input": "hello", "output": "你好", "system": "Translator."}]
    ).encode()
    normalised = io.BytesIO()
    result = normalize_dataset(io.BytesIO(upload), normalised)
    normalised.seek(0)
    preview = preview_records(
        tokenizer, iter_canonical_records(normalised, limit=5), task=result.task
    )
    (record,) = preview.records
    assert record.text == (
        "<|im_start|>system\nTranslator.<|im_end|>\n<|im_start|>user\nTranslate\nhello<|im_end|>\n"
        "<|im_start|>assistant\n你好<|im_end|>\n"
    )
    assert [s.text for s in record.segments if s.trains] == ["你好<|im_end|>"]

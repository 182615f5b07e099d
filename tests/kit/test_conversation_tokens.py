"""Conversation rendering, tokenisation and loss masks (danlu_kit.conversation_tokens)."""

from __future__ import annotations

from itertools import groupby

import pytest
from tokenizers import processors
from transformers import PreTrainedTokenizerBase

from danlu_kit.chat_templates import get_chat_template
from danlu_kit.conversation_tokens import (
    RenderedConversation,
    TokenizedSample,
    render_conversation,
    tokenize_text,
    tokenize_with_loss_mask,
)
from danlu_kit.errors import FailedPrecondition, InvalidArgument
from demo.tiny_tokenizer import QWEN2_CHAT_TEMPLATE, build_tiny_tokenizer

CHATML = get_chat_template("chatml").template
LLAMA3 = get_chat_template("llama3_chat").template

CONVERSATION = [
    {"role": "system", "content": "You are Danlu."},
    {"role": "user", "content": "请介绍一下你自己"},
    {"role": "assistant", "content": "我是丹炉的小助手。"},
    {"role": "user", "content": "And in English?"},
    # Content that ends with a newline keeps it: only whitespace after <|im_end|> is dropped.
    {"role": "assistant", "content": "I am Danlu's assistant.\n"},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(
        tmp_path_factory.mktemp("tok_bos"), chat_template=None, bos_token="<|begin_of_text|>"
    )


def decode(tok: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def groups(tok: PreTrainedTokenizerBase, sample: TokenizedSample) -> list[tuple[bool, str]]:
    """Consecutive tokens with the same loss flag, decoded."""
    pairs = zip(sample.input_ids, sample.loss_mask, strict=True)
    return [
        (flag, decode(tok, [t for t, _ in grp])) for flag, grp in groupby(pairs, lambda p: p[1])
    ]


def test_chatml_loss_covers_exactly_assistant_content_and_im_end(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    rendered = render_conversation(tokenizer, CONVERSATION, chat_template=CHATML)
    assert rendered.text == (
        "<|im_start|>system\nYou are Danlu.<|im_end|>\n"
        "<|im_start|>user\n请介绍一下你自己<|im_end|>\n"
        "<|im_start|>assistant\n我是丹炉的小助手。<|im_end|>\n"
        "<|im_start|>user\nAnd in English?<|im_end|>\n"
        "<|im_start|>assistant\nI am Danlu's assistant.\n<|im_end|>\n"
    )
    assert [rendered.text[a:b] for a, b in rendered.loss_spans] == [
        "我是丹炉的小助手。<|im_end|>",
        "I am Danlu's assistant.\n<|im_end|>",
    ]

    sample = tokenize_with_loss_mask(tokenizer, rendered, max_length=None)
    assert not sample.truncated
    assert len(sample.input_ids) == len(sample.loss_mask)
    # Tokenised once, without extra special tokens: decoding gives the rendered text back.
    assert decode(tokenizer, sample.input_ids) == rendered.text
    assert groups(tokenizer, sample) == [
        (
            False,
            "<|im_start|>system\nYou are Danlu.<|im_end|>\n<|im_start|>user\n请介绍一下你自己"
            "<|im_end|>\n<|im_start|>assistant\n",
        ),
        (True, "我是丹炉的小助手。<|im_end|>"),
        (False, "\n<|im_start|>user\nAnd in English?<|im_end|>\n<|im_start|>assistant\n"),
        (True, "I am Danlu's assistant.\n<|im_end|>"),
        (False, "\n"),
    ]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trained_im_end = [
        t for t, m in zip(sample.input_ids, sample.loss_mask, strict=True) if m and t == im_end
    ]
    assert len(trained_im_end) == 2  # each assistant turn learns to stop; no other turn's marker
    assert sample.loss_token_count == sum(sample.loss_mask)


def test_tokenizer_own_template_with_its_default_system_prompt(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rendered = render_conversation(tokenizer, messages, chat_template=QWEN2_CHAT_TEMPLATE)
    assert rendered.text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    sample = tokenize_with_loss_mask(tokenizer, rendered, max_length=None)
    assert [text for trains, text in groups(tokenizer, sample) if trains] == ["Hello!<|im_end|>"]


def test_system_prompt_only_fills_in_a_missing_system_message(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    without = CONVERSATION[1:3]
    rendered = render_conversation(
        tokenizer, without, chat_template=CHATML, system_prompt="Be kind."
    )
    assert rendered.text.startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n")

    rendered = render_conversation(
        tokenizer, CONVERSATION, chat_template=CHATML, system_prompt="Be kind."
    )
    assert "Be kind." not in rendered.text
    assert rendered.text.startswith("<|im_start|>system\nYou are Danlu.<|im_end|>")

    rendered = render_conversation(tokenizer, without, chat_template=CHATML, system_prompt="")
    assert rendered.text.startswith("<|im_start|>user\n")


def test_llama3_bos_once_and_eot_trained(llama_tokenizer: PreTrainedTokenizerBase) -> None:
    rendered = render_conversation(llama_tokenizer, CONVERSATION, chat_template=LLAMA3)
    sample = tokenize_with_loss_mask(llama_tokenizer, rendered, max_length=None)
    bos = llama_tokenizer.bos_token_id
    assert sample.input_ids[0] == bos
    assert sample.input_ids.count(bos) == 1  # the template's BOS, not added a second time
    # Llama 3 trims contents, so the trailing newline of the last answer is gone.
    assert [text for trains, text in groups(llama_tokenizer, sample) if trains] == [
        "我是丹炉的小助手。<|eot_id|>",
        "I am Danlu's assistant.<|eot_id|>",
    ]


def test_truncation_keeps_the_first_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    rendered = render_conversation(tokenizer, CONVERSATION, chat_template=CHATML)
    full = tokenize_with_loss_mask(tokenizer, rendered, max_length=None)
    cut = tokenize_with_loss_mask(tokenizer, rendered, max_length=40)
    assert cut.truncated
    assert len(cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[:40]
    assert cut.loss_mask == full.loss_mask[:40]
    exact = tokenize_with_loss_mask(tokenizer, rendered, max_length=len(full.input_ids))
    assert not exact.truncated
    assert exact == full
    with pytest.raises(ValueError):
        tokenize_with_loss_mask(tokenizer, rendered, max_length=0)


def test_a_token_partly_inside_a_span_carries_loss(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "hello world"
    sample = tokenize_with_loss_mask(
        tokenizer, RenderedConversation(text, [(7, 8)]), max_length=None
    )
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    assert sample.loss_mask == [start < 8 and end > 7 for start, end in offsets]
    assert sum(sample.loss_mask) == 1


def test_tokenize_text_trains_every_token_and_ends_with_eos(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    text = "Fine-tuning a large language model needs data, a template and patience."
    sample = tokenize_text(tokenizer, text)
    assert all(sample.loss_mask)
    assert sample.input_ids[-1] == tokenizer.eos_token_id
    assert decode(tokenizer, sample.input_ids) == text + tokenizer.eos_token
    assert not sample.truncated

    cut = tokenize_text(tokenizer, text, 5)
    assert (len(cut.input_ids), cut.truncated, cut.loss_mask) == (5, True, [True] * 5)
    assert cut.input_ids == sample.input_ids[:5]


def test_tokenize_text_follows_the_tokenizers_bos_policy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tok = build_tiny_tokenizer(
        tmp_path_factory.mktemp("tok_llama"), chat_template=None, bos_token="<|begin_of_text|>"
    )
    plain = tokenize_text(tok, "hello")
    assert plain.input_ids == [*tok.encode("hello", add_special_tokens=False), tok.eos_token_id]
    # A tokenizer whose post-processor adds BOS (as Llama's does) gets it once.
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.bos_token_id)]
    )
    assert tokenize_text(tok, "hello").input_ids == [tok.bos_token_id, *plain.input_ids]


def test_template_that_is_not_prefix_stable_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    # Announces the number of turns up front, so earlier renderings are not prefixes.
    counting = "{{ messages | length }} turns\n" + CHATML
    with pytest.raises(FailedPrecondition) as info:
        render_conversation(tokenizer, CONVERSATION, chat_template=counting)
    assert info.value.reason == "CHAT_TEMPLATE_NOT_PREFIX_STABLE"
    assert "prefix" in info.value.message


def test_template_errors_become_failed_precondition(tokenizer: PreTrainedTokenizerBase) -> None:
    no_system = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
    )
    with pytest.raises(FailedPrecondition) as info:
        render_conversation(tokenizer, CONVERSATION, chat_template=no_system)
    assert info.value.reason == "CHAT_TEMPLATE_ERROR"
    assert "System role not supported" in info.value.message


def test_conversation_must_not_start_with_the_assistant(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(InvalidArgument) as info:
        render_conversation(
            tokenizer, [{"role": "assistant", "content": "x"}], chat_template=CHATML
        )
    assert info.value.reason == "CONVERSATION_INVALID"


def test_slow_tokenizers_are_refused() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(FailedPrecondition) as info:
        tokenize_with_loss_mask(Slow(), RenderedConversation("x", []), max_length=None)  # type: ignore[arg-type]
    assert info.value.reason == "FAST_TOKENIZER_REQUIRED"

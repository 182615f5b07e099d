"""Named fallback chat templates and template resolution (danlu_kit.chat_templates)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from danlu_kit.chat_templates import (
    TOKENIZER_TEMPLATE,
    chat_template_names,
    get_chat_template,
    resolve_chat_template,
)
from danlu_kit.errors import FailedPrecondition, InvalidArgument
from demo.tiny_tokenizer import QWEN2_CHAT_TEMPLATE, build_tiny_tokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": " Danlu. "},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tokenizer_with_bos(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(
        tmp_path_factory.mktemp("tok_bos"), chat_template=None, bos_token="<|begin_of_text|>"
    )


def render(tok: PreTrainedTokenizerBase, name: str, messages: list, gen: bool = False) -> str:
    return tok.apply_chat_template(
        messages,
        chat_template=get_chat_template(name).template,
        add_generation_prompt=gen,
        tokenize=False,
    )


def test_names_include_aliases() -> None:
    assert chat_template_names() == ("chatml", "internlm2_chat", "llama3_chat", "qwen_chat")


def test_alias_resolves_to_its_target() -> None:
    qwen = get_chat_template(" Qwen_Chat ")
    assert qwen == get_chat_template("chatml")
    assert qwen.name == "chatml"
    assert qwen.stop_words == ("<|im_end|>", "<|endoftext|>")
    assert get_chat_template("internlm2_chat").stop_words == ("<|im_end|>",)
    assert get_chat_template("llama3_chat").stop_words == ("<|eot_id|>",)


def test_unknown_name() -> None:
    with pytest.raises(InvalidArgument) as info:
        get_chat_template("vicuna")
    assert info.value.reason == "UNKNOWN_CHAT_TEMPLATE"
    (violation,) = info.value.violations
    assert violation.field == "chat_template"
    assert violation.description == (
        'unknown chat template "vicuna" (known: chatml, internlm2_chat, llama3_chat, qwen_chat)'
    )


def test_chatml_rendering(tokenizer: PreTrainedTokenizerBase) -> None:
    assert render(tokenizer, "chatml", CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\n Danlu. <|im_end|>\n"
    )
    assert render(tokenizer, "chatml", CONVERSATION[:2], gen=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_internlm2_rendering_starts_with_bos_when_the_tokenizer_has_one(
    tokenizer: PreTrainedTokenizerBase, tokenizer_with_bos: PreTrainedTokenizerBase
) -> None:
    chatml = render(tokenizer, "chatml", CONVERSATION)
    assert render(tokenizer, "internlm2_chat", CONVERSATION) == chatml
    assert (
        render(tokenizer_with_bos, "internlm2_chat", CONVERSATION) == "<|begin_of_text|>" + chatml
    )


def test_llama3_rendering(tokenizer_with_bos: PreTrainedTokenizerBase) -> None:
    assert render(tokenizer_with_bos, "llama3_chat", CONVERSATION[:3]) == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    )
    assert render(tokenizer_with_bos, "llama3_chat", CONVERSATION[:2], gen=True).endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("name", ["chatml", "internlm2_chat", "llama3_chat"])
def test_named_templates_are_prefix_stable(
    name: str, tokenizer_with_bos: PreTrainedTokenizerBase
) -> None:
    full = render(tokenizer_with_bos, name, CONVERSATION)
    for i in range(1, len(CONVERSATION)):
        assert full.startswith(render(tokenizer_with_bos, name, CONVERSATION[:i]))
        if CONVERSATION[i]["role"] == "assistant":
            assert full.startswith(render(tokenizer_with_bos, name, CONVERSATION[:i], gen=True))


def test_stop_words_are_single_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    for name in ("chatml", "llama3_chat"):
        for word in get_chat_template(name).stop_words:
            assert len(tokenizer.encode(word, add_special_tokens=False)) == 1


def test_resolve_prefers_the_tokenizer_own_template(tokenizer: PreTrainedTokenizerBase) -> None:
    assert resolve_chat_template(tokenizer, None) == (QWEN2_CHAT_TEMPLATE, TOKENIZER_TEMPLATE)
    assert resolve_chat_template(tokenizer, "") == (QWEN2_CHAT_TEMPLATE, "tokenizer")


def test_resolve_a_named_template(tokenizer: PreTrainedTokenizerBase) -> None:
    template, name = resolve_chat_template(tokenizer, "qwen_chat")
    assert (template, name) == (get_chat_template("chatml").template, "chatml")


def test_resolve_uses_the_default_of_several_tokenizer_templates() -> None:
    class Tok:
        chat_template = {"default": "{{ messages }}", "tool_use": "{{ tools }}"}

    assert resolve_chat_template(Tok(), None) == ("{{ messages }}", "tokenizer")


def test_resolve_without_any_template(tmp_path: Path) -> None:
    bare = build_tiny_tokenizer(tmp_path, chat_template=None)
    with pytest.raises(FailedPrecondition) as info:
        resolve_chat_template(bare, None)
    assert info.value.reason == "CHAT_TEMPLATE_MISSING"
    assert "chatml, internlm2_chat, llama3_chat, qwen_chat" in info.value.message
    with pytest.raises(InvalidArgument):
        resolve_chat_template(bare, "nope")

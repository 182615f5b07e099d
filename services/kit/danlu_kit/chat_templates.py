"""Named fallback chat templates, for tokenizers that ship without a ``chat_template``.

A model's own template always wins (DESIGN.md §5): these exist for base models whose tokenizer
has none (XTuner users pick ``internlm2_chat``, ``qwen_chat``, ``llama3_chat`` by name). Each
is a Hugging Face style Jinja template (``messages``, ``add_generation_prompt``, ``bos_token``)
rendered by ``tokenizer.apply_chat_template``, plus the stop words a server needs to end a
turn. All of them are prefix-stable: rendering ``messages[:i]`` yields a prefix of rendering
``messages``, which ``conversation_tokens`` relies on to find the assistant turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from danlu_kit.errors import FailedPrecondition, FieldViolation, InvalidArgument

# The name reported when the tokenizer's own template is used.
TOKENIZER_TEMPLATE = "tokenizer"


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    template: str
    # Strings that end an assistant turn when generating (vLLM/transformers "stop").
    stop_words: tuple[str, ...]


# ChatML as Qwen uses it, without Qwen2's default system prompt: the dataset (or the caller's
# system_prompt) decides whether there is one. The "\n" after <|im_end|> separates turns.
_CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# InternLM2-chat: ChatML tokens behind the model's BOS (<s>).
_INTERNLM2_CHAT = (
    "{%- if bos_token -%}{{ bos_token }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Llama-3-Instruct (Meta's template): BOS, header tokens, trimmed content, <|eot_id|>.
_LLAMA3_CHAT = (
    "{%- for message in messages -%}"
    "{%- if loop.first and bos_token -%}{{ bos_token }}{%- endif -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif -%}"
)

_TEMPLATES: dict[str, NamedTemplate] = {
    t.name: t
    for t in (
        NamedTemplate("chatml", _CHATML, ("<|im_end|>", "<|endoftext|>")),
        NamedTemplate("internlm2_chat", _INTERNLM2_CHAT, ("<|im_end|>",)),
        NamedTemplate("llama3_chat", _LLAMA3_CHAT, ("<|eot_id|>",)),
    )
}

# XTuner's names for the same formats.
_ALIASES: dict[str, str] = {"qwen_chat": "chatml"}


def chat_template_names() -> tuple[str, ...]:
    """Every name ``get_chat_template`` accepts, aliases included."""
    return tuple(sorted([*_TEMPLATES, *_ALIASES]))


def get_chat_template(name: str) -> NamedTemplate:
    """The named template; an alias returns its target (so ``name`` is the canonical one)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return _TEMPLATES[key]
    except KeyError:
        known = ", ".join(chat_template_names())
        raise InvalidArgument.from_violations(
            "UNKNOWN_CHAT_TEMPLATE",
            [FieldViolation("chat_template", f'unknown chat template "{name}" (known: {known})')],
        ) from None


def resolve_chat_template(tokenizer: Any, name: str | None) -> tuple[str, str]:
    """(template, template name): the named template if ``name`` is given, else the
    tokenizer's own (reported as ``"tokenizer"``)."""
    if name and name.strip():
        named = get_chat_template(name)
        return named.template, named.name
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several templates: the tokenizer names its default
        own = own.get("default")
    if not own:
        known = ", ".join(chat_template_names())
        raise FailedPrecondition(
            message=f"the tokenizer has no chat_template: name one of {known}",
            reason="CHAT_TEMPLATE_MISSING",
            metadata={"known_templates": known},
        )
    return own, TOKENIZER_TEMPLATE

"""Requests before they reach an engine: sampling validated and resolved, messages checked and
rendered with the right chat template, lengths checked against the context.

Every refusal is INVALID_ARGUMENT naming the field as the API spells it (``messages``,
``messages[2].role``, ``sampling.temperature``...), except a missing template, which is a
FAILED_PRECONDITION: the request is fine, the artifact lacks something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from danlu_inference.core.engine import Sampling
from danlu_kit.chat_templates import get_chat_template
from danlu_kit.errors import FailedPrecondition, FieldViolation, InvalidArgument

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant ("" when the request left it unset)
    content: str


@dataclass(frozen=True)
class SamplingInput:
    """Sampling as requested: None means "not set" (the artifact's defaults apply)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int = 0
    seed: int | None = None
    repetition_penalty: float | None = None
    stop_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatTemplate:
    """The template a request is rendered with, where it came from, and its stop words."""

    template: str
    source: str  # a named template, "adapter", "model" or "tokenizer"
    stop_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    text: str
    template: ChatTemplate | None = None
    extra_stop_words: tuple[str, ...] = field(default=())


def _bad(field_name: str, description: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument.from_violations(reason, [FieldViolation(field_name, description)])


def resolve_sampling(
    given: SamplingInput,
    defaults: dict[str, Any],
    contract_stop_words: tuple[str, ...] = (),
    *,
    prefix: str = "sampling",
) -> Sampling:
    """Validate what was given and fill the rest from ``defaults`` (a generation_config.json).

    ``max_new_tokens`` is resolved against the context later (:func:`fit_to_context`).
    """
    violations = []

    def check(name: str, value, ok: bool, rule: str):
        if value is not None and not ok:
            violations.append(FieldViolation(f"{prefix}.{name}", f"{value!r}: {rule}"))

    t, p, k = given.temperature, given.top_p, given.top_k
    check(
        "temperature",
        t,
        t is not None and math.isfinite(t) and t >= 0,
        "must be 0 (greedy) or positive",
    )
    check("top_p", p, p is not None and 0 < p <= 1, "must be in (0, 1]")
    check("top_k", k, k is not None and k >= 0, "must be 0 (no cut) or positive")
    check("max_new_tokens", given.max_new_tokens, given.max_new_tokens >= 0, "must not be negative")
    rp = given.repetition_penalty
    check(
        "repetition_penalty",
        rp,
        rp is not None and math.isfinite(rp) and rp > 0,
        "must be positive (1.0: none)",
    )
    for i, word in enumerate(given.stop_words):
        if not word:
            violations.append(FieldViolation(f"{prefix}.stop_words[{i}]", "must not be empty"))
    if violations:
        raise InvalidArgument.from_violations("INVALID_SAMPLING", violations)

    if t is None:  # an explicit do_sample=false in generation_config.json means greedy
        greedy = defaults.get("do_sample") is False
        t = 0.0 if greedy else float(defaults.get("temperature", 1.0))
    return Sampling(
        temperature=float(t),
        top_p=float(p if p is not None else defaults.get("top_p", 1.0)),
        top_k=int(k if k is not None else defaults.get("top_k", 0) or 0),
        max_new_tokens=given.max_new_tokens or int(defaults.get("max_new_tokens") or 0),
        seed=given.seed,
        repetition_penalty=float(rp if rp is not None else defaults.get("repetition_penalty", 1.0)),
        stop_words=tuple(given.stop_words),
        contract_stop_words=tuple(contract_stop_words),
    )


def fit_to_context(
    sampling: Sampling,
    prompt_tokens: int,
    max_model_len: int,
    *,
    prompt_field: str,
    prefix: str = "sampling",
) -> Sampling:
    """Refuse a prompt or completion that can never fit; else cap the completion to the room
    left (generation then ends with LENGTH at the end of the context)."""
    if prompt_tokens >= max_model_len:
        raise _bad(
            prompt_field,
            f"the prompt is {prompt_tokens} tokens; the deployment's context is "
            f"{max_model_len} tokens (prompt plus completion)",
            "PROMPT_TOO_LONG",
        )
    if sampling.max_new_tokens > max_model_len:
        raise _bad(
            f"{prefix}.max_new_tokens",
            f"{sampling.max_new_tokens} is beyond the deployment's context of {max_model_len} "
            "tokens (prompt plus completion)",
            "MAX_NEW_TOKENS_TOO_LARGE",
        )
    room = max_model_len - prompt_tokens
    wanted = sampling.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    return Sampling(**{**vars(sampling), "max_new_tokens": min(wanted, room)})


def check_messages(messages: list[Message], field_name: str = "messages") -> None:
    if not messages:
        raise _bad(field_name, "at least one message is required")
    violations = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            violations.append(
                FieldViolation(f"{field_name}[{i}].role", f"must be one of {', '.join(ROLES)}")
            )
    if violations:
        raise InvalidArgument.from_violations("INVALID_ARGUMENT", violations)


def choose_template(
    tokenizer: Any,
    *,
    requested: str,
    adapter_template: str = "",
    model_template: str = "",
    field_name: str = "chat_template",
) -> ChatTemplate:
    """The request's named template, else the adapter's recorded one, else the model's
    recorded one, else the tokenizer's own (DESIGN §5)."""
    if requested and requested.strip():
        try:
            named = get_chat_template(requested)
        except InvalidArgument:
            raise InvalidArgument.from_violations(
                "UNKNOWN_CHAT_TEMPLATE",
                [FieldViolation(field_name, f"unknown chat template {requested!r}")],
            ) from None
        return ChatTemplate(named.template, named.name, named.stop_words)
    if adapter_template:
        return ChatTemplate(adapter_template, "adapter")
    if model_template:
        return ChatTemplate(model_template, "model")
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        raise FailedPrecondition(
            "neither the artifact nor its tokenizer has a chat template; name one in "
            f"{field_name} (internlm2_chat, chatml, llama3_chat) or use Generate",
            reason="CHAT_TEMPLATE_MISSING",
        )
    return ChatTemplate(own, "tokenizer")


def render_chat(
    tokenizer: Any,
    messages: list[Message],
    template: ChatTemplate,
    *,
    system: str = "",
    field_name: str = "messages",
) -> Prompt:
    """Apply the template (with the generation prompt) and tokenise the result."""
    check_messages(messages, field_name)
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    if system and not any(m.role == "system" for m in messages):
        conversation.insert(0, {"role": "system", "content": system})
    try:
        text = tokenizer.apply_chat_template(
            conversation,
            chat_template=template.template,
            add_generation_prompt=True,
            tokenize=False,
        )
    except Exception as exc:  # jinja2 TemplateError from raise_exception(), or a broken template
        raise _bad(
            field_name, f"the chat template ({template.source}) rejects them: {exc}"
        ) from None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return Prompt(ids=list(ids), text=text, template=template)


def tokenize_raw(tokenizer: Any, prompt: str, field_name: str = "prompt") -> Prompt:
    if not prompt:
        raise _bad(field_name, "must not be empty")
    ids = tokenizer(prompt)["input_ids"]  # special tokens as the tokenizer adds them (BOS)
    return Prompt(ids=list(ids), text=prompt)

"""Every refused request gets its precise code, reason and field (google.rpc details)."""

from __future__ import annotations

import pytest

from danlu_client.errors import DanluError
from tests.fixtures.inference import push_adapter

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]

# A template that, like Llama-2's and Mistral's, refuses roles that do not alternate.
STRICT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def setup(client, base, adapter_dirs, tiny_model_dir, tiny_model_no_template_dir):
    push_adapter(client, adapter_dirs["one"], "good", base)
    push_adapter(
        client,
        adapter_dirs["one"],
        "foreign",
        base,
        contract={"base_model_digest": "sha256:" + "0" * 64},
    )
    push_adapter(client, adapter_dirs["wide"], "wide", base)
    # The same weights registered with a recorded (strict) chat template in their contract.
    client.registry.push_model(
        tiny_model_dir, "strict", contract={"chat_template": STRICT_TEMPLATE}
    )
    client.inference.create_deployment("strict", deployment_id="strict", wait=True)
    client.registry.push_model(tiny_model_no_template_dir, "plain")
    client.inference.create_deployment("plain", deployment_id="plain", wait=True)
    client.inference.create_deployment("tiny", deployment_id="rank8", max_lora_rank=8, wait=True)
    return client


def _error(call) -> DanluError:
    with pytest.raises(DanluError) as info:
        result = call()
        if hasattr(result, "text"):
            result.text()
    return info.value


def _chat(client, deployment="tiny", messages=QUESTION, **kwargs):
    return lambda: client.inference.chat(deployment, messages, **kwargs)


CASES = {
    "unknown deployment": (
        lambda c: _chat(c, "nope"),
        ("NOT_FOUND", "DEPLOYMENT_NOT_FOUND", None),
    ),
    "bad deployment name": (
        lambda c: _chat(c, "projects/default/things/x"),
        ("INVALID_ARGUMENT", "INVALID_NAME", "deployment"),
    ),
    "unknown adapter": (
        lambda c: _chat(c, adapter="missing"),
        ("NOT_FOUND", "MODEL_NOT_FOUND", None),
    ),
    "adapter for another base": (
        lambda c: _chat(c, adapter="foreign"),
        ("FAILED_PRECONDITION", "BASE_MODEL_MISMATCH", None),
    ),
    "a base model as adapter": (
        lambda c: _chat(c, adapter="strict"),
        ("INVALID_ARGUMENT", "MODEL_NOT_ADAPTER", "adapter"),
    ),
    "adapter rank beyond max_lora_rank": (
        lambda c: _chat(c, "rank8", adapter="wide"),
        ("INVALID_ARGUMENT", "ADAPTER_RANK_TOO_LARGE", "adapter"),
    ),
    "empty messages": (
        lambda c: _chat(c, messages=[]),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages"),
    ),
    "unknown role": (
        lambda c: _chat(c, messages=[{"role": "robot", "content": "hi"}]),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages[0].role"),
    ),
    "role order the template rejects": (
        lambda c: _chat(
            c,
            "strict",
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        ),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages"),
    ),
    "negative temperature": (
        lambda c: _chat(c, temperature=-0.5),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.temperature"),
    ),
    "top_p out of range": (
        lambda c: _chat(c, top_p=1.5),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.top_p"),
    ),
    "negative top_k": (
        lambda c: _chat(c, top_k=-1),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.top_k"),
    ),
    "zero repetition penalty": (
        lambda c: _chat(c, repetition_penalty=0.0),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.repetition_penalty"),
    ),
    "empty stop word": (
        lambda c: _chat(c, stop_words=["ok", ""]),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.stop_words[1]"),
    ),
    "max tokens beyond context": (
        lambda c: _chat(c, max_new_tokens=600),
        ("INVALID_ARGUMENT", "MAX_NEW_TOKENS_TOO_LARGE", "sampling.max_new_tokens"),
    ),
    "prompt beyond context": (
        lambda c: _chat(c, messages=[{"role": "user", "content": "apple banana " * 400}]),
        ("INVALID_ARGUMENT", "PROMPT_TOO_LONG", "messages"),
    ),
    "unknown chat template": (
        lambda c: _chat(c, chat_template="nope"),
        ("INVALID_ARGUMENT", "UNKNOWN_CHAT_TEMPLATE", "chat_template"),
    ),
    "no chat template anywhere": (
        lambda c: _chat(c, "plain"),
        ("FAILED_PRECONDITION", "CHAT_TEMPLATE_MISSING", None),
    ),
    "empty raw prompt": (
        lambda c: lambda: c.inference.generate("tiny", ""),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "prompt"),
    ),
    "deploy an unknown model": (
        lambda c: lambda: c.inference.create_deployment("ghost"),
        ("NOT_FOUND", "MODEL_NOT_FOUND", None),
    ),
    "deploy an adapter": (
        lambda c: lambda: c.inference.create_deployment("good"),
        ("FAILED_PRECONDITION", "MODEL_IS_ADAPTER", None),
    ),
    "deploy with bits=3": (
        lambda c: lambda: c.inference.create_deployment("tiny", bits=3),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.bits"),
    ),
    "batching on transformers": (
        lambda c: (
            lambda: c.inference.create_deployment("tiny", engine="transformers", max_num_seqs=4)
        ),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.max_num_seqs"),
    ),
    "context beyond the model's": (
        lambda c: lambda: c.inference.create_deployment("tiny", max_model_len=4096),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.max_model_len"),
    ),
    "bad deployment id": (
        lambda c: lambda: c.inference.create_deployment("tiny", deployment_id="Bad Id"),
        ("INVALID_ARGUMENT", "INVALID_ID", "deployment_id"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_precise_error(setup, case):
    make, (code, reason, field) = CASES[case]
    error = _error(make(setup))
    assert (error.code, error.reason) == (code, reason), error
    if field is not None:
        assert [v.field for v in error.violations] == [field], error
    assert "Traceback" not in error.message


def test_vllm_engine_refused_where_absent(setup):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    error = _error(lambda: setup.inference.create_deployment("tiny", engine="vllm"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "ENGINE_UNAVAILABLE")


def test_recorded_template_is_used(setup):
    # The strict template (recorded in the model's contract) accepts alternating roles.
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert setup.inference.chat("strict", messages, temperature=0.0, max_new_tokens=4).text()
    # ... and a named template overrides it (ChatML accepts any order).
    doubled = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    stream = setup.inference.chat(
        "strict", doubled, chat_template="chatml", temperature=0.0, max_new_tokens=4
    )
    assert stream.text() is not None

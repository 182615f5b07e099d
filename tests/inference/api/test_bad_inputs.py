"""Every refused request gets its precise code, reason and field (google.rpc details), on both
engines: transformers here, vLLM (the session deployment of tests/fixtures/vllm.py) where
`make test-vllm` runs the ``vllm``-marked parameters. The cases that need another model deployed
(a recorded strict template, no template at all) or that only concern one engine run on
transformers alone: one more vLLM deployment would start one more engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass
class Target:
    """Where the cases run: a client, its engine, the deployment chats go to and one whose
    ``max_lora_rank`` is 8 (the `wide` adapter's rank is 16)."""

    engine: str
    client: Any
    chat: str
    rank8: str


@pytest.fixture(scope="module")
def setup(request, adapter_dirs, tiny_model_dir) -> Target:
    engine = getattr(request, "param", "transformers")
    if engine == "vllm":
        served = request.getfixturevalue("vllm_served")
        client, base = served.client, served.base
        target = Target("vllm", client, served.deployment, served.deployment)
    else:
        client, base = request.getfixturevalue("client"), request.getfixturevalue("base")
        target = Target("transformers", client, "tiny", "rank8")
    push_adapter(client, adapter_dirs["one"], "good", base)
    push_adapter(
        client,
        adapter_dirs["one"],
        "foreign",
        base,
        contract={"base_model_digest": "sha256:" + "0" * 64},
    )
    push_adapter(client, adapter_dirs["wide"], "wide", base)
    # An adapter whose serving contract records the strict template.
    push_adapter(
        client,
        adapter_dirs["two"],
        "strict-adapter",
        base,
        contract={"chat_template": STRICT_TEMPLATE},
    )
    # The same weights registered with a recorded (strict) chat template in their contract.
    client.registry.push_model(
        tiny_model_dir, "strict", contract={"chat_template": STRICT_TEMPLATE}
    )
    if engine == "transformers":
        client.inference.create_deployment("strict", deployment_id="strict", wait=True)
        plain_dir = request.getfixturevalue("tiny_model_no_template_dir")
        client.registry.push_model(plain_dir, "plain")
        client.inference.create_deployment("plain", deployment_id="plain", wait=True)
        client.inference.create_deployment(
            "tiny", deployment_id="rank8", max_lora_rank=8, wait=True
        )
    return target


def _error(call) -> DanluError:
    with pytest.raises(DanluError) as info:
        result = call()
        if hasattr(result, "text"):
            result.text()
    return info.value


def _chat(t: Target, deployment=None, messages=QUESTION, **kwargs):
    return lambda: t.client.inference.chat(deployment or t.chat, messages, **kwargs)


def _deploy(t: Target, model="tiny", **kwargs):
    return lambda: t.client.inference.create_deployment(model, engine=t.engine, **kwargs)


TWO_USERS = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]

# name: (make the call from a Target, (code, reason, field)[, ("transformers",): that engine only])
CASES = {
    "unknown deployment": (
        lambda t: _chat(t, "nope"),
        ("NOT_FOUND", "DEPLOYMENT_NOT_FOUND", None),
    ),
    "bad deployment name": (
        lambda t: _chat(t, "projects/default/things/x"),
        ("INVALID_ARGUMENT", "INVALID_NAME", "deployment"),
    ),
    "unknown adapter": (
        lambda t: _chat(t, adapter="missing"),
        ("NOT_FOUND", "MODEL_NOT_FOUND", None),
    ),
    "adapter for another base": (
        lambda t: _chat(t, adapter="foreign"),
        ("FAILED_PRECONDITION", "BASE_MODEL_MISMATCH", None),
    ),
    "a base model as adapter": (
        lambda t: _chat(t, adapter="strict"),
        ("INVALID_ARGUMENT", "MODEL_NOT_ADAPTER", "adapter"),
    ),
    "adapter rank beyond max_lora_rank": (
        lambda t: _chat(t, t.rank8, adapter="wide"),
        ("INVALID_ARGUMENT", "ADAPTER_RANK_TOO_LARGE", "adapter"),
    ),
    "empty messages": (
        lambda t: _chat(t, messages=[]),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages"),
    ),
    "unknown role": (
        lambda t: _chat(t, messages=[{"role": "robot", "content": "hi"}]),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages[0].role"),
    ),
    "role order the adapter's template rejects": (
        lambda t: _chat(t, adapter="strict-adapter", messages=TWO_USERS),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages"),
    ),
    "role order the model's template rejects": (
        lambda t: _chat(t, "strict", messages=TWO_USERS),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "messages"),
        ("transformers",),
    ),
    "negative temperature": (
        lambda t: _chat(t, temperature=-0.5),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.temperature"),
    ),
    "top_p out of range": (
        lambda t: _chat(t, top_p=1.5),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.top_p"),
    ),
    "negative top_k": (
        lambda t: _chat(t, top_k=-1),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.top_k"),
    ),
    "zero repetition penalty": (
        lambda t: _chat(t, repetition_penalty=0.0),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.repetition_penalty"),
    ),
    "empty stop word": (
        lambda t: _chat(t, stop_words=["ok", ""]),
        ("INVALID_ARGUMENT", "INVALID_SAMPLING", "sampling.stop_words[1]"),
    ),
    "max tokens beyond context": (
        lambda t: _chat(t, max_new_tokens=600),
        ("INVALID_ARGUMENT", "MAX_NEW_TOKENS_TOO_LARGE", "sampling.max_new_tokens"),
    ),
    "prompt beyond context": (
        lambda t: _chat(t, messages=[{"role": "user", "content": "apple banana " * 400}]),
        ("INVALID_ARGUMENT", "PROMPT_TOO_LONG", "messages"),
    ),
    "unknown chat template": (
        lambda t: _chat(t, chat_template="nope"),
        ("INVALID_ARGUMENT", "UNKNOWN_CHAT_TEMPLATE", "chat_template"),
    ),
    "no chat template anywhere": (
        lambda t: _chat(t, "plain"),
        ("FAILED_PRECONDITION", "CHAT_TEMPLATE_MISSING", None),
        ("transformers",),
    ),
    "empty raw prompt": (
        lambda t: lambda: t.client.inference.generate(t.chat, ""),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "prompt"),
    ),
    "deploy an unknown model": (
        lambda t: _deploy(t, "ghost"),
        ("NOT_FOUND", "MODEL_NOT_FOUND", None),
    ),
    "deploy an adapter": (
        lambda t: _deploy(t, "good"),
        ("FAILED_PRECONDITION", "MODEL_IS_ADAPTER", None),
    ),
    "deploy with bits=3": (
        lambda t: _deploy(t, bits=3),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.bits"),
    ),
    "batching on transformers": (
        lambda t: _deploy(t, max_num_seqs=4),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.max_num_seqs"),
        ("transformers",),
    ),
    "context beyond the model's": (
        lambda t: _deploy(t, max_model_len=4096),
        ("INVALID_ARGUMENT", "INVALID_OPTIONS", "deployment.options.max_model_len"),
    ),
    "bad deployment id": (
        lambda t: _deploy(t, deployment_id="Bad Id"),
        ("INVALID_ARGUMENT", "INVALID_ID", "deployment_id"),
    ),
}


ENGINES = ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
ON_BOTH = [case for case, spec in CASES.items() if len(spec) == 2]
ON_TRANSFORMERS = [case for case in CASES if case not in ON_BOTH]


def _check_refused(target: Target, case: str) -> None:
    make, (code, reason, field), *_ = CASES[case]
    error = _error(make(target))
    assert (error.code, error.reason) == (code, reason), error
    if field is not None:
        assert [v.field for v in error.violations] == [field], error
    assert "Traceback" not in error.message


# "transformers" comes first in every parametrization of `setup`, so that the tests share one
# instance of that module fixture per engine.
@pytest.mark.parametrize("case", ON_BOTH)
@pytest.mark.parametrize("setup", ENGINES, indirect=True)
def test_refused_with_precise_error(setup, case):
    _check_refused(setup, case)


@pytest.mark.parametrize("case", ON_TRANSFORMERS)
@pytest.mark.parametrize("setup", ["transformers"], indirect=True)
def test_refused_on_transformers(setup, case):
    _check_refused(setup, case)


@pytest.mark.parametrize("setup", ["transformers"], indirect=True)
def test_vllm_engine_refused_where_absent(setup):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    error = _error(lambda: setup.client.inference.create_deployment("tiny", engine="vllm"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "ENGINE_UNAVAILABLE")


@pytest.mark.parametrize("setup", ["transformers"], indirect=True)
def test_recorded_template_is_used(setup):
    # The strict template (recorded in the model's contract) accepts alternating roles.
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert setup.client.inference.chat("strict", messages, temperature=0.0, max_new_tokens=4).text()
    # ... and a named template overrides it (ChatML accepts any order).
    doubled = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    stream = setup.client.inference.chat(
        "strict", doubled, chat_template="chatml", temperature=0.0, max_new_tokens=4
    )
    assert stream.text() is not None

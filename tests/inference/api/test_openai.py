"""The OpenAI-compatible endpoint, driven by the official `openai` client."""

from __future__ import annotations

import time

import pytest

from danlu_client import Client
from danlu_kit.auth import TokenBook
from tests.fixtures.inference import inference_component, push_adapter, start_stack

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]


@pytest.fixture(scope="module")
def oai(stack, base, client, adapter_dirs):
    push_adapter(client, adapter_dirs["one"], "oai-one", base)
    port = inference_component(stack).http_port
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)


def grpc_answer(client, **kwargs) -> str:
    return client.inference.chat(
        "tiny", QUESTION, temperature=0.0, max_new_tokens=16, **kwargs
    ).text()


def test_models_list_deployments_and_loaded_adapters(oai, client):
    grpc_answer(client, adapter="oai-one")  # loads the adapter
    ids = {m.id for m in oai.models.list().data}
    assert {"tiny", "tiny:oai-one"} <= ids


def test_chat_completion_matches_grpc(oai, client):
    response = oai.chat.completions.create(
        model="tiny", messages=QUESTION, temperature=0, max_tokens=16
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == grpc_answer(client)
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16


@pytest.mark.parametrize("model", ["tiny:oai-one", "oai-one"])
def test_adapters_addressed_as_models(oai, client, model):
    response = oai.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=16
    )
    assert response.choices[0].message.content == grpc_answer(client, adapter="oai-one")
    assert response.choices[0].message.content != grpc_answer(client)


def test_streaming_with_usage(oai, client):
    stream = oai.chat.completions.create(
        model="tiny:oai-one",
        messages=QUESTION,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == grpc_answer(client, adapter="oai-one")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage.completion_tokens == 16


def test_stop_and_vllm_extras(oai, client):
    full = (
        oai.chat.completions.create(
            model="tiny",
            messages=QUESTION,
            temperature=1.0,
            seed=3,
            max_tokens=30,
            extra_body={"top_k": 50, "repetition_penalty": 1.1},
        )
        .choices[0]
        .message.content
    )
    word = full[8:11]
    cut = oai.chat.completions.create(
        model="tiny",
        messages=QUESTION,
        temperature=1.0,
        seed=3,
        max_tokens=30,
        stop=[word],
        extra_body={"top_k": 50, "repetition_penalty": 1.1},
    ).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.index(word)]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"model": "ghost"}, "NotFoundError", None),
        ({"model": "tiny:ghost"}, "NotFoundError", None),
        ({"temperature": -1}, "BadRequestError", "temperature"),
        ({"max_tokens": 100000}, "BadRequestError", "max_tokens"),
        ({"messages": []}, "BadRequestError", "messages"),
    ],
)
def test_errors(oai, kwargs, error, param):
    args = {"model": "tiny", "messages": QUESTION, "max_tokens": 4, **kwargs}
    with pytest.raises(getattr(openai, error)) as info:
        oai.chat.completions.create(**args)
    if param:
        assert info.value.body["param"] == param


def test_bearer_tokens(tmp_path, tiny_model_dir):
    server = start_stack(
        tmp_path / "data",
        tokens=TokenBook.from_tokens({"secret": "default"}),
        # the HTTP endpoint reads the same token settings as the gRPC server
        extra={"DANLU_INFERENCE_AUTH": "on", "DANLU_INFERENCE_AUTH_BOOTSTRAP_TOKEN": "secret"},
    )
    try:
        with Client(server.target, token="secret") as c:
            c.registry.push_model(tiny_model_dir, "tiny")
            c.inference.create_deployment("tiny", deployment_id="tiny", wait=True)
        url = f"http://127.0.0.1:{inference_component(server).http_port}/v1"
        good = openai.OpenAI(base_url=url, api_key="secret", max_retries=0)
        reply = good.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4)
        assert reply.usage.completion_tokens == 4
        bad = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4)
        with pytest.raises(openai.AuthenticationError):
            list(bad.models.list())
    finally:
        server.stop()


def test_a_streaming_client_that_goes_away_stops_generation(oai, stack):
    runtime = inference_component(stack).deployments._runtimes[("default", "tiny")]
    before = runtime.engine.usage().completion_tokens_total
    stream = oai.chat.completions.create(
        model="tiny", messages=QUESTION, temperature=0, max_tokens=480, stream=True
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while runtime.admission.inside and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.admission.inside == 0, "the slot was freed"
    time.sleep(0.2)
    assert runtime.engine.usage().completion_tokens_total - before < 480

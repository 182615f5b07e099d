"""Convert and merge end to end against an in-process registry: the outputs are registered with
their kind, lineage and serving contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from danlu_client import Client
from danlu_conversion.core.operations import convert_and_register, merge_and_register
from danlu_kit.errors import FailedPrecondition
from danlu_kit.objectstore import LocalObjectStore
from tests.conversion.checkpoints import train
from tests.conversion.helpers import make_adapter
from tests.fixtures.registry import start_registry

PROMPT = [[5, 17, 42, 9, 33, 8, 21]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("registry")
    server = start_registry({"DANLU_REGISTRY_DATA_DIR": str(data), "DANLU_REGISTRY_AUTH": "off"})
    client = Client(server.target, project="p")
    client.registry.push_model(tiny_model_dir, "tiny", kind="base")
    yield client.registry
    client.close()
    server.stop()


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(PROMPT)).logits.float()


def test_merge_registers_a_merged_model_with_contract_lineage_and_report(
    registry, tiny_model_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = registry.get_model("tiny")
    adapter_dir = make_adapter(tiny_model_dir, tmp_path / "adapter")
    registry.push_model(
        adapter_dir,
        "ad",
        kind="adapter",
        lineage={"parent_model": base.name, "training_job": "projects/p/trainingJobs/j"},
        contract={"base_model_digest": base.digest, "chat_template": "{{ x }}"},
    )
    steps = []
    outcome = merge_and_register(
        registry,
        adapter="ad",
        model_id="merged",
        dtype="fp32",
        job="projects/p/conversionJobs/m1",
        progress=lambda done, total, name: steps.append((done, total)),
    )
    model = outcome.model
    assert model.name == "projects/p/models/merged"
    assert model.lineage.parent_model == base.name
    assert model.lineage.adapter_model == "projects/p/models/ad"
    assert model.lineage.training_job == "projects/p/trainingJobs/j"
    assert model.lineage.conversion_job == "projects/p/conversionJobs/m1"
    assert model.contract.base_model_digest == base.digest
    assert model.contract.chat_template == "{{ x }}" and model.contract.dtype == "float32"
    assert steps[-1][0] == steps[-1][1] > 0
    assert outcome.precision.greedy_match_rate == 1.0

    merged_dir = registry.download_model("merged", tmp_path / "dl")
    report = json.loads((merged_dir / "precision_report.json").read_text())
    assert report["max_abs_logit_diff"] < 1e-3
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), adapter_dir
    )
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    torch.testing.assert_close(_logits(merged), _logits(reference.eval()), rtol=1e-4, atol=1e-4)


def test_merge_refuses_an_adapter_of_another_base_before_downloading(
    registry, tiny_model_dir, tmp_path, monkeypatch
):
    adapter_dir = make_adapter(tiny_model_dir, tmp_path / "adapter")
    registry.push_model(
        adapter_dir,
        "stranger",
        kind="adapter",
        lineage={"parent_model": "projects/p/models/tiny"},
        contract={"base_model_digest": "sha256:" + "0" * 64},
    )
    monkeypatch.setattr(
        registry, "download_model", lambda *a, **k: pytest.fail("downloaded before checking")
    )
    with pytest.raises(FailedPrecondition) as err:
        merge_and_register(registry, adapter="stranger", model_id="never")
    assert err.value.reason == "BASE_MODEL_MISMATCH"


@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_convert_registers_the_checkpoint_as_adapter_or_full_model(
    registry, tiny_model_dir, tmp_path, full
):
    store = LocalObjectStore(tmp_path / "objects")
    job = f"projects/p/trainingJobs/{'full' if full else 'lora'}"
    run = train(store, tiny_model_dir, tmp_path / "cache", job=job, full=full)
    checkpoint = run.checkpoints[0]
    model_id = "conv-full" if full else "conv-lora"
    outcome = convert_and_register(
        registry,
        store,
        checkpoint=checkpoint.name,
        model_id=model_id,
        job="projects/p/conversionJobs/c",
    )
    model = outcome.model
    assert model.lineage.checkpoint == checkpoint.name
    assert model.lineage.training_job == job
    assert model.lineage.dataset_versions == ["projects/p/datasets/d/versions/v1"]
    assert model.lineage.parent_model == "projects/p/models/tiny"
    assert model.contract.base_model_digest.startswith("sha256:")
    assert model.contract.dtype == "float16" and model.contract.chat_template
    assert model.contract.tokenizer_digest == registry.get_model("tiny").tokenizer_digest
    files = {f.path for f in model.files}
    if full:
        assert {
            "config.json",
            "tokenizer.json",
            "generation_config.json",
            "model.safetensors",
        } <= files
    else:
        assert files == {"adapter_config.json", "adapter_model.safetensors"}
    out = registry.download_model(model_id, tmp_path / "dl")
    assert Path(out).is_dir()

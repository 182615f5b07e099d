"""Checkpoint -> Hugging Face artifact, from real worker checkpoints of the tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from danlu.training.v1 import training_job_pb2 as tj
from danlu_conversion.core.convert import convert_checkpoint, fetch_checkpoint
from danlu_conversion.core.tensorfiles import CorruptShard
from danlu_kit.errors import NotFound
from danlu_kit.objectstore import LocalObjectStore
from tests.conversion.checkpoints import train

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)
PROMPT = [[5, 17, 42, 9, 33, 8, 21]]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LocalObjectStore:
    return LocalObjectStore(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def lora_run(store, tiny_model_dir, tmp_path_factory):
    return train(
        store, tiny_model_dir, tmp_path_factory.mktemp("cache"), job="projects/p/trainingJobs/lora"
    )


@pytest.fixture(scope="module")
def full_run(store, tiny_model_dir, tmp_path_factory):
    return train(
        store,
        tiny_model_dir,
        tmp_path_factory.mktemp("cache"),
        job="projects/p/trainingJobs/full",
        full=True,
    )


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(PROMPT)).logits.float()


def _greedy(model, tokens=PROMPT, n=8) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor(tokens), max_new_tokens=n, do_sample=False)
    return out[0, len(tokens[0]) :].tolist()


def _peft(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()


def test_lora_checkpoint_of_an_earlier_step_becomes_a_peft_adapter(
    store, lora_run, tiny_model_dir, tmp_path
):
    first, last = lora_run.checkpoints[0], lora_run.checkpoints[-1]
    assert first.step == 1 and last.step == 2
    raw = tmp_path / "raw"
    manifest = fetch_checkpoint(store, first.name, raw)
    assert not (raw / "optimizer.pt").exists()
    out = tmp_path / "adapter"
    result = convert_checkpoint(
        raw,
        out,
        manifest=manifest,
        dtype="fp32",
        checkpoint_name=first.name,
        tokenizer_dir=tiny_model_dir,
    )
    assert result.kind == "adapter" and result.step == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert result.contract["base_model_digest"].startswith("sha256:")
    assert result.contract["chat_template"] and result.contract["dtype"] == "float32"
    assert result.contract["tokenizer_digest"].startswith("sha256:")
    assert result.lineage["training_job"] == "projects/p/trainingJobs/lora"
    assert result.lineage["checkpoint"] == first.name
    assert result.lineage["dataset_versions"] == ["projects/p/datasets/d/versions/v1"]

    # Loads with peft unchanged and computes exactly what the training-time adapter computes.
    converted = _peft(tiny_model_dir, out)
    trained = _peft(tiny_model_dir, raw)
    torch.testing.assert_close(_logits(converted), _logits(trained))
    assert _greedy(converted) == _greedy(trained)
    # The step-1 adapter differs from the step-2 one: the step the user picked was converted.
    raw2 = tmp_path / "raw2"
    fetch_checkpoint(store, last.name, raw2)
    assert not torch.equal(_logits(_peft(tiny_model_dir, raw2)), _logits(trained))


def test_lora_adapter_defaults_to_fp16(store, lora_run, tmp_path):
    raw = tmp_path / "raw"
    manifest = fetch_checkpoint(store, lora_run.checkpoints[-1].name, raw)
    convert_checkpoint(raw, tmp_path / "a", manifest=manifest)
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float16}


def test_full_checkpoint_becomes_a_sharded_model_directory(
    store, full_run, tiny_model_dir, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = full_run.checkpoints[0]
    raw = tmp_path / "raw"
    manifest = fetch_checkpoint(store, checkpoint.name, raw)
    out = tmp_path / "model"
    result = convert_checkpoint(
        raw,
        out,
        manifest=manifest,
        dtype="bf16",
        max_shard_size="100KB",
        tokenizer_dir=tiny_model_dir,
    )
    assert result.kind == "full"
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
    } <= names
    assert len([n for n in names if n.startswith("model-")]) > 1
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    trained = AutoModelForCausalLM.from_pretrained(raw, dtype=torch.float32).eval()
    assert (_logits(model) - _logits(trained)).abs().max() < 0.1
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, trained.state_dict()[name].to(torch.bfloat16).float())


def test_corrupt_checkpoint_object_fails_and_writes_nothing(store, lora_run, tmp_path):
    checkpoint = lora_run.checkpoints[0]
    key = f"{checkpoint.name}/adapter_model.safetensors"
    good = store.get_bytes(key)
    path = Path(store.root) / key if hasattr(store, "root") else None
    try:
        if path is None or not path.is_file():
            pytest.skip("the local store's layout is not a plain directory")
        path.write_bytes(good[:-10] + b"\0" * 10)
        with pytest.raises(CorruptShard) as err:
            fetch_checkpoint(store, checkpoint.name, tmp_path / "raw")
        assert err.value.reason == "CHECKPOINT_CORRUPT" and "adapter_model" in err.value.message
    finally:
        if path is not None and path.is_file():
            path.write_bytes(good)


def test_uncommitted_checkpoint_is_not_read(store, tmp_path):
    store.put_bytes("projects/p/trainingJobs/x/checkpoints/step-1/adapter_model.safetensors", b"x")
    with pytest.raises(NotFound):
        fetch_checkpoint(store, "projects/p/trainingJobs/x/checkpoints/step-1", tmp_path / "raw")


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "full"), [(tj.DEEPSPEED_STAGE_ZERO2, False), (tj.DEEPSPEED_STAGE_ZERO3, True)]
)
def test_deepspeed_checkpoints_convert(store, tiny_model_dir, tmp_path, stage, full):
    from transformers import AutoModelForCausalLM

    job = f"projects/p/trainingJobs/zero{stage}"
    run = train(store, tiny_model_dir, tmp_path / "cache", job=job, full=full, deepspeed=stage)
    checkpoint = run.checkpoints[0]
    raw = tmp_path / "raw"
    manifest = fetch_checkpoint(store, checkpoint.name, raw)
    assert not (raw / "deepspeed").exists()
    out = tmp_path / "out"
    result = convert_checkpoint(
        raw, out, manifest=manifest, dtype="fp32", tokenizer_dir=tiny_model_dir
    )
    assert any("ZeRO" in n for n in result.notes)
    if full:
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        trained = AutoModelForCausalLM.from_pretrained(raw, dtype=torch.float32).eval()
        torch.testing.assert_close(_logits(model), _logits(trained))
    else:
        torch.testing.assert_close(
            _logits(_peft(tiny_model_dir, out)), _logits(_peft(tiny_model_dir, raw))
        )

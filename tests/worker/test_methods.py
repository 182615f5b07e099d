"""The other methods on CPU: QLoRA (bitsandbytes 4-bit), full fine-tuning, DeepSpeed ZeRO-2
and ZeRO-3 (gloo, one process), and the generated DeepSpeed config."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load
from worker_helpers import base_spec, mixed_records

from danlu.training.v1 import training_job_pb2 as tj
from danlu_kit.objectstore.artifacts import read_manifest
from danlu_worker.deepspeed_config import deepspeed_config
from danlu_worker.reporter import RecordingReporter
from danlu_worker.runner import run_assignment
from danlu_worker.spec import run_config

needs_bnb = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed"
)
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)


def _files(store, checkpoint) -> set[str]:
    return {f.path for f in read_manifest(store, checkpoint.name).files}


@needs_bnb
@pytest.mark.slow  # importing bitsandbytes and peft dominates: ~15-30 s on 2 cores
def test_qlora_trains_a_few_steps_on_a_4bit_base(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=3)
    spec.qlora.lora.CopyFrom(tj.LoraMethod(r=8, alpha=16, target_modules=["all-linear"]))
    spec.qlora.quant_type = tj.QUANT_TYPE_NF4
    spec.optimization.gradient_checkpointing = True
    spec.evaluation.max_new_tokens = 8
    reporter = RecordingReporter()
    run_assignment(make_assignment(spec=spec), store=store, reporter=reporter, cache_dir=cache_dir)
    losses = [m.loss for m in reporter.metric_events]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    [checkpoint] = reporter.checkpoints
    assert {"adapter_model.safetensors", "adapter_config.json"} <= _files(store, checkpoint)
    manifest = read_manifest(store, checkpoint.name)
    assert manifest.extra["method"] == "qlora"
    assert any("qlora" in message for _, message in reporter.logs)


def test_full_fine_tuning_saves_a_loadable_model(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=4, learning_rate=1e-3)
    spec.full.SetInParent()
    spec.optimization.gradient_checkpointing = True
    spec.optimization.weight_decay = 0.01
    reporter = RecordingReporter()
    run_assignment(make_assignment(spec=spec), store=store, reporter=reporter, cache_dir=cache_dir)
    losses = [m.loss for m in reporter.metric_events]
    assert losses[-1] < losses[0]
    [checkpoint] = reporter.checkpoints
    files = _files(store, checkpoint)
    assert {"model.safetensors", "config.json", "optimizer.pt", "trainer_state.json"} <= files
    assert read_manifest(store, checkpoint.name).extra["format"] == "full_model"
    weights = load(store.get_bytes(f"{checkpoint.name}/model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32


def test_deepspeed_config_is_generated_from_the_spec() -> None:
    spec = base_spec(micro_batch_size=4, gradient_accumulation_steps=8, max_grad_norm=0.5)
    spec.deepspeed = tj.DEEPSPEED_STAGE_ZERO3_OFFLOAD
    config = deepspeed_config(run_config(spec), world_size=2, precision="bf16")
    assert config["train_batch_size"] == 64
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 8
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True} and not config["fp16"]["enabled"]
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert config["optimizer"]["params"]["lr"] == pytest.approx(2e-3)
    json.dumps(config)  # plain JSON
    spec.deepspeed = tj.DEEPSPEED_STAGE_ZERO2
    config = deepspeed_config(run_config(spec), world_size=1, precision="fp32")
    assert config["zero_optimization"]["stage"] == 2 and "optimizer" not in config
    assert "offload_optimizer" not in config["zero_optimization"]
    spec.deepspeed = tj.DEEPSPEED_STAGE_UNSPECIFIED
    assert run_config(spec, world_size=1).deepspeed is None
    assert run_config(spec, world_size=8).deepspeed.stage == 2


@needs_deepspeed
@pytest.mark.slow
def test_deepspeed_zero2_lora(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=4, gradient_accumulation_steps=2)
    spec.deepspeed = tj.DEEPSPEED_STAGE_ZERO2
    spec.checkpoint.every_n_steps = 2
    reporter = RecordingReporter()
    run_assignment(
        make_assignment(mixed_records(), spec=spec),
        store=store,
        reporter=reporter,
        cache_dir=cache_dir,
    )
    losses = [m.loss for m in reporter.metric_events]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert all(m.grad_norm > 0 for m in reporter.metric_events)
    files = _files(store, reporter.checkpoints[-1])
    assert "adapter_model.safetensors" in files
    assert any(f.startswith("deepspeed/step-4/") for f in files)
    assert "optimizer.pt" not in files  # DeepSpeed holds the optimizer state
    assert read_manifest(store, reporter.checkpoints[-1].name).extra["deepspeed_stage"] == 2


@needs_deepspeed
@pytest.mark.slow
def test_deepspeed_zero3_full_fine_tuning_and_resume(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=4, learning_rate=1e-3)
    spec.full.SetInParent()
    spec.deepspeed = tj.DEEPSPEED_STAGE_ZERO3
    spec.checkpoint.every_n_steps = 2
    records = mixed_records()
    first = RecordingReporter()
    run_assignment(
        make_assignment(records, spec=spec), store=store, reporter=first, cache_dir=cache_dir
    )
    losses = [m.loss for m in first.metric_events]
    assert len(losses) == 4 and losses[-1] < losses[0]
    final = first.checkpoints[-1]
    files = _files(store, final)
    assert {"model.safetensors", "config.json"} <= files
    assert any(f.startswith("deepspeed/step-4/") for f in files)
    # ZeRO-3 gathered the full weights for the Hugging Face copy.
    weights = load(store.get_bytes(f"{final.name}/model.safetensors"))
    assert weights["model.layers.0.mlp.up_proj.weight"].shape == (128, 64)

    # Resuming from step 2 under ZeRO-3 repeats steps 3 and 4 exactly.
    resume = make_assignment(records, spec=spec, job="projects/p/trainingJobs/z3b")
    resume.resume_from.CopyFrom(first.checkpoints[0])
    second = RecordingReporter()
    run_assignment(resume, store=store, reporter=second, cache_dir=cache_dir, attempt=2)
    assert [m.step for m in second.metric_events] == [3, 4]
    assert [m.loss for m in second.metric_events] == pytest.approx(losses[2:], abs=1e-6)

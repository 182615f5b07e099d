"""The CUDA paths (BF16 autocast, 4-bit kernels, NCCL DeepSpeed, memory and MFU metrics).
Marked ``gpu``: skipped where no CUDA device is present, run on a GPU machine."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from worker_helpers import IDENTITY_ANSWER, base_spec, identity_records, mixed_records

from danlu.training.v1 import training_job_pb2 as tj
from danlu_kit.objectstore.artifacts import read_manifest
from danlu_worker.reporter import RecordingReporter
from danlu_worker.runner import run_assignment

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _bf16(spec: tj.TrainingJobSpec) -> tj.TrainingJobSpec:
    spec.optimization.precision = tj.PRECISION_UNSPECIFIED  # BF16 where supported
    return spec


def _train(make_assignment, store, cache_dir, spec, records=None) -> RecordingReporter:
    reporter = RecordingReporter()
    run_assignment(
        make_assignment(records, spec=spec), store=store, reporter=reporter, cache_dir=cache_dir
    )
    return reporter


def test_lora_bf16_learns_the_identity(make_assignment, store, cache_dir) -> None:
    spec = _bf16(base_spec(max_steps=30, learning_rate=1e-2))
    reporter = _train(make_assignment, store, cache_dir, spec, identity_records())
    last = reporter.metric_events[-1]
    assert last.loss < reporter.metric_events[0].loss - 1.0
    assert last.memory_allocated_bytes > 0 and last.memory_reserved_bytes > 0
    assert last.mfu > 0 or "H100" not in torch.cuda.get_device_name()
    assert reporter.evaluations[-1][1][0].answer == IDENTITY_ANSWER
    assert any("bf16 on cuda" in message for _, message in reporter.logs)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="no bitsandbytes")
def test_qlora_bf16(make_assignment, store, cache_dir) -> None:
    spec = _bf16(base_spec(max_steps=6, learning_rate=5e-3))
    spec.qlora.lora.CopyFrom(tj.LoraMethod(r=8, target_modules=["all-linear"]))
    spec.optimization.gradient_checkpointing = True
    reporter = _train(make_assignment, store, cache_dir, spec, mixed_records())
    losses = [m.loss for m in reporter.metric_events]
    assert losses[-1] < losses[0]
    assert read_manifest(store, reporter.checkpoints[-1].name).extra["method"] == "qlora"


def test_full_bf16_autocast(make_assignment, store, cache_dir) -> None:
    spec = _bf16(base_spec(max_steps=6, learning_rate=1e-3))
    spec.full.SetInParent()
    reporter = _train(make_assignment, store, cache_dir, spec, mixed_records())
    losses = [m.loss for m in reporter.metric_events]
    assert losses[-1] < losses[0]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="no deepspeed")
@pytest.mark.parametrize(
    ("method", "stage"),
    [
        ("lora", tj.DEEPSPEED_STAGE_ZERO2),
        ("full", tj.DEEPSPEED_STAGE_ZERO3),
        # Offload uses DeepSpeed's CPU AdamW, JIT-compiled on first use (about a minute).
        ("lora", tj.DEEPSPEED_STAGE_ZERO2_OFFLOAD),
        ("full", tj.DEEPSPEED_STAGE_ZERO3_OFFLOAD),
    ],
)
def test_deepspeed_bf16(make_assignment, store, cache_dir, method, stage) -> None:
    spec = _bf16(base_spec(max_steps=6, gradient_accumulation_steps=2, learning_rate=2e-3))
    if method == "full":
        spec.full.SetInParent()
    spec.deepspeed = stage
    reporter = _train(make_assignment, store, cache_dir, spec, mixed_records())
    losses = [m.loss for m in reporter.metric_events]
    assert losses[-1] < losses[0]
    files = {f.path for f in read_manifest(store, reporter.checkpoints[-1].name).files}
    assert any(f.startswith("deepspeed/") for f in files)

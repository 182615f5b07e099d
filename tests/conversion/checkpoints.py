"""Real worker checkpoints of the tiny model (``danlu_worker.runner.run_assignment``, as
tests/worker does), for the conversion tests."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import duration_pb2

from danlu.training.v1 import training_job_pb2 as tj
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.objectstore import LocalObjectStore
from tests.worker.worker_helpers import base_spec, identity_records, upload_dataset, upload_model


def train(
    store: LocalObjectStore,
    tiny_model_dir: Path,
    cache_dir: Path,
    *,
    job: str,
    full: bool = False,
    deepspeed: int = tj.DEEPSPEED_STAGE_NONE,
    steps: int = 2,
):
    """Train ``steps`` steps with a checkpoint after every step; return the worker's report."""
    from danlu_worker.reporter import RecordingReporter
    from danlu_worker.runner import run_assignment

    spec = base_spec(max_steps=steps, learning_rate=1e-2 if not full else 1e-3)
    if full:
        spec.full.SetInParent()
    spec.deepspeed = deepspeed
    spec.checkpoint.every_n_steps = 1
    spec.evaluation.max_new_tokens = 8
    assignment = wpb.WorkerAssignment(
        spec=spec,
        base_model=upload_model(store, tiny_model_dir),
        datasets=[upload_dataset(store, identity_records(16))],
        checkpoint_prefix=f"{job}/checkpoints/",
        heartbeat_interval=duration_pb2.Duration(seconds=1),
    )
    reporter = RecordingReporter()
    run_assignment(assignment, store=store, reporter=reporter, cache_dir=cache_dir)
    return reporter

"""Worker test fixtures: a local object store holding the tiny model and datasets, and a
factory of ``WorkerAssignment`` protos as the training service would hand out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from google.protobuf import duration_pb2
from worker_helpers import (
    JOB,
    AssignmentFactory,
    base_spec,
    identity_records,
    upload_dataset,
    upload_model,
)

from danlu.training.v1 import training_job_pb2 as tj
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.objectstore import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_assignment(store: LocalObjectStore, tiny_model_dir: Path) -> AssignmentFactory:
    model = upload_model(store, tiny_model_dir)

    def make(
        records: Sequence[dict] | None = None,
        *,
        spec: tj.TrainingJobSpec | None = None,
        job: str = JOB,
    ) -> wpb.WorkerAssignment:
        spec = spec or base_spec()
        dataset = upload_dataset(store, identity_records() if records is None else records)
        return wpb.WorkerAssignment(
            spec=spec,
            base_model=model,
            datasets=[dataset] * len(spec.datasets),
            checkpoint_prefix=f"{job}/checkpoints/",
            heartbeat_interval=duration_pb2.Duration(seconds=1),
        )

    return make

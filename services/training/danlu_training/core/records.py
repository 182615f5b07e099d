"""What the training core reads and writes: jobs, checkpoints, events and the pinned inputs.

The spec, metrics and event payloads are the API's own protobuf messages (protobuf, not gRPC):
the spec module already works on ``TrainingJobSpec``, and events reported by workers are stored
as they arrived. Everything else is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from google.protobuf.message import Message
from google.rpc import status_pb2

from danlu.training.v1 import training_event_pb2, training_job_pb2


class JobState(IntEnum):
    """The job lifecycle; numbers equal ``danlu.common.v1.JobState``."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLING = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


# Event payloads by the name of their field in ``TrainingEvent.payload``.
EVENT_PAYLOADS: dict[str, type[Message]] = {
    "state_changed": training_event_pb2.StateChanged,
    "log": training_event_pb2.LogLine,
    "metrics": training_job_pb2.TrainingMetrics,
    "evaluation": training_event_pb2.EvaluationAnswers,
    "checkpoint_committed": training_event_pb2.CheckpointCommitted,
    "checkpoint_deleted": training_event_pb2.CheckpointDeleted,
    "resumed": training_event_pb2.Resumed,
}
# What a worker may report through ReportEvents; the rest the service writes itself.
WORKER_EVENT_KINDS = ("log", "metrics", "evaluation")


def job_name(project: str, job_id: str) -> str:
    return f"projects/{project}/trainingJobs/{job_id}"


def job_prefix(project: str, job_id: str) -> str:
    """Object key prefix of everything a job stores (its checkpoints)."""
    return f"{job_name(project, job_id)}/"


def checkpoint_prefix(project: str, job_id: str) -> str:
    return f"{job_name(project, job_id)}/checkpoints/"


def checkpoint_id(step: int) -> str:
    return f"step-{step}"


@dataclass(frozen=True)
class ObjectRef:
    key: str
    sha256: str
    size_bytes: int

    def to_json(self) -> dict:
        return {"key": self.key, "sha256": self.sha256, "size_bytes": self.size_bytes}

    @classmethod
    def from_json(cls, d: dict) -> ObjectRef:
        return cls(d["key"], d["sha256"], int(d["size_bytes"]))


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    object: ObjectRef


@dataclass(frozen=True)
class PinnedDataset:
    version: str  # projects/{p}/datasets/{d}/versions/{v}
    normalized: ObjectRef


@dataclass(frozen=True)
class PinnedInputs:
    """The exact base model revision and dataset objects a job trains on, fixed at create time
    so that every attempt (and a reproduction) reads the same bytes."""

    model: str
    model_digest: str
    model_files: tuple[ArtifactFile, ...]
    datasets: tuple[PinnedDataset, ...]
    validation: PinnedDataset | None = None

    def to_json(self) -> dict:
        def ds(d: PinnedDataset) -> dict:
            return {"version": d.version, "normalized": d.normalized.to_json()}

        return {
            "model": self.model,
            "model_digest": self.model_digest,
            "model_files": [{"path": f.path, **f.object.to_json()} for f in self.model_files],
            "datasets": [ds(d) for d in self.datasets],
            "validation": ds(self.validation) if self.validation else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> PinnedInputs:
        def ds(x: dict) -> PinnedDataset:
            return PinnedDataset(x["version"], ObjectRef.from_json(x["normalized"]))

        return cls(
            model=d["model"],
            model_digest=d["model_digest"],
            model_files=tuple(
                ArtifactFile(f["path"], ObjectRef.from_json(f)) for f in d["model_files"]
            ),
            datasets=tuple(ds(x) for x in d["datasets"]),
            validation=ds(d["validation"]) if d.get("validation") else None,
        )


@dataclass
class JobRecord:
    """One training job. Mutable: use cases change it inside a repository transaction."""

    project: str
    job_id: str
    spec: training_job_pb2.TrainingJobSpec
    resolved_spec: training_job_pb2.TrainingJobSpec
    inputs: PinnedInputs
    create_time: datetime
    update_time: datetime
    display_name: str = ""
    config_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    state: JobState = JobState.QUEUED
    attempt: int = 0
    error: status_pb2.Status | None = None
    progress_completed: int = 0
    progress_total: int = 0
    progress_eta_seconds: float | None = None
    progress_update_time: datetime | None = None
    latest_metrics: training_job_pb2.TrainingMetrics | None = None
    best_checkpoint: str = ""
    base_model_digest: str = ""
    # Registry references held by the job (resource names), released on delete.
    references: list[str] = field(default_factory=list)
    # sha256 of each attempt's worker token ("attempt number" -> "sha256:..."): only hashes.
    worker_tokens: dict[str, str] = field(default_factory=dict)
    cancel_requested: bool = False
    cancel_time: datetime | None = None
    last_heartbeat: datetime | None = None
    # The current attempt still needs a worker started.
    launch_pending: bool = False
    # The launcher's handle of the newest worker started, and the attempt it runs.
    launch_handle: str = ""
    launch_attempt: int = 0
    request_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def name(self) -> str:
        return job_name(self.project, self.job_id)

    @property
    def gpus(self) -> int:
        """GPUs one attempt occupies (0: a CPU job, which takes a CPU slot instead)."""
        r = self.resolved_spec.resources
        return max(0, r.gpus_per_node) * max(1, r.nodes)

    @property
    def has_validation(self) -> bool:
        return self.resolved_spec.data.WhichOneof("validation") is not None


@dataclass
class CheckpointRecord:
    project: str
    job_id: str
    step: int
    epoch: float
    train_loss: float
    validation_loss: float | None
    answers: list[tuple[str, str]]
    manifest: ObjectRef
    size_bytes: int
    create_time: datetime
    attempt: int = 0
    is_best: bool = False
    kept: bool = True
    # Names of the checkpoints whose files this commit's keep policy deleted (so that a
    # retried commit answers the same).
    deleted_on_commit: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{job_name(self.project, self.job_id)}/checkpoints/{checkpoint_id(self.step)}"

    @property
    def prefix(self) -> str:
        return f"{checkpoint_prefix(self.project, self.job_id)}{checkpoint_id(self.step)}/"


@dataclass(frozen=True)
class EventRecord:
    sequence: int
    attempt: int
    event_time: datetime
    kind: str  # a key of EVENT_PAYLOADS
    payload: Message

"""Conversions between core records and API messages (the only place that knows both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from danlu.common.v1 import common_pb2
from danlu.training.v1 import (
    checkpoint_pb2,
    training_event_pb2,
    training_job_pb2,
)
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_training.core.configs import BuiltinConfig
from danlu_training.core.records import (
    CheckpointRecord,
    EventRecord,
    JobRecord,
    JobState,
    ObjectRef,
    PinnedDataset,
)
from danlu_training.core.workers import Assignment, NewCheckpoint, WorkerEvent

EVENT_TYPES = {
    "state_changed": training_event_pb2.TRAINING_EVENT_TYPE_STATE_CHANGED,
    "log": training_event_pb2.TRAINING_EVENT_TYPE_LOG,
    "metrics": training_event_pb2.TRAINING_EVENT_TYPE_METRICS,
    "evaluation": training_event_pb2.TRAINING_EVENT_TYPE_EVALUATION,
    "checkpoint_committed": training_event_pb2.TRAINING_EVENT_TYPE_CHECKPOINT_COMMITTED,
    "checkpoint_deleted": training_event_pb2.TRAINING_EVENT_TYPE_CHECKPOINT_DELETED,
    "resumed": training_event_pb2.TRAINING_EVENT_TYPE_RESUMED,
}
EVENT_KINDS = {v: k for k, v in EVENT_TYPES.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def to_datetime(ts: Timestamp) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


def duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def object_ref(o: ObjectRef) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(key=o.key, sha256=o.sha256, size_bytes=o.size_bytes)


def job_state(state: int) -> JobState | None:
    """A request's state filter: None for UNSPECIFIED."""
    if not state:
        return None
    if state not in JobState._value2member_map_:
        raise InvalidArgument.from_violations(
            "INVALID_ARGUMENT", [FieldViolation("state", f"unknown state {state}")]
        )
    return JobState(state)


def event_kinds(types) -> list[str]:
    return [EVENT_KINDS[t] for t in types if t in EVENT_KINDS]


def training_job(job: JobRecord) -> training_job_pb2.TrainingJob:
    return training_job_pb2.TrainingJob(
        name=job.name,
        display_name=job.display_name,
        spec=job.spec,
        resolved_spec=job.resolved_spec,
        config_name=job.config_name,
        base_model_digest=job.base_model_digest,
        state=int(job.state),
        error=job.error,
        progress=common_pb2.JobProgress(
            completed=job.progress_completed,
            total=job.progress_total,
            eta=duration(job.progress_eta_seconds),
            update_time=timestamp(job.progress_update_time),
        ),
        attempt=job.attempt,
        latest_metrics=job.latest_metrics,
        best_checkpoint=job.best_checkpoint,
        labels=job.labels,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
        update_time=timestamp(job.update_time),
    )


def checkpoint(c: CheckpointRecord) -> checkpoint_pb2.Checkpoint:
    return checkpoint_pb2.Checkpoint(
        name=c.name,
        step=c.step,
        epoch=c.epoch,
        train_loss=c.train_loss,
        validation_loss=c.validation_loss,
        answers=[checkpoint_pb2.EvaluationAnswer(prompt=p, answer=a) for p, a in c.answers],
        manifest=object_ref(c.manifest),
        size_bytes=c.size_bytes,
        is_best=c.is_best,
        kept=c.kept,
        create_time=timestamp(c.create_time),
    )


def event(e: EventRecord) -> training_event_pb2.TrainingEvent:
    message = training_event_pb2.TrainingEvent(
        sequence=e.sequence, event_time=timestamp(e.event_time), attempt=e.attempt
    )
    getattr(message, e.kind).CopyFrom(e.payload)
    return message


def training_config(c: BuiltinConfig) -> training_job_pb2.TrainingConfig:
    return training_job_pb2.TrainingConfig(
        name=c.resource_name, description=c.description, yaml=c.yaml_text, spec=c.spec
    )


# -- worker API -------------------------------------------------------------------------------


def _dataset_artifact(d: PinnedDataset) -> wpb.DatasetArtifact:
    return wpb.DatasetArtifact(
        dataset_version=d.version, normalized_object=object_ref(d.normalized)
    )


def assignment(a: Assignment) -> wpb.WorkerAssignment:
    inputs = a.job.inputs
    return wpb.WorkerAssignment(
        spec=a.job.resolved_spec,
        base_model=wpb.ModelArtifact(
            model=inputs.model,
            digest=inputs.model_digest,
            files=[
                wpb.ArtifactFile(path=f.path, object=object_ref(f.object))
                for f in inputs.model_files
            ],
        ),
        datasets=[_dataset_artifact(d) for d in inputs.datasets],
        validation_dataset=_dataset_artifact(inputs.validation) if inputs.validation else None,
        resume_from=checkpoint(a.resume_from) if a.resume_from else None,
        checkpoint_prefix=a.checkpoint_prefix,
        heartbeat_interval=duration(a.heartbeat_interval_seconds),
    )


def worker_events(events) -> list[WorkerEvent]:
    return [
        WorkerEvent(
            kind=e.WhichOneof("payload") or "",
            payload=getattr(e, e.WhichOneof("payload")) if e.WhichOneof("payload") else None,
            event_time=to_datetime(e.event_time),
        )
        for e in events
    ]


def new_checkpoint(c: checkpoint_pb2.Checkpoint) -> NewCheckpoint:
    return NewCheckpoint(
        name=c.name,
        step=c.step,
        epoch=c.epoch,
        train_loss=c.train_loss,
        validation_loss=c.validation_loss if c.HasField("validation_loss") else None,
        answers=[(a.prompt, a.answer) for a in c.answers],
        manifest_key=c.manifest.key,
        manifest_sha256=c.manifest.sha256,
        size_bytes=c.size_bytes,
    )

import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from danlu.training.v1 import checkpoint_pb2 as _checkpoint_pb2
from danlu.training.v1 import training_event_pb2 as _training_event_pb2
from danlu.training.v1 import training_job_pb2 as _training_job_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerIdentity(_message.Message):
    __slots__ = ("training_job", "attempt", "token")
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    training_job: str
    attempt: int
    token: str
    def __init__(self, training_job: _Optional[str] = ..., attempt: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class GetWorkerAssignmentRequest(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ...) -> None: ...

class ArtifactFile(_message.Message):
    __slots__ = ("path", "object")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    path: str
    object: _common_pb2.ObjectRef
    def __init__(self, path: _Optional[str] = ..., object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class ModelArtifact(_message.Message):
    __slots__ = ("model", "digest", "files")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    model: str
    digest: str
    files: _containers.RepeatedCompositeFieldContainer[ArtifactFile]
    def __init__(self, model: _Optional[str] = ..., digest: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ArtifactFile, _Mapping]]] = ...) -> None: ...

class DatasetArtifact(_message.Message):
    __slots__ = ("dataset_version", "normalized_object")
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_OBJECT_FIELD_NUMBER: _ClassVar[int]
    dataset_version: str
    normalized_object: _common_pb2.ObjectRef
    def __init__(self, dataset_version: _Optional[str] = ..., normalized_object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class WorkerAssignment(_message.Message):
    __slots__ = ("spec", "base_model", "datasets", "validation_dataset", "resume_from", "checkpoint_prefix", "heartbeat_interval")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    spec: _training_job_pb2.TrainingJobSpec
    base_model: ModelArtifact
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetArtifact]
    validation_dataset: DatasetArtifact
    resume_from: _checkpoint_pb2.Checkpoint
    checkpoint_prefix: str
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, spec: _Optional[_Union[_training_job_pb2.TrainingJobSpec, _Mapping]] = ..., base_model: _Optional[_Union[ModelArtifact, _Mapping]] = ..., datasets: _Optional[_Iterable[_Union[DatasetArtifact, _Mapping]]] = ..., validation_dataset: _Optional[_Union[DatasetArtifact, _Mapping]] = ..., resume_from: _Optional[_Union[_checkpoint_pb2.Checkpoint, _Mapping]] = ..., checkpoint_prefix: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WorkerEvent(_message.Message):
    __slots__ = ("event_time", "log", "metrics", "evaluation")
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    event_time: _timestamp_pb2.Timestamp
    log: _training_event_pb2.LogLine
    metrics: _training_job_pb2.TrainingMetrics
    evaluation: _training_event_pb2.EvaluationAnswers
    def __init__(self, event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., log: _Optional[_Union[_training_event_pb2.LogLine, _Mapping]] = ..., metrics: _Optional[_Union[_training_job_pb2.TrainingMetrics, _Mapping]] = ..., evaluation: _Optional[_Union[_training_event_pb2.EvaluationAnswers, _Mapping]] = ...) -> None: ...

class ReportEventsRequest(_message.Message):
    __slots__ = ("worker", "batch_sequence", "rank", "events")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    batch_sequence: int
    rank: int
    events: _containers.RepeatedCompositeFieldContainer[WorkerEvent]
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., batch_sequence: _Optional[int] = ..., rank: _Optional[int] = ..., events: _Optional[_Iterable[_Union[WorkerEvent, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("cancel_requested",)
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    cancel_requested: bool
    def __init__(self, cancel_requested: _Optional[bool] = ...) -> None: ...

class CommitCheckpointRequest(_message.Message):
    __slots__ = ("worker", "checkpoint")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    checkpoint: _checkpoint_pb2.Checkpoint
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., checkpoint: _Optional[_Union[_checkpoint_pb2.Checkpoint, _Mapping]] = ...) -> None: ...

class CommitCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "deleted_checkpoints")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DELETED_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _checkpoint_pb2.Checkpoint
    deleted_checkpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, checkpoint: _Optional[_Union[_checkpoint_pb2.Checkpoint, _Mapping]] = ..., deleted_checkpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class CompleteWorkRequest(_message.Message):
    __slots__ = ("worker", "error")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    error: _status_pb2.Status
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

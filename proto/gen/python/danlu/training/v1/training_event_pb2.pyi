import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from danlu.training.v1 import checkpoint_pb2 as _checkpoint_pb2
from danlu.training.v1 import training_job_pb2 as _training_job_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]

class TrainingEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_EVENT_TYPE_UNSPECIFIED: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_STATE_CHANGED: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_LOG: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_METRICS: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_EVALUATION: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_CHECKPOINT_COMMITTED: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_CHECKPOINT_DELETED: _ClassVar[TrainingEventType]
    TRAINING_EVENT_TYPE_RESUMED: _ClassVar[TrainingEventType]
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel
TRAINING_EVENT_TYPE_UNSPECIFIED: TrainingEventType
TRAINING_EVENT_TYPE_STATE_CHANGED: TrainingEventType
TRAINING_EVENT_TYPE_LOG: TrainingEventType
TRAINING_EVENT_TYPE_METRICS: TrainingEventType
TRAINING_EVENT_TYPE_EVALUATION: TrainingEventType
TRAINING_EVENT_TYPE_CHECKPOINT_COMMITTED: TrainingEventType
TRAINING_EVENT_TYPE_CHECKPOINT_DELETED: TrainingEventType
TRAINING_EVENT_TYPE_RESUMED: TrainingEventType

class StateChanged(_message.Message):
    __slots__ = ("previous_state", "state", "message")
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    previous_state: _common_pb2.JobState
    state: _common_pb2.JobState
    message: str
    def __init__(self, previous_state: _Optional[_Union[_common_pb2.JobState, str]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("level", "message", "rank")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    level: LogLevel
    message: str
    rank: int
    def __init__(self, level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class EvaluationAnswers(_message.Message):
    __slots__ = ("step", "answers")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    step: int
    answers: _containers.RepeatedCompositeFieldContainer[_checkpoint_pb2.EvaluationAnswer]
    def __init__(self, step: _Optional[int] = ..., answers: _Optional[_Iterable[_Union[_checkpoint_pb2.EvaluationAnswer, _Mapping]]] = ...) -> None: ...

class CheckpointCommitted(_message.Message):
    __slots__ = ("checkpoint", "step", "is_best")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    IS_BEST_FIELD_NUMBER: _ClassVar[int]
    checkpoint: str
    step: int
    is_best: bool
    def __init__(self, checkpoint: _Optional[str] = ..., step: _Optional[int] = ..., is_best: _Optional[bool] = ...) -> None: ...

class CheckpointDeleted(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: str
    def __init__(self, checkpoint: _Optional[str] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("attempt", "from_step", "reason")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    from_step: int
    reason: str
    def __init__(self, attempt: _Optional[int] = ..., from_step: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class TrainingEvent(_message.Message):
    __slots__ = ("sequence", "event_time", "attempt", "state_changed", "log", "metrics", "evaluation", "checkpoint_committed", "checkpoint_deleted", "resumed")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DELETED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_time: _timestamp_pb2.Timestamp
    attempt: int
    state_changed: StateChanged
    log: LogLine
    metrics: _training_job_pb2.TrainingMetrics
    evaluation: EvaluationAnswers
    checkpoint_committed: CheckpointCommitted
    checkpoint_deleted: CheckpointDeleted
    resumed: Resumed
    def __init__(self, sequence: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., state_changed: _Optional[_Union[StateChanged, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., metrics: _Optional[_Union[_training_job_pb2.TrainingMetrics, _Mapping]] = ..., evaluation: _Optional[_Union[EvaluationAnswers, _Mapping]] = ..., checkpoint_committed: _Optional[_Union[CheckpointCommitted, _Mapping]] = ..., checkpoint_deleted: _Optional[_Union[CheckpointDeleted, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ...) -> None: ...

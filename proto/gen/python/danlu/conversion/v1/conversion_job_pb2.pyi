import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FP16: _ClassVar[Dtype]
    DTYPE_BF16: _ClassVar[Dtype]
    DTYPE_FP32: _ClassVar[Dtype]

class MergeDevice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MERGE_DEVICE_UNSPECIFIED: _ClassVar[MergeDevice]
    MERGE_DEVICE_AUTO: _ClassVar[MergeDevice]
    MERGE_DEVICE_CPU: _ClassVar[MergeDevice]
    MERGE_DEVICE_CUDA: _ClassVar[MergeDevice]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
DTYPE_UNSPECIFIED: Dtype
DTYPE_FP16: Dtype
DTYPE_BF16: Dtype
DTYPE_FP32: Dtype
MERGE_DEVICE_UNSPECIFIED: MergeDevice
MERGE_DEVICE_AUTO: MergeDevice
MERGE_DEVICE_CPU: MergeDevice
MERGE_DEVICE_CUDA: MergeDevice
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel

class ConvertCheckpointSpec(_message.Message):
    __slots__ = ("checkpoint", "model_id", "dtype", "max_shard_size_bytes")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_SHARD_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    checkpoint: str
    model_id: str
    dtype: Dtype
    max_shard_size_bytes: int
    def __init__(self, checkpoint: _Optional[str] = ..., model_id: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., max_shard_size_bytes: _Optional[int] = ...) -> None: ...

class MergeSpec(_message.Message):
    __slots__ = ("base_model", "adapter_model", "model_id", "dtype", "max_shard_size_bytes", "device", "skip_precision_report")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_SHARD_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SKIP_PRECISION_REPORT_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    adapter_model: str
    model_id: str
    dtype: Dtype
    max_shard_size_bytes: int
    device: MergeDevice
    skip_precision_report: bool
    def __init__(self, base_model: _Optional[str] = ..., adapter_model: _Optional[str] = ..., model_id: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., max_shard_size_bytes: _Optional[int] = ..., device: _Optional[_Union[MergeDevice, str]] = ..., skip_precision_report: _Optional[bool] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("prompt", "greedy_match")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    GREEDY_MATCH_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    greedy_match: bool
    def __init__(self, prompt: _Optional[str] = ..., greedy_match: _Optional[bool] = ...) -> None: ...

class PrecisionReport(_message.Message):
    __slots__ = ("max_abs_logit_diff", "mean_abs_logit_diff", "probes", "greedy_match_rate")
    MAX_ABS_LOGIT_DIFF_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_LOGIT_DIFF_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    GREEDY_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    probes: _containers.RepeatedCompositeFieldContainer[ProbeResult]
    greedy_match_rate: float
    def __init__(self, max_abs_logit_diff: _Optional[float] = ..., mean_abs_logit_diff: _Optional[float] = ..., probes: _Optional[_Iterable[_Union[ProbeResult, _Mapping]]] = ..., greedy_match_rate: _Optional[float] = ...) -> None: ...

class ConversionJob(_message.Message):
    __slots__ = ("name", "display_name", "convert_checkpoint", "merge", "state", "error", "progress", "output_model", "precision_report", "create_time", "start_time", "end_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONVERT_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_REPORT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    convert_checkpoint: ConvertCheckpointSpec
    merge: MergeSpec
    state: _common_pb2.JobState
    error: _status_pb2.Status
    progress: _common_pb2.JobProgress
    output_model: str
    precision_report: PrecisionReport
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., convert_checkpoint: _Optional[_Union[ConvertCheckpointSpec, _Mapping]] = ..., merge: _Optional[_Union[MergeSpec, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., output_model: _Optional[str] = ..., precision_report: _Optional[_Union[PrecisionReport, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("level", "message")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: LogLevel
    message: str
    def __init__(self, level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("description", "completed", "total", "unit")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    description: str
    completed: int
    total: int
    unit: str
    def __init__(self, description: _Optional[str] = ..., completed: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class OutputRegistered(_message.Message):
    __slots__ = ("model", "digest")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    model: str
    digest: str
    def __init__(self, model: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class ConversionEvent(_message.Message):
    __slots__ = ("sequence", "event_time", "state_changed", "log", "progress", "output_registered")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_time: _timestamp_pb2.Timestamp
    state_changed: StateChanged
    log: LogLine
    progress: Progress
    output_registered: OutputRegistered
    def __init__(self, sequence: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_changed: _Optional[_Union[StateChanged, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., output_registered: _Optional[_Union[OutputRegistered, _Mapping]] = ...) -> None: ...

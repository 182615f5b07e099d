import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_CANCELLED: JobState

class ObjectRef(_message.Message):
    __slots__ = ("key", "sha256", "size_bytes")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    key: str
    sha256: str
    size_bytes: int
    def __init__(self, key: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("dataset_versions", "training_job", "checkpoint", "parent_model", "adapter_model", "conversion_job")
    DATASET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PARENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_JOB_FIELD_NUMBER: _ClassVar[int]
    dataset_versions: _containers.RepeatedScalarFieldContainer[str]
    training_job: str
    checkpoint: str
    parent_model: str
    adapter_model: str
    conversion_job: str
    def __init__(self, dataset_versions: _Optional[_Iterable[str]] = ..., training_job: _Optional[str] = ..., checkpoint: _Optional[str] = ..., parent_model: _Optional[str] = ..., adapter_model: _Optional[str] = ..., conversion_job: _Optional[str] = ...) -> None: ...

class ServingContract(_message.Message):
    __slots__ = ("base_model_digest", "tokenizer_digest", "chat_template", "stop_words", "generation_config_json", "dtype")
    BASE_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    STOP_WORDS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    base_model_digest: str
    tokenizer_digest: str
    chat_template: str
    stop_words: _containers.RepeatedScalarFieldContainer[str]
    generation_config_json: str
    dtype: str
    def __init__(self, base_model_digest: _Optional[str] = ..., tokenizer_digest: _Optional[str] = ..., chat_template: _Optional[str] = ..., stop_words: _Optional[_Iterable[str]] = ..., generation_config_json: _Optional[str] = ..., dtype: _Optional[str] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("completed", "total", "eta", "update_time")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    completed: int
    total: int
    eta: _duration_pb2.Duration
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, completed: _Optional[int] = ..., total: _Optional[int] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

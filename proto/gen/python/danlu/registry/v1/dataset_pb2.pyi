import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_FORMAT_UNSPECIFIED: _ClassVar[DatasetFormat]
    DATASET_FORMAT_OPENAI: _ClassVar[DatasetFormat]
    DATASET_FORMAT_ALPACA: _ClassVar[DatasetFormat]
    DATASET_FORMAT_SHAREGPT: _ClassVar[DatasetFormat]
    DATASET_FORMAT_TEXT: _ClassVar[DatasetFormat]

class DatasetTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_TASK_UNSPECIFIED: _ClassVar[DatasetTask]
    DATASET_TASK_CHAT: _ClassVar[DatasetTask]
    DATASET_TASK_TEXT: _ClassVar[DatasetTask]
DATASET_FORMAT_UNSPECIFIED: DatasetFormat
DATASET_FORMAT_OPENAI: DatasetFormat
DATASET_FORMAT_ALPACA: DatasetFormat
DATASET_FORMAT_SHAREGPT: DatasetFormat
DATASET_FORMAT_TEXT: DatasetFormat
DATASET_TASK_UNSPECIFIED: DatasetTask
DATASET_TASK_CHAT: DatasetTask
DATASET_TASK_TEXT: DatasetTask

class Dataset(_message.Message):
    __slots__ = ("name", "description", "latest_version", "version_count", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    latest_version: str
    version_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., latest_version: _Optional[str] = ..., version_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DatasetStats(_message.Message):
    __slots__ = ("record_count", "turns_by_role", "min_turns", "max_turns", "mean_turns", "total_chars", "min_chars", "max_chars", "mean_chars")
    class TurnsByRoleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    TURNS_BY_ROLE_FIELD_NUMBER: _ClassVar[int]
    MIN_TURNS_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    MEAN_TURNS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHARS_FIELD_NUMBER: _ClassVar[int]
    MIN_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    MEAN_CHARS_FIELD_NUMBER: _ClassVar[int]
    record_count: int
    turns_by_role: _containers.ScalarMap[str, int]
    min_turns: int
    max_turns: int
    mean_turns: float
    total_chars: int
    min_chars: int
    max_chars: int
    mean_chars: float
    def __init__(self, record_count: _Optional[int] = ..., turns_by_role: _Optional[_Mapping[str, int]] = ..., min_turns: _Optional[int] = ..., max_turns: _Optional[int] = ..., mean_turns: _Optional[float] = ..., total_chars: _Optional[int] = ..., min_chars: _Optional[int] = ..., max_chars: _Optional[int] = ..., mean_chars: _Optional[float] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("name", "digest", "format", "task", "source_filename", "raw_object", "normalized_object", "stats", "reference_count", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FILENAME_FIELD_NUMBER: _ClassVar[int]
    RAW_OBJECT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_OBJECT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    format: DatasetFormat
    task: DatasetTask
    source_filename: str
    raw_object: _common_pb2.ObjectRef
    normalized_object: _common_pb2.ObjectRef
    stats: DatasetStats
    reference_count: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., format: _Optional[_Union[DatasetFormat, str]] = ..., task: _Optional[_Union[DatasetTask, str]] = ..., source_filename: _Optional[str] = ..., raw_object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., normalized_object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., reference_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

from danlu.common.v1 import common_pb2 as _common_pb2
from danlu.conversion.v1 import conversion_job_pb2 as _conversion_job_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateConversionJobRequest(_message.Message):
    __slots__ = ("parent", "conversion_job", "conversion_job_id", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_JOB_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    conversion_job: _conversion_job_pb2.ConversionJob
    conversion_job_id: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., conversion_job: _Optional[_Union[_conversion_job_pb2.ConversionJob, _Mapping]] = ..., conversion_job_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetConversionJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListConversionJobsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "state")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    state: _common_pb2.JobState
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ...) -> None: ...

class ListConversionJobsResponse(_message.Message):
    __slots__ = ("conversion_jobs", "next_page_token")
    CONVERSION_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversion_jobs: _containers.RepeatedCompositeFieldContainer[_conversion_job_pb2.ConversionJob]
    next_page_token: str
    def __init__(self, conversion_jobs: _Optional[_Iterable[_Union[_conversion_job_pb2.ConversionJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelConversionJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteConversionJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchConversionJobRequest(_message.Message):
    __slots__ = ("name", "after_sequence", "follow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    follow: bool
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

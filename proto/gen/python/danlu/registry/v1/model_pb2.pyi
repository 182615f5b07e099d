import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_BASE: _ClassVar[ModelKind]
    MODEL_KIND_ADAPTER: _ClassVar[ModelKind]
    MODEL_KIND_MERGED: _ClassVar[ModelKind]
    MODEL_KIND_FULL: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_BASE: ModelKind
MODEL_KIND_ADAPTER: ModelKind
MODEL_KIND_MERGED: ModelKind
MODEL_KIND_FULL: ModelKind

class ModelFile(_message.Message):
    __slots__ = ("path", "object")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    path: str
    object: _common_pb2.ObjectRef
    def __init__(self, path: _Optional[str] = ..., object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "kind", "description", "digest", "revision_id", "files", "size_bytes", "model_type", "architecture", "max_context_length", "has_chat_template", "tokenizer_digest", "lineage", "contract", "reference_count", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    description: str
    digest: str
    revision_id: str
    files: _containers.RepeatedCompositeFieldContainer[ModelFile]
    size_bytes: int
    model_type: str
    architecture: str
    max_context_length: int
    has_chat_template: bool
    tokenizer_digest: str
    lineage: _common_pb2.Lineage
    contract: _common_pb2.ServingContract
    reference_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., description: _Optional[str] = ..., digest: _Optional[str] = ..., revision_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ..., size_bytes: _Optional[int] = ..., model_type: _Optional[str] = ..., architecture: _Optional[str] = ..., max_context_length: _Optional[int] = ..., has_chat_template: _Optional[bool] = ..., tokenizer_digest: _Optional[str] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., contract: _Optional[_Union[_common_pb2.ServingContract, _Mapping]] = ..., reference_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("name", "holder", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    holder: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., holder: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

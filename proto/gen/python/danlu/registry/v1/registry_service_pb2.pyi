from danlu.common.v1 import common_pb2 as _common_pb2
from danlu.registry.v1 import dataset_pb2 as _dataset_pb2
from danlu.registry.v1 import model_pb2 as _model_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetObject(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_OBJECT_UNSPECIFIED: _ClassVar[DatasetObject]
    DATASET_OBJECT_RAW: _ClassVar[DatasetObject]
    DATASET_OBJECT_NORMALIZED: _ClassVar[DatasetObject]
DATASET_OBJECT_UNSPECIFIED: DatasetObject
DATASET_OBJECT_RAW: DatasetObject
DATASET_OBJECT_NORMALIZED: DatasetObject

class DatasetUploadHeader(_message.Message):
    __slots__ = ("parent", "format", "filename", "description", "size_bytes", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    format: _dataset_pb2.DatasetFormat
    filename: str
    description: str
    size_bytes: int
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., format: _Optional[_Union[_dataset_pb2.DatasetFormat, str]] = ..., filename: _Optional[str] = ..., description: _Optional[str] = ..., size_bytes: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UploadTrailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class UploadDatasetVersionRequest(_message.Message):
    __slots__ = ("header", "chunk", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: DatasetUploadHeader
    chunk: bytes
    trailer: UploadTrailer
    def __init__(self, header: _Optional[_Union[DatasetUploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[UploadTrailer, _Mapping]] = ...) -> None: ...

class UploadDatasetVersionResponse(_message.Message):
    __slots__ = ("dataset_version", "created")
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    dataset_version: _dataset_pb2.DatasetVersion
    created: bool
    def __init__(self, dataset_version: _Optional[_Union[_dataset_pb2.DatasetVersion, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[_dataset_pb2.Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDatasetVersionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDatasetVersionsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetVersionsResponse(_message.Message):
    __slots__ = ("dataset_versions", "next_page_token")
    DATASET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_versions: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.DatasetVersion]
    next_page_token: str
    def __init__(self, dataset_versions: _Optional[_Iterable[_Union[_dataset_pb2.DatasetVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetVersionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadDatasetVersionRequest(_message.Message):
    __slots__ = ("name", "object")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    object: DatasetObject
    def __init__(self, name: _Optional[str] = ..., object: _Optional[_Union[DatasetObject, str]] = ...) -> None: ...

class DownloadChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PreviewDatasetVersionRequest(_message.Message):
    __slots__ = ("name", "model", "record_count", "chat_template", "system_prompt", "max_length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    record_count: int
    chat_template: str
    system_prompt: str
    max_length: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., record_count: _Optional[int] = ..., chat_template: _Optional[str] = ..., system_prompt: _Optional[str] = ..., max_length: _Optional[int] = ...) -> None: ...

class PreviewSegment(_message.Message):
    __slots__ = ("text", "trains", "token_count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRAINS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    trains: bool
    token_count: int
    def __init__(self, text: _Optional[str] = ..., trains: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class PreviewRecord(_message.Message):
    __slots__ = ("index", "text", "segments", "token_count", "loss_token_count", "truncated")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOSS_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    segments: _containers.RepeatedCompositeFieldContainer[PreviewSegment]
    token_count: int
    loss_token_count: int
    truncated: bool
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[PreviewSegment, _Mapping]]] = ..., token_count: _Optional[int] = ..., loss_token_count: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class PreviewDatasetVersionResponse(_message.Message):
    __slots__ = ("records", "chat_template", "dataset_version")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PreviewRecord]
    chat_template: str
    dataset_version: str
    def __init__(self, records: _Optional[_Iterable[_Union[PreviewRecord, _Mapping]]] = ..., chat_template: _Optional[str] = ..., dataset_version: _Optional[str] = ...) -> None: ...

class ModelUploadHeader(_message.Message):
    __slots__ = ("parent", "model_id", "kind", "description", "lineage", "contract", "replace", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    model_id: str
    kind: _model_pb2.ModelKind
    description: str
    lineage: _common_pb2.Lineage
    contract: _common_pb2.ServingContract
    replace: bool
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., model_id: _Optional[str] = ..., kind: _Optional[_Union[_model_pb2.ModelKind, str]] = ..., description: _Optional[str] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., contract: _Optional[_Union[_common_pb2.ServingContract, _Mapping]] = ..., replace: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ModelFileHeader(_message.Message):
    __slots__ = ("path", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelFileTrailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "file", "chunk", "file_end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FILE_END_FIELD_NUMBER: _ClassVar[int]
    header: ModelUploadHeader
    file: ModelFileHeader
    chunk: bytes
    file_end: ModelFileTrailer
    def __init__(self, header: _Optional[_Union[ModelUploadHeader, _Mapping]] = ..., file: _Optional[_Union[ModelFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., file_end: _Optional[_Union[ModelFileTrailer, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "kind")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    kind: _model_pb2.ModelKind
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[_model_pb2.ModelKind, str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_model_pb2.Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[_model_pb2.Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadModelResponse(_message.Message):
    __slots__ = ("file", "chunk")
    FILE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    file: _model_pb2.ModelFile
    chunk: bytes
    def __init__(self, file: _Optional[_Union[_model_pb2.ModelFile, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class CreateReferenceRequest(_message.Message):
    __slots__ = ("parent", "reference")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    reference: _model_pb2.Reference
    def __init__(self, parent: _Optional[str] = ..., reference: _Optional[_Union[_model_pb2.Reference, _Mapping]] = ...) -> None: ...

class ListReferencesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReferencesResponse(_message.Message):
    __slots__ = ("references", "next_page_token")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[_model_pb2.Reference]
    next_page_token: str
    def __init__(self, references: _Optional[_Iterable[_Union[_model_pb2.Reference, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteReferenceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

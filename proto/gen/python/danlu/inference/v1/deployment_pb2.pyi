import datetime

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

class Engine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_UNSPECIFIED: _ClassVar[Engine]
    ENGINE_VLLM: _ClassVar[Engine]
    ENGINE_TRANSFORMERS: _ClassVar[Engine]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FP16: _ClassVar[Dtype]
    DTYPE_BF16: _ClassVar[Dtype]
    DTYPE_FP32: _ClassVar[Dtype]

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_CREATING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_READY: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_FAILED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_DELETING: _ClassVar[DeploymentState]
ENGINE_UNSPECIFIED: Engine
ENGINE_VLLM: Engine
ENGINE_TRANSFORMERS: Engine
DTYPE_UNSPECIFIED: Dtype
DTYPE_FP16: Dtype
DTYPE_BF16: Dtype
DTYPE_FP32: Dtype
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
DEPLOYMENT_STATE_CREATING: DeploymentState
DEPLOYMENT_STATE_READY: DeploymentState
DEPLOYMENT_STATE_FAILED: DeploymentState
DEPLOYMENT_STATE_DELETING: DeploymentState

class EngineOptions(_message.Message):
    __slots__ = ("bits", "dtype", "max_model_len", "max_loras", "max_lora_rank", "max_num_seqs", "gpu_memory_utilization", "max_queue_size")
    BITS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    bits: int
    dtype: Dtype
    max_model_len: int
    max_loras: int
    max_lora_rank: int
    max_num_seqs: int
    gpu_memory_utilization: float
    max_queue_size: int
    def __init__(self, bits: _Optional[int] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., max_model_len: _Optional[int] = ..., max_loras: _Optional[int] = ..., max_lora_rank: _Optional[int] = ..., max_num_seqs: _Optional[int] = ..., gpu_memory_utilization: _Optional[float] = ..., max_queue_size: _Optional[int] = ...) -> None: ...

class LoadedAdapter(_message.Message):
    __slots__ = ("adapter", "digest", "last_used_time")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_TIME_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    digest: str
    last_used_time: _timestamp_pb2.Timestamp
    def __init__(self, adapter: _Optional[str] = ..., digest: _Optional[str] = ..., last_used_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "model", "engine", "options", "state", "error", "model_digest", "adapters", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    engine: Engine
    options: EngineOptions
    state: DeploymentState
    error: _status_pb2.Status
    model_digest: str
    adapters: _containers.RepeatedCompositeFieldContainer[LoadedAdapter]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., engine: _Optional[_Union[Engine, str]] = ..., options: _Optional[_Union[EngineOptions, _Mapping]] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., model_digest: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[LoadedAdapter, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

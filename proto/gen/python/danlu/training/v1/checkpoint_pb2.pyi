import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationAnswer(_message.Message):
    __slots__ = ("prompt", "answer")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    answer: str
    def __init__(self, prompt: _Optional[str] = ..., answer: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("name", "step", "epoch", "train_loss", "validation_loss", "answers", "manifest", "size_bytes", "is_best", "kept", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IS_BEST_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: int
    epoch: float
    train_loss: float
    validation_loss: float
    answers: _containers.RepeatedCompositeFieldContainer[EvaluationAnswer]
    manifest: _common_pb2.ObjectRef
    size_bytes: int
    is_best: bool
    kept: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., step: _Optional[int] = ..., epoch: _Optional[float] = ..., train_loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., answers: _Optional[_Iterable[_Union[EvaluationAnswer, _Mapping]]] = ..., manifest: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., size_bytes: _Optional[int] = ..., is_best: _Optional[bool] = ..., kept: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

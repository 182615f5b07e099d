import datetime

from danlu.common.v1 import common_pb2 as _common_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_TASK_UNSPECIFIED: _ClassVar[TrainingTask]
    TRAINING_TASK_SFT: _ClassVar[TrainingTask]
    TRAINING_TASK_PRETRAIN: _ClassVar[TrainingTask]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]

class QuantType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANT_TYPE_UNSPECIFIED: _ClassVar[QuantType]
    QUANT_TYPE_NF4: _ClassVar[QuantType]
    QUANT_TYPE_FP4: _ClassVar[QuantType]

class LrScheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LR_SCHEDULER_UNSPECIFIED: _ClassVar[LrScheduler]
    LR_SCHEDULER_COSINE: _ClassVar[LrScheduler]
    LR_SCHEDULER_LINEAR: _ClassVar[LrScheduler]
    LR_SCHEDULER_CONSTANT: _ClassVar[LrScheduler]

class DeepspeedStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEEPSPEED_STAGE_UNSPECIFIED: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_NONE: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_ZERO1: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_ZERO2: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_ZERO2_OFFLOAD: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_ZERO3: _ClassVar[DeepspeedStage]
    DEEPSPEED_STAGE_ZERO3_OFFLOAD: _ClassVar[DeepspeedStage]
TRAINING_TASK_UNSPECIFIED: TrainingTask
TRAINING_TASK_SFT: TrainingTask
TRAINING_TASK_PRETRAIN: TrainingTask
PRECISION_UNSPECIFIED: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
PRECISION_FP32: Precision
QUANT_TYPE_UNSPECIFIED: QuantType
QUANT_TYPE_NF4: QuantType
QUANT_TYPE_FP4: QuantType
LR_SCHEDULER_UNSPECIFIED: LrScheduler
LR_SCHEDULER_COSINE: LrScheduler
LR_SCHEDULER_LINEAR: LrScheduler
LR_SCHEDULER_CONSTANT: LrScheduler
DEEPSPEED_STAGE_UNSPECIFIED: DeepspeedStage
DEEPSPEED_STAGE_NONE: DeepspeedStage
DEEPSPEED_STAGE_ZERO1: DeepspeedStage
DEEPSPEED_STAGE_ZERO2: DeepspeedStage
DEEPSPEED_STAGE_ZERO2_OFFLOAD: DeepspeedStage
DEEPSPEED_STAGE_ZERO3: DeepspeedStage
DEEPSPEED_STAGE_ZERO3_OFFLOAD: DeepspeedStage

class DatasetSource(_message.Message):
    __slots__ = ("dataset", "weight", "max_samples")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    weight: float
    max_samples: int
    def __init__(self, dataset: _Optional[str] = ..., weight: _Optional[float] = ..., max_samples: _Optional[int] = ...) -> None: ...

class FullMethod(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoraMethod(_message.Message):
    __slots__ = ("r", "alpha", "dropout", "target_modules")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: int
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[int] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class QLoraMethod(_message.Message):
    __slots__ = ("lora", "quant_type", "double_quant", "compute_dtype")
    LORA_FIELD_NUMBER: _ClassVar[int]
    QUANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_QUANT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    lora: LoraMethod
    quant_type: QuantType
    double_quant: bool
    compute_dtype: Precision
    def __init__(self, lora: _Optional[_Union[LoraMethod, _Mapping]] = ..., quant_type: _Optional[_Union[QuantType, str]] = ..., double_quant: _Optional[bool] = ..., compute_dtype: _Optional[_Union[Precision, str]] = ...) -> None: ...

class DataConfig(_message.Message):
    __slots__ = ("max_length", "packing", "chat_template", "system_prompt", "shuffle", "validation_split", "validation_dataset")
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_FIELD_NUMBER: _ClassVar[int]
    max_length: int
    packing: bool
    chat_template: str
    system_prompt: str
    shuffle: bool
    validation_split: float
    validation_dataset: DatasetSource
    def __init__(self, max_length: _Optional[int] = ..., packing: _Optional[bool] = ..., chat_template: _Optional[str] = ..., system_prompt: _Optional[str] = ..., shuffle: _Optional[bool] = ..., validation_split: _Optional[float] = ..., validation_dataset: _Optional[_Union[DatasetSource, _Mapping]] = ...) -> None: ...

class OptimizationConfig(_message.Message):
    __slots__ = ("epochs", "max_steps", "micro_batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio", "lr_scheduler", "adam_beta1", "adam_beta2", "weight_decay", "max_grad_norm", "precision", "gradient_checkpointing", "seed")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA1_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    max_steps: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    warmup_ratio: float
    lr_scheduler: LrScheduler
    adam_beta1: float
    adam_beta2: float
    weight_decay: float
    max_grad_norm: float
    precision: Precision
    gradient_checkpointing: bool
    seed: int
    def __init__(self, epochs: _Optional[int] = ..., max_steps: _Optional[int] = ..., micro_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., warmup_ratio: _Optional[float] = ..., lr_scheduler: _Optional[_Union[LrScheduler, str]] = ..., adam_beta1: _Optional[float] = ..., adam_beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., precision: _Optional[_Union[Precision, str]] = ..., gradient_checkpointing: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluationConfig(_message.Message):
    __slots__ = ("prompts", "system", "every_n_steps", "max_new_tokens")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    system: str
    every_n_steps: int
    max_new_tokens: int
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., system: _Optional[str] = ..., every_n_steps: _Optional[int] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class CheckpointConfig(_message.Message):
    __slots__ = ("every_n_steps", "keep")
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    every_n_steps: int
    keep: int
    def __init__(self, every_n_steps: _Optional[int] = ..., keep: _Optional[int] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("gpus_per_node", "nodes")
    GPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    gpus_per_node: int
    nodes: int
    def __init__(self, gpus_per_node: _Optional[int] = ..., nodes: _Optional[int] = ...) -> None: ...

class TrainingJobSpec(_message.Message):
    __slots__ = ("base_model", "datasets", "task", "full", "lora", "qlora", "data", "optimization", "deepspeed", "evaluation", "checkpoint", "resources")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    QLORA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    DEEPSPEED_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetSource]
    task: TrainingTask
    full: FullMethod
    lora: LoraMethod
    qlora: QLoraMethod
    data: DataConfig
    optimization: OptimizationConfig
    deepspeed: DeepspeedStage
    evaluation: EvaluationConfig
    checkpoint: CheckpointConfig
    resources: Resources
    def __init__(self, base_model: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[DatasetSource, _Mapping]]] = ..., task: _Optional[_Union[TrainingTask, str]] = ..., full: _Optional[_Union[FullMethod, _Mapping]] = ..., lora: _Optional[_Union[LoraMethod, _Mapping]] = ..., qlora: _Optional[_Union[QLoraMethod, _Mapping]] = ..., data: _Optional[_Union[DataConfig, _Mapping]] = ..., optimization: _Optional[_Union[OptimizationConfig, _Mapping]] = ..., deepspeed: _Optional[_Union[DeepspeedStage, str]] = ..., evaluation: _Optional[_Union[EvaluationConfig, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointConfig, _Mapping]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu", "memory_allocated_bytes", "memory_reserved_bytes", "eta", "validation_loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MFU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ALLOCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    mfu: float
    memory_allocated_bytes: int
    memory_reserved_bytes: int
    eta: _duration_pb2.Duration
    validation_loss: float
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., grad_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., mfu: _Optional[float] = ..., memory_allocated_bytes: _Optional[int] = ..., memory_reserved_bytes: _Optional[int] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., validation_loss: _Optional[float] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("name", "display_name", "spec", "resolved_spec", "config_name", "base_model_digest", "state", "error", "progress", "attempt", "latest_metrics", "best_checkpoint", "labels", "create_time", "start_time", "end_time", "update_time")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_SPEC_FIELD_NUMBER: _ClassVar[int]
    CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LATEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    BEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    spec: TrainingJobSpec
    resolved_spec: TrainingJobSpec
    config_name: str
    base_model_digest: str
    state: _common_pb2.JobState
    error: _status_pb2.Status
    progress: _common_pb2.JobProgress
    attempt: int
    latest_metrics: TrainingMetrics
    best_checkpoint: str
    labels: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., resolved_spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., config_name: _Optional[str] = ..., base_model_digest: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., attempt: _Optional[int] = ..., latest_metrics: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., best_checkpoint: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainingConfig(_message.Message):
    __slots__ = ("name", "description", "yaml", "spec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    yaml: str
    spec: TrainingJobSpec
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., yaml: _Optional[str] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ...) -> None: ...

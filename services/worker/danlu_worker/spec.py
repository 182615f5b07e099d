"""The run's effective settings, read once from the resolved ``TrainingJobSpec``.

The training service stores the spec with every default filled in; the worker applies the
same documented defaults again (``training_job.proto``) so that a spec missing a field still
runs as documented instead of training with zeros. Everything the loops need comes from
:class:`RunConfig`; nothing else reads the proto's optional/zero conventions.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from danlu.training.v1 import training_job_pb2 as tj
from danlu_kit.errors import FieldViolation, InvalidArgument

Method = Literal["lora", "qlora", "full"]
Task = Literal["sft", "pretrain"]

DEEPSPEED_STAGES = {
    tj.DEEPSPEED_STAGE_ZERO1: (1, False),
    tj.DEEPSPEED_STAGE_ZERO2: (2, False),
    tj.DEEPSPEED_STAGE_ZERO2_OFFLOAD: (2, True),
    tj.DEEPSPEED_STAGE_ZERO3: (3, False),
    tj.DEEPSPEED_STAGE_ZERO3_OFFLOAD: (3, True),
}


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]  # ("all-linear",) for every linear layer but the head


@dataclass(frozen=True)
class QuantSettings:
    quant_type: str  # "nf4" | "fp4"
    double_quant: bool
    compute_precision: int  # a Precision value; UNSPECIFIED: the training precision


@dataclass(frozen=True)
class DeepSpeedSettings:
    stage: int  # 1, 2 or 3
    offload: bool


@dataclass(frozen=True)
class RunConfig:
    method: Method
    task: Task | None  # None: derived from the records
    lora: LoraSettings | None
    quant: QuantSettings | None
    # data
    max_length: int
    packing: bool
    chat_template: str  # a named template, or "" for the tokenizer's own
    system_prompt: str
    shuffle: bool
    validation_split: float  # 0: none (or a separate validation dataset)
    # optimization
    epochs: int | None
    max_steps: int | None
    micro_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    warmup_ratio: float
    lr_scheduler: str  # transformers scheduler name
    adam_betas: tuple[float, float]
    weight_decay: float
    max_grad_norm: float  # 0: no clipping
    precision: int  # a Precision value; UNSPECIFIED is resolved by the device
    gradient_checkpointing: bool
    seed: int
    # evaluation and checkpoints
    eval_prompts: tuple[str, ...]
    eval_system: str
    eval_every_n_steps: int  # 0: at every checkpoint
    eval_max_new_tokens: int
    checkpoint_every_n_steps: int
    checkpoint_keep: int
    deepspeed: DeepSpeedSettings | None
    spec_digest: str

    @property
    def is_lora(self) -> bool:
        return self.method in ("lora", "qlora")


def run_config(spec: tj.TrainingJobSpec, *, world_size: int = 1) -> RunConfig:
    """The effective settings of ``spec`` (see ``training_job.proto`` for every default)."""
    method_field = spec.WhichOneof("method")
    method: Method = "lora" if method_field is None else method_field  # type: ignore[assignment]
    lora = quant = None
    if method == "lora":
        lora = _lora(spec.lora)
    elif method == "qlora":
        lora = _lora(spec.qlora.lora)
        quant = QuantSettings(
            quant_type="fp4" if spec.qlora.quant_type == tj.QUANT_TYPE_FP4 else "nf4",
            double_quant=spec.qlora.double_quant if spec.qlora.HasField("double_quant") else True,
            compute_precision=spec.qlora.compute_dtype,
        )

    task: Task | None = {tj.TRAINING_TASK_SFT: "sft", tj.TRAINING_TASK_PRETRAIN: "pretrain"}.get(
        spec.task
    )  # type: ignore[assignment]

    data = spec.data
    opt = spec.optimization
    duration = opt.WhichOneof("duration")
    epochs = max_steps = None
    if duration == "max_steps":
        max_steps = int(opt.max_steps)
    elif duration == "epochs":
        epochs = int(opt.epochs)
    else:
        epochs = 3
    violations = []
    if max_steps is not None and max_steps <= 0:
        violations.append(FieldViolation("optimization.max_steps", "must be positive"))
    if epochs is not None and epochs <= 0:
        violations.append(FieldViolation("optimization.epochs", "must be positive"))
    split = data.validation_split if data.WhichOneof("validation") == "validation_split" else 0.0
    if split and not 0 < split <= 0.5:
        violations.append(FieldViolation("data.validation_split", "must be in (0, 0.5]"))

    stage = spec.deepspeed
    if stage == tj.DEEPSPEED_STAGE_UNSPECIFIED:
        stage = tj.DEEPSPEED_STAGE_ZERO2 if world_size > 1 else tj.DEEPSPEED_STAGE_NONE
    deepspeed = None
    if stage in DEEPSPEED_STAGES:
        number, offload = DEEPSPEED_STAGES[stage]
        deepspeed = DeepSpeedSettings(stage=number, offload=offload)
        if method == "qlora" and number == 3:
            violations.append(
                FieldViolation(
                    "deepspeed",
                    "QLoRA runs with ZeRO-1 or ZeRO-2; ZeRO-3 cannot shard 4-bit weights",
                )
            )
    if violations:
        raise InvalidArgument.from_violations("SPEC_INVALID", violations)

    evaluation = spec.evaluation
    ckpt = spec.checkpoint
    seed = opt.seed if opt.HasField("seed") else random.SystemRandom().randrange(2**31)
    return RunConfig(
        method=method,
        task=task,
        lora=lora,
        quant=quant,
        max_length=data.max_length or 2048,
        packing=data.packing if data.HasField("packing") else True,
        chat_template=data.chat_template,
        system_prompt=data.system_prompt,
        shuffle=data.shuffle if data.HasField("shuffle") else True,
        validation_split=split,
        epochs=epochs,
        max_steps=max_steps,
        micro_batch_size=opt.micro_batch_size or 1,
        gradient_accumulation_steps=opt.gradient_accumulation_steps or 16,
        learning_rate=opt.learning_rate or (2e-5 if method == "full" else 2e-4),
        warmup_ratio=opt.warmup_ratio if opt.HasField("warmup_ratio") else 0.03,
        lr_scheduler={
            tj.LR_SCHEDULER_LINEAR: "linear",
            tj.LR_SCHEDULER_CONSTANT: "constant_with_warmup",
        }.get(opt.lr_scheduler, "cosine"),
        adam_betas=(
            opt.adam_beta1 if opt.HasField("adam_beta1") else 0.9,
            opt.adam_beta2 if opt.HasField("adam_beta2") else 0.999,
        ),
        weight_decay=opt.weight_decay if opt.HasField("weight_decay") else 0.0,
        max_grad_norm=opt.max_grad_norm if opt.HasField("max_grad_norm") else 1.0,
        precision=opt.precision,
        gradient_checkpointing=(
            opt.gradient_checkpointing if opt.HasField("gradient_checkpointing") else True
        ),
        seed=int(seed),
        eval_prompts=tuple(evaluation.prompts),
        eval_system=evaluation.system or data.system_prompt,
        eval_every_n_steps=evaluation.every_n_steps,
        eval_max_new_tokens=evaluation.max_new_tokens or 256,
        checkpoint_every_n_steps=ckpt.every_n_steps or 500,
        checkpoint_keep=ckpt.keep or 2,
        deepspeed=deepspeed,
        spec_digest=spec_digest(spec),
    )


def spec_digest(spec: tj.TrainingJobSpec) -> str:
    """``sha256:<hex>`` of the spec's deterministic serialisation: a resumed attempt checks that
    the checkpoint it continues was written by the same spec."""
    return "sha256:" + hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


def _lora(m: tj.LoraMethod) -> LoraSettings:
    r = m.r or 8
    targets = tuple(t for t in m.target_modules if t) or ("all-linear",)
    return LoraSettings(
        r=r,
        alpha=m.alpha or 2 * r,
        dropout=m.dropout if m.HasField("dropout") else 0.05,
        target_modules=targets,
    )

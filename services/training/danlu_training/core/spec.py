"""The training job spec: YAML (human form) <-> ``TrainingJobSpec`` (wire form), names,
defaults and validation.

One schema, two forms. ``TrainingJobSpec`` in ``training_job.proto`` is the contract and the
reference for every field; a YAML config uses the same field names, with three conveniences:

- ``method:`` is a tagged choice, a mapping with exactly one of ``full: {}``, ``lora: {...}``
  or ``qlora: {...}`` (the proto's ``method`` oneof); ``method: lora`` is short for
  ``method: {lora: {}}``.
- Enums take their short lower-case names: ``task: sft``, ``precision: bf16``,
  ``deepspeed: zero2_offload``, ``lr_scheduler: cosine``, ``quant_type: nf4``.
- A dataset is a mapping ``{dataset: NAME[@VERSION], weight: 1.0, max_samples: 0}`` or just
  the string ``NAME[@VERSION]``.

Unknown keys anywhere are errors (with the closest valid key suggested), as are wrong types and
unknown enum names: a typo never silently becomes a default. Violations name the field by its
dotted YAML path (``optimization.learning_rate``, ``datasets[1].weight``,
``method.qlora.lora.r``) and say where it was written (``line 12`` or ``--set key=value``).

The lifecycle of a spec on the server: ``qualify_names`` (short registry names -> resource
names), the caller looks the model and datasets up in the registry, then ``resolve_spec``
fills every default, pins dataset versions and validates everything against those facts and the
capabilities of the machines that will run the job, before any GPU time is spent. The resolved
spec is stored on the job, so a run is reproducible from the job alone.

Defaults follow the field comments of ``training_job.proto`` (they are the API reference); they
live in the ``DEFAULT_*`` constants below.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from danlu.training.v1.training_job_pb2 import (
    DatasetSource,
    DeepspeedStage,
    LrScheduler,
    Precision,
    QuantType,
    TrainingJobSpec,
    TrainingTask,
)
from danlu_kit.chat_templates import chat_template_names, get_chat_template
from danlu_kit.errors import FailedPrecondition, FieldViolation, InvalidArgument
from danlu_kit.names import ID_PATTERN, ID_RULE

__all__ = [
    "Capabilities",
    "DatasetFacts",
    "ModelFacts",
    "apply_overrides",
    "parse_spec_yaml",
    "qualify_names",
    "resolve_spec",
    "spec_to_yaml",
    "total_steps",
    "validate_named_template",
    "weighted_sample_counts",
]

# Reason of every INVALID_ARGUMENT raised for a bad spec.
SPEC_INVALID = "SPEC_INVALID"
# FAILED_PRECONDITION reasons: the spec is fine but cannot run here / with this model.
CAPABILITY_MISSING = "CAPABILITY_MISSING"
CHAT_TEMPLATE_MISSING = "CHAT_TEMPLATE_MISSING"
# Put in the description of a dataset whose format cannot train the task.
TASK_MISMATCH = "TASK_MISMATCH"

# ---- defaults (training_job.proto documents each one on its field) -------------------------
DEFAULT_LORA_R = 8
DEFAULT_LORA_DROPOUT = 0.05
DEFAULT_TARGET_MODULES = ("all-linear",)
DEFAULT_QUANT_TYPE = QuantType.QUANT_TYPE_NF4
DEFAULT_DOUBLE_QUANT = True
DEFAULT_MAX_LENGTH = 2048
DEFAULT_PACKING = True
DEFAULT_SHUFFLE = True
DEFAULT_EPOCHS = 3
DEFAULT_MICRO_BATCH_SIZE = 1
DEFAULT_GRADIENT_ACCUMULATION_STEPS = 16
DEFAULT_LEARNING_RATE_ADAPTER = 2e-4  # lora and qlora
DEFAULT_LEARNING_RATE_FULL = 2e-5
DEFAULT_WARMUP_RATIO = 0.03
DEFAULT_LR_SCHEDULER = LrScheduler.LR_SCHEDULER_COSINE
DEFAULT_ADAM_BETA1 = 0.9
DEFAULT_ADAM_BETA2 = 0.999
DEFAULT_WEIGHT_DECAY = 0.0
DEFAULT_MAX_GRAD_NORM = 1.0
DEFAULT_GRADIENT_CHECKPOINTING = True
DEFAULT_EVAL_MAX_NEW_TOKENS = 256
DEFAULT_CHECKPOINT_EVERY_N_STEPS = 500
DEFAULT_CHECKPOINT_KEEP = 2
DEFAULT_DATASET_WEIGHT = 1.0

# A dataset weight above this is almost certainly a mistake (each record would be seen more
# than 100 times per epoch); train longer with epochs/max_steps instead.
MAX_DATASET_WEIGHT = 100.0
# Seeds feed torch, numpy and random; numpy takes at most 32 bits.
MAX_SEED = 2**32 - 1
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ---- facts the caller looks up -------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    """The registry's view of the base model (from ``registry.v1.Model``)."""

    name: str  # projects/{p}/models/{m}
    digest: str  # sha256:<hex> of the revision the job will train on
    model_type: str  # config.json model_type, e.g. "qwen2"
    max_context_length: int  # max_position_embeddings; 0 when unknown
    has_chat_template: bool  # the tokenizer ships its own chat_template


@dataclass(frozen=True)
class DatasetFacts:
    """The registry's view of one dataset version (from ``registry.v1.DatasetVersion``)."""

    name: str  # the resolved version: projects/{p}/datasets/{d}/versions/{v}
    task: str  # "chat" (conversations) or "text" (raw text)
    record_count: int


@dataclass(frozen=True)
class Capabilities:
    """What the machines that run training jobs can do (probed by the launcher's host).

    ``bitsandbytes``/``deepspeed`` mean "installed and usable for training there".
    ``bf16`` says whether the GPUs support bfloat16 (Ampere or newer); it only matters when
    ``cuda`` is true (PyTorch runs bf16 on any CPU).
    """

    cuda: bool
    gpus: int
    bitsandbytes: bool
    deepspeed: bool
    bf16: bool = True


# ---- YAML form: schema helpers -------------------------------------------------------------
_SPEC = TrainingJobSpec.DESCRIPTOR
_METHODS = ("full", "lora", "qlora")
_DATASET_SOURCE = DatasetSource.DESCRIPTOR.full_name

# Fields where 0 means "use the default" on the wire; writing 0 in YAML is a mistake (a zero
# learning rate, an empty dataset...), so it is reported instead of silently defaulted.
_ZERO_MEANS_DEFAULT = {
    "datasets.weight": f"must be > 0 (omit it for {DEFAULT_DATASET_WEIGHT:g})",
    "data.max_length": "must be >= 1 (omit it for min(2048, the model's context))",
    "optimization.micro_batch_size": f"must be >= 1 (omit it for {DEFAULT_MICRO_BATCH_SIZE})",
    "optimization.gradient_accumulation_steps": (
        f"must be >= 1 (omit it for {DEFAULT_GRADIENT_ACCUMULATION_STEPS})"
    ),
    "optimization.learning_rate": "must be > 0 (omit it for the method's default)",
    "method.lora.r": f"must be >= 1 (omit it for {DEFAULT_LORA_R})",
    "method.lora.alpha": "must be >= 1 (omit it for 2 × r)",
    "method.qlora.lora.r": f"must be >= 1 (omit it for {DEFAULT_LORA_R})",
    "method.qlora.lora.alpha": "must be >= 1 (omit it for 2 × r)",
    "evaluation.max_new_tokens": f"must be >= 1 (omit it for {DEFAULT_EVAL_MAX_NEW_TOKENS})",
    "checkpoint.every_n_steps": (f"must be >= 1 (omit it for {DEFAULT_CHECKPOINT_EVERY_N_STEPS})"),
    "checkpoint.keep": f"must be >= 1 or -1 for all (omit it for {DEFAULT_CHECKPOINT_KEEP})",
    "resources.nodes": "must be >= 1 (omit it for 1)",
}

# Accepted spellings besides the short names, per enum.
_ENUM_ALIASES: dict[str, dict[str, str]] = {
    "Precision": {
        "bfloat16": "bf16",
        "float16": "fp16",
        "half": "fp16",
        "float32": "fp32",
        "float": "fp32",
    },
    "TrainingTask": {"pt": "pretrain"},
}


def _yaml_keys(desc: Descriptor) -> list[str]:
    """The keys a YAML mapping for ``desc`` may hold, in schema order."""
    keys: list[str] = []
    for fd in desc.fields:
        if desc is _SPEC and fd.name in _METHODS:
            if "method" not in keys:
                keys.append("method")
            continue
        keys.append(fd.name)
    return keys


def _real_oneofs(desc: Descriptor):
    """Oneofs written in the proto (not the synthetic ones behind ``optional`` fields)."""
    for oneof in desc.oneofs:
        fields = list(oneof.fields)
        if len(fields) == 1 and oneof.name == "_" + fields[0].name:
            continue
        yield oneof


def _enum_prefix(enum: EnumDescriptor) -> str:
    first = enum.values[0].name  # e.g. DEEPSPEED_STAGE_UNSPECIFIED
    return first[: -len("UNSPECIFIED")]


def _enum_short_names(enum: EnumDescriptor) -> dict[str, int]:
    prefix = _enum_prefix(enum)
    return {v.name[len(prefix) :].lower(): v.number for v in enum.values if v.number != 0}


def _enum_short_name(enum: EnumDescriptor, number: int) -> str | int:
    for short, n in _enum_short_names(enum).items():
        if n == number:
            return short
    return number  # a value this build does not know: written as its number


def _schema_index() -> dict[str, list[str]]:
    """Every key of the schema -> the dotted paths where it is valid (for suggestions)."""
    index: dict[str, list[str]] = {}

    def walk(desc: Descriptor, prefix: str, depth: int) -> None:
        for key in _yaml_keys(desc):
            path = f"{prefix}{key}"
            index.setdefault(key, []).append(path)
            if key == "method":
                for m in _METHODS:
                    index.setdefault(m, []).append(f"{path}.{m}")
                    walk(_SPEC.fields_by_name[m].message_type, f"{path}.{m}.", depth + 1)
                continue
            fd = desc.fields_by_name[key]
            if fd.type == FieldDescriptor.TYPE_MESSAGE and depth < 4:
                walk(fd.message_type, f"{path}.", depth + 1)

    walk(_SPEC, "", 0)
    return index


_INDEX = _schema_index()


# Names other tools use for our keys (XTuner configs, LLaMA-Factory, HF TrainingArguments).
_FOREIGN_KEYS = {
    "lr": "optimization.learning_rate",
    "batch_size": "optimization.micro_batch_size",
    "per_device_train_batch_size": "optimization.micro_batch_size",
    "accumulative_counts": "optimization.gradient_accumulation_steps",
    "max_epochs": "optimization.epochs",
    "num_train_epochs": "optimization.epochs",
    "warmup_steps": "optimization.warmup_ratio",
    "max_norm": "optimization.max_grad_norm",
    "bf16": "optimization.precision",
    "fp16": "optimization.precision",
    "cutoff_len": "data.max_length",
    "pack_to_max_length": "data.packing",
    "prompt_template": "data.chat_template",
    "template": "data.chat_template",
    "evaluation_inputs": "evaluation.prompts",
    "evaluation_freq": "evaluation.every_n_steps",
    "save_steps": "checkpoint.every_n_steps",
    "save_total_limit": "checkpoint.keep",
    "lora_r": "method.lora.r",
    "lora_rank": "method.lora.r",
    "rank": "method.lora.r",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target": "method.lora.target_modules",
    "model": "base_model",
    "pretrained_model_name_or_path": "base_model",
    "dataset": "datasets",
}


def _suggest(key: str, keys: list[str], at_top: bool) -> str:
    """' did you mean ...?' for an unknown key, or the list of valid keys."""
    foreign = _FOREIGN_KEYS.get(key.lower())
    if foreign:
        return f"; did you mean {foreign}?"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    if at_top and key in _METHODS:
        return f"; the training method goes under method: (method: {{{key}: ...}})"
    # The key may belong to another section (e.g. `learning_rate` at the top level).
    candidates = difflib.get_close_matches(key, list(_INDEX), n=1, cutoff=0.8)
    if candidates:
        paths = _INDEX[candidates[0]][:3]
        return f"; did you mean {' or '.join(paths)}?"
    return f"; valid keys here: {', '.join(keys)}"


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _generic(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# ---- YAML text -> plain tree with locations ------------------------------------------------
_Where = Callable[[tuple[Any, ...]], str]


def _compose(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], str]]:
    """Parse YAML safely into plain values, recording the line of every key and list item."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidArgument.from_violations(
            SPEC_INVALID,
            [FieldViolation(source, f"{where}not valid YAML: {problem}")],
            summary=f"{source} is not a valid training config",
        ) from None
    constructor = yaml.SafeLoader("")
    lines: dict[tuple[Any, ...], str] = {}
    problems: list[FieldViolation] = []

    def build(node: yaml.Node, path: tuple[Any, ...], depth: int) -> Any:
        if depth > 32:
            problems.append(FieldViolation(_dotted(path), "nested too deeply"))
            return None
        if isinstance(node, yaml.MappingNode):
            constructor.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(build(key_node, path, depth + 1))
                line = f"line {key_node.start_mark.line + 1}"
                if key in out:
                    problems.append(
                        FieldViolation(_dotted((*path, key)), f"{line}: key given twice")
                    )
                lines[(*path, key)] = line
                out[key] = build(value_node, (*path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                lines[(*path, i)] = f"line {item.start_mark.line + 1}"
                items.append(build(item, (*path, i), depth + 1))
            return items
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problems.append(
                FieldViolation(
                    _dotted(path), f"line {node.start_mark.line + 1}: {exc.problem or exc}"
                )
            )
            return None

    tree = build(root, (), 0) if root is not None else None
    if problems:
        raise InvalidArgument.from_violations(
            SPEC_INVALID, problems, summary=f"{source} is not a valid training config"
        )
    return tree, lines


def _where_from(lines: dict[tuple[Any, ...], str]) -> _Where:
    def where(path: tuple[Any, ...]) -> str:
        for n in range(len(path), 0, -1):
            label = lines.get(path[:n])
            if label:
                return label
        return ""

    return where


# ---- plain tree -> TrainingJobSpec ---------------------------------------------------------
class _TreeReader:
    """Fills a proto message from a plain tree, collecting one violation per problem."""

    def __init__(self, where: _Where) -> None:
        self.where = where
        self._found: list[tuple[int, FieldViolation]] = []

    @property
    def violations(self) -> list[FieldViolation]:
        """In the order of the YAML lines they point at."""
        return [v for _, v in sorted(self._found, key=lambda item: item[0])]

    def bad(self, path: tuple[Any, ...], message: str) -> None:
        loc = self.where(path)
        line = int(loc[5:]) if loc.startswith("line ") and loc[5:].isdigit() else 0
        self._found.append(
            (line, FieldViolation(_dotted(path), f"{loc}: {message}" if loc else message))
        )

    def message(self, value: Any, msg: Any, path: tuple[Any, ...]) -> None:
        desc = msg.DESCRIPTOR
        if not isinstance(value, dict):
            self.bad(path, f"must be a mapping of keys, got {_kind(value)}")
            return
        keys = _yaml_keys(desc)
        skip: set[str] = set()
        for oneof in _real_oneofs(desc):
            if desc is _SPEC and oneof.name == "method":
                continue
            present = [f.name for f in oneof.fields if value.get(f.name) is not None]
            for extra in present[1:]:
                self.bad(
                    (*path, extra),
                    f"{present[0]} and {extra} are alternatives ({oneof.name}): set only one",
                )
                skip.add(extra)
        for key, item in value.items():
            p = (*path, key)
            if key not in keys:
                self.bad(p, f"unknown key {key!r}{_suggest(key, keys, desc is _SPEC)}")
            elif key == "method":
                self.method(item, msg, p)
            elif item is not None and key not in skip:
                self.field(item, msg, desc.fields_by_name[key], p)

    def method(self, value: Any, spec: TrainingJobSpec, path: tuple[Any, ...]) -> None:
        if value is None:
            return
        if isinstance(value, str):
            name = value.strip().lower()
            if name in _METHODS:
                getattr(spec, name).SetInParent()
            else:
                close = difflib.get_close_matches(name, _METHODS, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                self.bad(path, f"unknown method {value!r}: one of full, lora, qlora{hint}")
            return
        if not isinstance(value, dict):
            self.bad(path, f"must be a mapping with one of full, lora, qlora, got {_kind(value)}")
            return
        chosen = []
        for key in value:
            if key in _METHODS:
                chosen.append(key)
            else:
                self.bad(
                    (*path, key), f"unknown method {key!r}{_suggest(key, list(_METHODS), False)}"
                )
        if not value:
            self.bad(path, "choose one of full, lora, qlora (e.g. method: {lora: {r: 8}})")
        if len(chosen) > 1:
            self.bad(
                (*path, chosen[1]),
                f"method takes exactly one of full, lora, qlora; got {', '.join(chosen)}",
            )
        elif len(chosen) == 1:
            sub = getattr(spec, chosen[0])
            sub.SetInParent()
            if value[chosen[0]] is not None:
                self.message(value[chosen[0]], sub, (*path, chosen[0]))

    def dataset_source(self, value: Any, msg: DatasetSource, path: tuple[Any, ...]) -> None:
        if isinstance(value, str):
            msg.dataset = value.strip()
        elif isinstance(value, dict):
            self.message(value, msg, path)
        else:
            self.bad(path, f"must be a dataset name or a mapping with dataset:, got {_kind(value)}")
            return
        if not msg.dataset and (not isinstance(value, dict) or "dataset" not in value):
            self.bad((*path, "dataset"), "required: a registry dataset name, NAME or NAME@VERSION")
        elif not msg.dataset:
            self.bad((*path, "dataset"), "must not be empty")

    def field(self, value: Any, msg: Any, fd: FieldDescriptor, path: tuple[Any, ...]) -> None:
        if fd.is_repeated:
            one = str | dict if fd.type == FieldDescriptor.TYPE_MESSAGE else str
            items = [value] if isinstance(value, one) else value
            if not isinstance(items, list):
                self.bad(path, f"must be a list, got {_kind(value)}")
                return
            target = getattr(msg, fd.name)
            for i, item in enumerate(items):
                p = (*path, i)
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    self.dataset_source(item, target.add(), p)
                else:
                    ok, converted = self.scalar(fd, item, p)
                    if ok:
                        target.append(converted)
            return
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            if fd.message_type.full_name == _DATASET_SOURCE:
                self.dataset_source(value, sub, path)
            else:
                self.message(value, sub, path)
            return
        ok, converted = self.scalar(fd, value, path)
        if not ok:
            return
        setattr(msg, fd.name, converted)
        rule = _ZERO_MEANS_DEFAULT.get(_generic(path))
        if rule and converted == 0:
            self.bad(path, rule)

    def scalar(self, fd: FieldDescriptor, value: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
        t = fd.type
        if t == FieldDescriptor.TYPE_BOOL:
            if isinstance(value, bool):
                return True, value
            self.bad(path, f"must be true or false, got {_kind(value)}")
        elif t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            lo, hi = _INT32 if t == FieldDescriptor.TYPE_INT32 else _INT64
            if isinstance(value, int) and not isinstance(value, bool):
                if lo <= value <= hi:
                    return True, value
                self.bad(path, f"{value} is out of range")
            else:
                self.bad(path, f"must be a whole number, got {_kind(value)}")
        elif t == FieldDescriptor.TYPE_DOUBLE:
            number = None
            if isinstance(value, int | float) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):
                # YAML 1.1 reads `2e-4` (no dot) as a string: accept what Python reads as a float.
                try:
                    number = float(value.strip().replace("_", ""))
                except ValueError:
                    number = None
            if number is None:
                self.bad(path, f"must be a number, got {_kind(value)}")
            elif not math.isfinite(number):
                self.bad(path, f"must be a finite number, got {value}")
            else:
                return True, number
        elif t == FieldDescriptor.TYPE_STRING:
            if isinstance(value, str):
                return True, value
            self.bad(path, f"must be a string, got {_kind(value)} (quote it)")
        elif t == FieldDescriptor.TYPE_ENUM:
            return self.enum(fd.enum_type, value, path)
        else:  # pragma: no cover - the schema has no other scalar types
            self.bad(path, f"unsupported field type {t}")
        return False, None

    def enum(self, enum: EnumDescriptor, value: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
        names = _enum_short_names(enum)
        if isinstance(value, str):
            key = value.strip().lower()
            key = _ENUM_ALIASES.get(enum.name, {}).get(key, key)
            if enum.name == "DeepspeedStage" and key.startswith("deepspeed_"):
                key = key[len("deepspeed_") :]  # XTuner spells them deepspeed_zero2...
            prefix = _enum_prefix(enum).lower()
            if key.startswith(prefix):
                key = key[len(prefix) :]  # the full proto name, e.g. PRECISION_BF16
            if key in names:
                return True, names[key]
            close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.bad(path, f"unknown value {value!r}: one of {', '.join(names)}{hint}")
        else:
            self.bad(path, f"must be one of {', '.join(names)}, got {_kind(value)}")
        return False, None


def _tree_to_spec(tree: Any, where: _Where, source: str) -> TrainingJobSpec:
    spec = TrainingJobSpec()
    reader = _TreeReader(where)
    if tree is None:
        reader.bad((), "the config is empty: it needs at least base_model and datasets")
    else:
        reader.message(tree, spec, ())
    if reader.violations:
        raise InvalidArgument.from_violations(
            SPEC_INVALID, reader.violations, summary=f"{source} is not a valid training config"
        )
    return spec


def parse_spec_yaml(text: str, *, source: str = "config") -> TrainingJobSpec:
    """The human form -> the wire form. Schema checks only (keys, types, enum names, explicit
    zeros); ``resolve_spec`` checks values against the model, data and machines.

    Raises InvalidArgument(SPEC_INVALID) listing every problem, each with its dotted path and
    YAML line. ``source`` (e.g. the file name) appears in the summary.
    """
    tree, lines = _compose(text, source)
    return _tree_to_spec(tree, _where_from(lines), source)


# ---- TrainingJobSpec -> plain tree -> YAML -------------------------------------------------
def _scalar_out(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_short_name(fd.enum_type, value)
    return value


def _dataset_tree(src: DatasetSource) -> Any:
    if not src.weight and not src.max_samples:
        return src.dataset
    return _message_tree(src)


def _message_tree(msg: Any) -> dict[str, Any]:
    desc = msg.DESCRIPTOR
    out: dict[str, Any] = {}
    for key in _yaml_keys(desc):
        if key == "method":
            which = msg.WhichOneof("method")
            if which:
                out["method"] = {which: _message_tree(getattr(msg, which))}
            continue
        fd = desc.fields_by_name[key]
        value = getattr(msg, key)
        if fd.is_repeated:
            if len(value):
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    out[key] = [_dataset_tree(v) for v in value]
                else:
                    out[key] = [_scalar_out(fd, v) for v in value]
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if msg.HasField(key):
                is_source = fd.message_type.full_name == _DATASET_SOURCE
                out[key] = _dataset_tree(value) if is_source else _message_tree(value)
        elif fd.has_presence:
            if msg.HasField(key):
                out[key] = _scalar_out(fd, value)
        elif value:
            out[key] = _scalar_out(fd, value)
    return out


def spec_to_yaml(spec: TrainingJobSpec) -> str:
    """The wire form -> the human form; ``parse_spec_yaml`` reads it back to an equal spec."""
    return yaml.safe_dump(
        _message_tree(spec),
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


# ---- --set key=value ------------------------------------------------------------------------
def _split_key(key: str) -> list[Any] | None:
    """``datasets[0].weight`` or ``datasets.0.weight`` -> ['datasets', 0, 'weight']."""
    parts: list[Any] = []
    for piece in key.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", piece)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        if m.group(1):
            parts.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts or None


def apply_overrides(spec: TrainingJobSpec, overrides: list[str]) -> TrainingJobSpec:
    """A new spec with ``KEY=VALUE`` overrides applied (the CLI's ``--set``).

    KEY is a dotted YAML path (``optimization.learning_rate``, ``method.lora.r``,
    ``datasets[1].weight``); VALUE is read as YAML (``16``, ``2e-4``, ``true``, ``[a, b]``); an
    empty VALUE removes the key (back to its default). ``method=full`` switches the method.
    Raises InvalidArgument(SPEC_INVALID) naming each bad key.
    """
    tree = _message_tree(spec)
    labels: dict[tuple[Any, ...], str] = {}
    problems: list[FieldViolation] = []
    for item in overrides:
        label = f"--set {item}"
        key, sep, raw = item.partition("=")
        path = _split_key(key.strip()) if sep else None
        if path is None:
            problems.append(FieldViolation(key.strip() or item, f"{label}: expected KEY=VALUE"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(FieldViolation(_dotted(tuple(path)), f"{label}: bad value: {exc}"))
            continue
        error = _set_in_tree(tree, path, value)
        if error:
            problems.append(FieldViolation(_dotted(tuple(path)), f"{label}: {error}"))
        labels[tuple(path)] = label
    if problems:
        raise InvalidArgument.from_violations(SPEC_INVALID, problems, summary="bad --set")
    return _tree_to_spec(tree, _where_from(labels), "--set")


def _set_in_tree(tree: dict[str, Any], path: list[Any], value: Any) -> str:
    """Put ``value`` at ``path``; an error message, or '' on success."""
    if path[0] == "method" and len(path) >= 2 and isinstance(path[1], str):
        current = tree.get("method")
        if isinstance(current, dict) and current and path[1] not in current:
            have = next(iter(current))
            rest = [str(p) for p in path[2:]]
            if have == "qlora" and path[1] == "lora":
                rest = ["lora", *rest]  # qlora keeps its LoRA settings under qlora.lora
            elif have == "lora" and path[1] == "qlora" and rest[:1] == ["lora"]:
                rest = rest[1:]
            hint = f"method.{have}.{'.'.join(rest)}" if rest else f"method={path[1]}"
            return f"the spec's method is {have}: set {hint}, or --set method={path[1]} first"
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        here = _dotted(tuple(path[: i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list):
                return f"{here}: {_dotted(tuple(path[:i])) or 'the spec'} is not a list"
            if part >= len(node):
                return f"{here}: there are only {len(node)} entries"
            if isinstance(node[part], str):  # dataset shorthand -> mapping form
                node[part] = {"dataset": node[part]}
            node = node[part]
        else:
            if not isinstance(node, dict):
                return f"{here}: the parent is not a section"
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and part == "validation_dataset":
                child = node[part] = {"dataset": child}
            elif not isinstance(child, dict | list):
                return f"{here} is a value, not a section"
            node = child
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return "no such list entry"
        node[last] = value
    elif not isinstance(node, dict):
        return "the parent is not a section"
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return ""


# ---- names ----------------------------------------------------------------------------------
def _qualify_model(name: str, project: str, field: str, bad: list[FieldViolation]) -> str:
    name = name.strip()
    if not name:
        bad.append(FieldViolation(field, "required: the registry name of the model to train"))
        return name
    parts = name.split("/")
    if name.startswith("projects/"):
        ok = len(parts) == 4 and parts[2] == "models"
        ok = ok and all(ID_PATTERN.match(p) for p in (parts[1], parts[3]))
        if not ok:
            bad.append(
                FieldViolation(field, f"{name!r} is not projects/{{project}}/models/{{model}}")
            )
        return name
    if not ID_PATTERN.match(name):
        bad.append(FieldViolation(field, f"{name!r} is not a model name ({ID_RULE})"))
        return name
    return f"projects/{project}/models/{name}"


def _qualify_dataset(name: str, project: str, field: str, bad: list[FieldViolation]) -> str:
    name = name.strip()
    if not name:
        bad.append(FieldViolation(field, "required: a registry dataset name"))
        return name
    if name.startswith("projects/"):
        parts = name.split("/")
        ok = len(parts) in (4, 6) and parts[2] == "datasets"
        ok = ok and (len(parts) == 4 or parts[4] == "versions")
        ok = ok and all(ID_PATTERN.match(p) for p in parts[1::2])
        if not ok:
            bad.append(
                FieldViolation(
                    field,
                    f"{name!r} is not projects/{{project}}/datasets/{{dataset}}"
                    "[/versions/{version}]",
                )
            )
            return name
        return name if len(parts) == 6 else f"{name}/versions/latest"
    dataset, at, version = name.partition("@")
    if not ID_PATTERN.match(dataset) or (at and not ID_PATTERN.match(version)):
        bad.append(FieldViolation(field, f"{name!r} is not NAME or NAME@VERSION ({ID_RULE})"))
        return name
    return f"projects/{project}/datasets/{dataset}/versions/{version or 'latest'}"


def qualify_names(spec: TrainingJobSpec, project: str) -> TrainingJobSpec:
    """A new spec whose model and dataset names are resource names in ``project``.

    ``tiny`` -> ``projects/{project}/models/tiny``; ``assistant@abc123`` ->
    ``projects/{project}/datasets/assistant/versions/abc123``; ``assistant`` (or a dataset
    resource name without a version) -> ``.../versions/latest``. Names that are already
    resource names are kept. Raises InvalidArgument(SPEC_INVALID) for malformed names.
    """
    if not ID_PATTERN.match(project or ""):
        raise InvalidArgument.from_violations(
            "INVALID_ID", [FieldViolation("project", f"{project!r} is not a valid id: {ID_RULE}")]
        )
    out = TrainingJobSpec()
    out.CopyFrom(spec)
    bad: list[FieldViolation] = []
    out.base_model = _qualify_model(out.base_model, project, "base_model", bad)
    if not out.datasets:
        bad.append(FieldViolation("datasets", "at least one dataset is required"))
    for i, src in enumerate(out.datasets):
        src.dataset = _qualify_dataset(src.dataset, project, f"datasets[{i}].dataset", bad)
    if out.data.HasField("validation_dataset"):
        v = out.data.validation_dataset
        v.dataset = _qualify_dataset(v.dataset, project, "data.validation_dataset.dataset", bad)
    if bad:
        raise InvalidArgument.from_violations(SPEC_INVALID, bad, summary="invalid names")
    return out


# ---- templates ------------------------------------------------------------------------------
def validate_named_template(name: str) -> str:
    """The canonical name of a named chat template (``qwen_chat`` -> ``chatml``).

    Raises InvalidArgument(SPEC_INVALID) on field ``data.chat_template`` for unknown names.
    """
    try:
        return get_chat_template(name).name
    except InvalidArgument:
        known = chat_template_names()
        close = difflib.get_close_matches(name.strip().lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InvalidArgument.from_violations(
            SPEC_INVALID,
            [
                FieldViolation(
                    "data.chat_template",
                    f"unknown chat template {name!r}: {hint}known: {', '.join(known)}",
                )
            ],
        ) from None


# ---- counting -------------------------------------------------------------------------------
def weighted_sample_counts(spec: TrainingJobSpec, datasets: list[DatasetFacts]) -> list[int]:
    """Samples each dataset contributes to one epoch of the mix (approximate).

    Per dataset: take at most ``max_samples`` records, hold out ``data.validation_split`` of
    them (rounded down), then multiply by ``weight`` (unset: 1) and round half up. The worker
    applies the same rule; these counts drive the progress/ETA estimate and the check that
    every dataset contributes at least one sample.
    """
    split = spec.data.validation_split if spec.data.HasField("validation_split") else 0.0
    split = split if math.isfinite(split) and 0 < split < 1 else 0.0
    counts = []
    for src, facts in zip(spec.datasets, datasets, strict=True):
        n = max(0, facts.record_count)
        if src.max_samples > 0:
            n = min(n, src.max_samples)
        n -= math.floor(n * split)
        weight = src.weight or DEFAULT_DATASET_WEIGHT
        counts.append(math.floor(n * weight + 0.5) if math.isfinite(weight) and weight > 0 else 0)
    return counts


def _world_size(spec: TrainingJobSpec) -> int:
    return max(1, spec.resources.gpus_per_node) * max(1, spec.resources.nodes)


def total_steps(spec: TrainingJobSpec, sample_count: int) -> int:
    """Optimizer steps of the run, for progress and ETA before the data is tokenised.

    ``max_steps`` when set; otherwise ceil(samples / (micro_batch * grad_accum * GPUs)) *
    epochs. ``sample_count`` is the weighted mix (``sum(weighted_sample_counts(...))``). With
    packing a row holds several samples, so this over-estimates: the worker reports the exact
    number once the data is tokenised and packed. Unset fields count with their defaults.
    """
    opt = spec.optimization
    if opt.WhichOneof("duration") == "max_steps":
        return max(0, opt.max_steps)
    if sample_count <= 0:
        return 0
    epochs = opt.epochs if opt.WhichOneof("duration") == "epochs" else DEFAULT_EPOCHS
    batch = (opt.micro_batch_size or DEFAULT_MICRO_BATCH_SIZE) * (
        opt.gradient_accumulation_steps or DEFAULT_GRADIENT_ACCUMULATION_STEPS
    )
    return math.ceil(sample_count / (max(1, batch) * _world_size(spec))) * max(0, epochs)


# ---- resolution and validation --------------------------------------------------------------
_TASK_FORMAT = {TrainingTask.TRAINING_TASK_SFT: "chat", TrainingTask.TRAINING_TASK_PRETRAIN: "text"}
_FORMAT_WORDS = {"chat": "conversations", "text": "raw text"}


def _precision_name(p: int) -> str:
    return str(_enum_short_name(Precision.DESCRIPTOR, p))


class _Checks:
    def __init__(self) -> None:
        self.invalid: list[FieldViolation] = []
        self.missing: list[FieldViolation] = []

    def bad(self, field: str, message: str) -> None:
        self.invalid.append(FieldViolation(field, message))

    def need(self, field: str, message: str) -> None:
        self.missing.append(FieldViolation(field, message))

    def unit_interval(self, field: str, value: float, *, upper_open: bool = True) -> None:
        if not math.isfinite(value) or value < 0 or (value >= 1 if upper_open else value > 1):
            self.bad(field, f"must be in [0, 1{')' if upper_open else ']'}, got {value:g}")

    def non_negative(self, field: str, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            self.bad(field, f"must be >= 0, got {value:g}")


def resolve_spec(
    spec: TrainingJobSpec,
    *,
    model: ModelFacts,
    datasets: list[DatasetFacts],
    validation: DatasetFacts | None,
    capabilities: Capabilities,
    seed: int,
) -> TrainingJobSpec:
    """A new, fully resolved spec: every default filled, dataset versions pinned, and every
    value checked against the model, the data and the machines that will run the job.

    ``datasets[i]`` are the facts of ``spec.datasets[i]`` (same order); ``validation`` those of
    ``data.validation_dataset`` (None when it is unset); ``seed`` is used when the spec has none.

    Raises, in this order:
    - InvalidArgument(SPEC_INVALID) with every bad value (field paths as in the YAML form);
    - FailedPrecondition(CHAT_TEMPLATE_MISSING) for SFT on a model whose tokenizer has no chat
      template when ``data.chat_template`` names none;
    - FailedPrecondition(CAPABILITY_MISSING) when the machines cannot run what is asked (QLoRA
      without bitsandbytes, DeepSpeed without deepspeed or CUDA, fp16 on CPU, more GPUs than
      there are...), with one violation per field.
    """
    if len(datasets) != len(spec.datasets):
        raise ValueError(f"{len(spec.datasets)} datasets in the spec but {len(datasets)} facts")
    if spec.data.HasField("validation_dataset") != (validation is not None):
        raise ValueError("validation facts must be given exactly when data.validation_dataset is")
    caps = capabilities
    out = TrainingJobSpec()
    out.CopyFrom(spec)
    if out.WhichOneof("method") is None:
        out.lora.SetInParent()
    c = _Checks()
    _resolve_sources(out, model, datasets, c)
    _resolve_task(out, datasets, validation, c)
    _resolve_resources(out.resources, caps, c)  # first: the world size drives other defaults
    _resolve_optimization(out, caps, seed, c)  # before the qlora compute dtype defaulting to it
    _resolve_method(out, caps, c)
    _resolve_deepspeed(out, caps, c)
    template_ok = _resolve_data(out.data, model, validation, c)
    if not c.invalid:  # weights that round a dataset away make no sense
        counts = weighted_sample_counts(out, datasets)
        for i, (src, n) in enumerate(zip(out.datasets, counts, strict=True)):
            if n < 1:
                c.bad(
                    f"datasets[{i}].weight",
                    f"weight {src.weight:g} of {datasets[i].record_count} record(s) leaves no "
                    "sample: raise the weight or drop the dataset",
                )
    _resolve_checkpoint_and_evaluation(out, model, c)
    ev, data = out.evaluation, out.data

    # -- verdict
    if c.invalid:
        raise InvalidArgument.from_violations(
            SPEC_INVALID, c.invalid, summary="invalid training spec"
        )
    needs_template = out.task == TrainingTask.TRAINING_TASK_SFT or bool(ev.prompts)
    if needs_template and template_ok and not model.has_chat_template and not data.chat_template:
        known = ", ".join(chat_template_names())
        message = (
            f"the tokenizer of {model.name} has no chat template: name one in "
            f"data.chat_template ({known})"
        )
        raise FailedPrecondition(
            message=message,
            reason=CHAT_TEMPLATE_MISSING,
            metadata={"known_templates": known, "model": model.name},
            violations=(FieldViolation("data.chat_template", message),),
        )
    if c.missing:
        raise FailedPrecondition(
            message="the machines that run jobs cannot run this spec: "
            + "; ".join(f"{v.field}: {v.description}" for v in c.missing),
            reason=CAPABILITY_MISSING,
            violations=tuple(c.missing),
        )
    return out


def _resolve_sources(
    out: TrainingJobSpec, model: ModelFacts, datasets: list[DatasetFacts], c: _Checks
) -> None:
    if not out.base_model:
        c.bad("base_model", "required: the registry name of the model to train")
    else:
        out.base_model = model.name
    if not out.datasets:
        c.bad("datasets", "at least one dataset is required")
    for i, (src, facts) in enumerate(zip(out.datasets, datasets, strict=True)):
        src.dataset = facts.name  # the version pinned now, whatever `latest` becomes later
        if src.weight == 0:
            src.weight = DEFAULT_DATASET_WEIGHT
        w = src.weight
        if not math.isfinite(w) or w < 0:
            c.bad(f"datasets[{i}].weight", f"must be a finite number > 0, got {w:g}")
        elif w > MAX_DATASET_WEIGHT:
            c.bad(
                f"datasets[{i}].weight",
                f"{w:g} is suspiciously large (at most {MAX_DATASET_WEIGHT:g}): every record "
                f"would be seen {w:g} times per epoch; train longer with epochs or max_steps",
            )
        if src.max_samples < 0:
            c.bad(f"datasets[{i}].max_samples", "must be >= 0 (0: all records)")
        if facts.record_count <= 0:
            c.bad(f"datasets[{i}]", f"{facts.name} has no records")


def _resolve_resources(res: Any, caps: Capabilities, c: _Checks) -> None:
    if res.gpus_per_node < 0:
        c.bad("resources.gpus_per_node", f"must be >= 0, got {res.gpus_per_node}")
    elif res.gpus_per_node == 0:
        res.gpus_per_node = 1 if caps.cuda else 0
    elif not caps.cuda:
        c.need(
            "resources.gpus_per_node",
            f"{res.gpus_per_node} GPU(s) per node asked, but the machines that run jobs have "
            "no CUDA GPU (omit the key to train on CPU)",
        )
    elif res.gpus_per_node > caps.gpus:
        c.need(
            "resources.gpus_per_node",
            f"{res.gpus_per_node} GPUs per node asked, but only {caps.gpus} are available",
        )
    if res.nodes < 0:
        c.bad("resources.nodes", f"must be >= 1, got {res.nodes}")
    elif res.nodes == 0:
        res.nodes = 1


def _resolve_optimization(out: TrainingJobSpec, caps: Capabilities, seed: int, c: _Checks) -> None:
    opt = out.optimization
    duration = opt.WhichOneof("duration")
    if duration is None:
        opt.epochs = DEFAULT_EPOCHS
    elif duration == "epochs" and opt.epochs < 1:
        c.bad("optimization.epochs", f"must be >= 1, got {opt.epochs}")
    elif duration == "max_steps" and opt.max_steps < 1:
        c.bad("optimization.max_steps", f"must be >= 1, got {opt.max_steps}")
    for name, default in (
        ("micro_batch_size", DEFAULT_MICRO_BATCH_SIZE),
        ("gradient_accumulation_steps", DEFAULT_GRADIENT_ACCUMULATION_STEPS),
    ):
        value = getattr(opt, name)
        if value < 0:
            c.bad(f"optimization.{name}", f"must be >= 1, got {value}")
        elif value == 0:
            setattr(opt, name, default)
    lr = opt.learning_rate
    if not math.isfinite(lr) or lr < 0:
        c.bad("optimization.learning_rate", f"must be > 0, got {lr:g}")
    elif lr == 0:
        full = out.WhichOneof("method") == "full"
        opt.learning_rate = DEFAULT_LEARNING_RATE_FULL if full else DEFAULT_LEARNING_RATE_ADAPTER
    elif lr >= 1:
        c.bad("optimization.learning_rate", f"{lr:g} is far too large: must be < 1")
    for name, default in (
        ("warmup_ratio", DEFAULT_WARMUP_RATIO),
        ("adam_beta1", DEFAULT_ADAM_BETA1),
        ("adam_beta2", DEFAULT_ADAM_BETA2),
        ("weight_decay", DEFAULT_WEIGHT_DECAY),
        ("max_grad_norm", DEFAULT_MAX_GRAD_NORM),
    ):
        if not opt.HasField(name):
            setattr(opt, name, default)
        elif name in ("weight_decay", "max_grad_norm"):
            c.non_negative(f"optimization.{name}", getattr(opt, name))
        else:
            c.unit_interval(f"optimization.{name}", getattr(opt, name))
    if opt.lr_scheduler == LrScheduler.LR_SCHEDULER_UNSPECIFIED:
        opt.lr_scheduler = DEFAULT_LR_SCHEDULER
    if opt.precision == Precision.PRECISION_UNSPECIFIED:
        if not caps.cuda:
            opt.precision = Precision.PRECISION_FP32
        else:
            opt.precision = Precision.PRECISION_BF16 if caps.bf16 else Precision.PRECISION_FP16
    _check_precision("optimization.precision", opt.precision, caps, c)
    if not opt.HasField("gradient_checkpointing"):
        opt.gradient_checkpointing = DEFAULT_GRADIENT_CHECKPOINTING
    if not opt.HasField("seed"):
        opt.seed = seed
    if not 0 <= opt.seed <= MAX_SEED:
        c.bad("optimization.seed", f"must be in [0, 2**32 - 1], got {opt.seed}")


def _resolve_method(out: TrainingJobSpec, caps: Capabilities, c: _Checks) -> None:
    method = out.WhichOneof("method")
    if method == "lora":
        _resolve_lora(out.lora, "method.lora", c)
    elif method == "qlora":
        q = out.qlora
        q.lora.SetInParent()
        _resolve_lora(q.lora, "method.qlora.lora", c)
        if q.quant_type == QuantType.QUANT_TYPE_UNSPECIFIED:
            q.quant_type = DEFAULT_QUANT_TYPE
        if not q.HasField("double_quant"):
            q.double_quant = DEFAULT_DOUBLE_QUANT
        if q.compute_dtype == Precision.PRECISION_UNSPECIFIED:
            q.compute_dtype = out.optimization.precision
        else:
            _check_precision("method.qlora.compute_dtype", q.compute_dtype, caps, c)
        if not caps.bitsandbytes:
            c.need(
                "method.qlora",
                "QLoRA needs bitsandbytes, which the machines that run jobs do not have "
                "(use method: lora, or install bitsandbytes in the worker image)",
            )


def _resolve_deepspeed(out: TrainingJobSpec, caps: Capabilities, c: _Checks) -> None:
    if out.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_UNSPECIFIED:
        # training_job.proto: NONE on one GPU, ZERO2 on several (where DeepSpeed exists;
        # plain DDP otherwise).
        several = _world_size(out) > 1 and caps.cuda and caps.deepspeed
        out.deepspeed = (
            DeepspeedStage.DEEPSPEED_STAGE_ZERO2 if several else DeepspeedStage.DEEPSPEED_STAGE_NONE
        )
    elif out.deepspeed != DeepspeedStage.DEEPSPEED_STAGE_NONE:
        stage = _enum_short_name(DeepspeedStage.DESCRIPTOR, out.deepspeed)
        if not caps.deepspeed:
            c.need(
                "deepspeed",
                f"{stage} needs DeepSpeed, which the machines that run jobs do not have "
                "(use deepspeed: none)",
            )
        elif not caps.cuda:
            c.need("deepspeed", f"{stage} needs CUDA GPUs (use deepspeed: none on CPU)")


def _resolve_data(
    data: Any, model: ModelFacts, validation: DatasetFacts | None, c: _Checks
) -> bool:
    """Fills ``data``; False when a named chat template is unknown."""
    ctx = model.max_context_length
    if data.max_length < 0:
        c.bad("data.max_length", f"must be >= 1, got {data.max_length}")
    elif data.max_length == 0:
        data.max_length = min(DEFAULT_MAX_LENGTH, ctx) if ctx > 0 else DEFAULT_MAX_LENGTH
    elif ctx > 0 and data.max_length > ctx:
        c.bad("data.max_length", f"{data.max_length} exceeds the model's context ({ctx})")
    if not data.HasField("packing"):
        data.packing = DEFAULT_PACKING
    if not data.HasField("shuffle"):
        data.shuffle = DEFAULT_SHUFFLE
    template_ok = True
    if data.chat_template.strip():
        try:
            data.chat_template = validate_named_template(data.chat_template)
        except InvalidArgument as exc:
            c.invalid.extend(exc.violations)
            template_ok = False
    else:
        data.chat_template = ""
    kind = data.WhichOneof("validation")
    if kind == "validation_split":
        split = data.validation_split
        if split == 0:
            data.ClearField("validation_split")  # 0: no validation
        elif not math.isfinite(split) or not 0 < split <= 0.5:
            c.bad("data.validation_split", f"must be in (0, 0.5], got {split:g}")
    elif kind == "validation_dataset" and validation is not None:
        v = data.validation_dataset
        v.dataset = validation.name
        v.weight = 0  # ignored for validation
        if v.max_samples < 0:
            c.bad("data.validation_dataset.max_samples", "must be >= 0 (0: all records)")
        if validation.record_count <= 0:
            c.bad("data.validation_dataset", f"{validation.name} has no records")
    return template_ok


def _resolve_checkpoint_and_evaluation(out: TrainingJobSpec, model: ModelFacts, c: _Checks) -> None:
    ck = out.checkpoint
    if ck.every_n_steps < 0:
        c.bad("checkpoint.every_n_steps", f"must be >= 1, got {ck.every_n_steps}")
    elif ck.every_n_steps == 0:
        ck.every_n_steps = DEFAULT_CHECKPOINT_EVERY_N_STEPS
    if ck.keep < -1:
        c.bad("checkpoint.keep", f"must be >= 1, or -1 to keep all; got {ck.keep}")
    elif ck.keep == 0:
        ck.keep = DEFAULT_CHECKPOINT_KEEP
    ev = out.evaluation
    ctx = model.max_context_length
    if ev.every_n_steps < 0:
        c.bad("evaluation.every_n_steps", f"must be >= 1, got {ev.every_n_steps}")
    if ev.max_new_tokens < 0:
        c.bad("evaluation.max_new_tokens", f"must be >= 1, got {ev.max_new_tokens}")
    elif ctx > 0 and ev.max_new_tokens > ctx:
        c.bad(
            "evaluation.max_new_tokens", f"{ev.max_new_tokens} exceeds the model's context ({ctx})"
        )
    for i, prompt in enumerate(ev.prompts):
        if not prompt.strip():
            c.bad(f"evaluation.prompts[{i}]", "must not be empty")
    if ev.prompts:
        if ev.every_n_steps == 0:
            ev.every_n_steps = ck.every_n_steps
        if ev.max_new_tokens == 0:
            ev.max_new_tokens = DEFAULT_EVAL_MAX_NEW_TOKENS
        if not ev.system:
            ev.system = out.data.system_prompt


def _resolve_task(
    out: TrainingJobSpec,
    datasets: list[DatasetFacts],
    validation: DatasetFacts | None,
    c: _Checks,
) -> None:
    for facts in [*datasets, *([validation] if validation else [])]:
        if facts.task not in _FORMAT_WORDS:
            raise ValueError(f"dataset facts for {facts.name}: unknown task {facts.task!r}")
    if out.task == TrainingTask.TRAINING_TASK_UNSPECIFIED:
        kinds = {d.task for d in datasets}
        if kinds == {"text"}:
            out.task = TrainingTask.TRAINING_TASK_PRETRAIN
        elif len(kinds) > 1:
            chat = ", ".join(f"datasets[{i}]" for i, d in enumerate(datasets) if d.task == "chat")
            text = ", ".join(f"datasets[{i}]" for i, d in enumerate(datasets) if d.task == "text")
            c.bad(
                "task",
                f"the datasets mix conversations ({chat}) and raw text ({text}): "
                "set task: sft or task: pretrain and drop the datasets that do not fit",
            )
            return
        else:
            out.task = TrainingTask.TRAINING_TASK_SFT
    expected = _TASK_FORMAT.get(out.task)
    if expected is None:
        c.bad("task", f"unknown task {out.task}")
        return
    task = _enum_short_name(TrainingTask.DESCRIPTOR, out.task)
    other = "pretrain" if expected == "chat" else "sft"
    sources = [(f"datasets[{i}]", d) for i, d in enumerate(datasets)]
    if validation is not None:
        sources.append(("data.validation_dataset", validation))
    for field, facts in sources:
        if facts.task != expected:
            c.bad(
                field,
                f"{TASK_MISMATCH}: {facts.name} holds {_FORMAT_WORDS[facts.task]}, "
                f"which cannot train task {task} (use task: {other}, or another dataset)",
            )


def _resolve_lora(lora: Any, prefix: str, c: _Checks) -> None:
    if lora.r < 0:
        c.bad(f"{prefix}.r", f"must be >= 1, got {lora.r}")
    elif lora.r == 0:
        lora.r = DEFAULT_LORA_R
    if lora.alpha < 0:
        c.bad(f"{prefix}.alpha", f"must be >= 1, got {lora.alpha}")
    elif lora.alpha == 0 and lora.r > 0:
        lora.alpha = 2 * lora.r
    if not lora.HasField("dropout"):
        lora.dropout = DEFAULT_LORA_DROPOUT
    else:
        c.unit_interval(f"{prefix}.dropout", lora.dropout)
    if not lora.target_modules:
        lora.target_modules.extend(DEFAULT_TARGET_MODULES)
        return
    modules = [m.strip() for m in lora.target_modules]
    for i, m in enumerate(modules):
        if not _MODULE_NAME.match(m):
            c.bad(f"{prefix}.target_modules[{i}]", f"{m!r} is not a module name")
    if "all-linear" in modules and len(modules) > 1:
        c.bad(
            f"{prefix}.target_modules", "all-linear already adapts every linear layer: use it alone"
        )
    del lora.target_modules[:]
    lora.target_modules.extend(modules)


def _check_precision(field: str, precision: int, caps: Capabilities, c: _Checks) -> None:
    name = _precision_name(precision)
    if precision == Precision.PRECISION_FP16 and not caps.cuda:
        c.need(field, "fp16 mixed precision needs a CUDA GPU: use fp32 (or bf16) on CPU")
    elif precision == Precision.PRECISION_BF16 and caps.cuda and not caps.bf16:
        c.need(field, "these GPUs do not support bf16: use fp16 or fp32")
    elif precision not in (
        Precision.PRECISION_BF16,
        Precision.PRECISION_FP16,
        Precision.PRECISION_FP32,
    ):
        c.bad(field, f"unknown precision {name}")

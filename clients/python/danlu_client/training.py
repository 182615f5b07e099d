"""The training part of the SDK: jobs, their events and checkpoints, the built-in configs.

    with Client() as danlu:
        job = danlu.training.create_job(Path("lora.yaml").read_text(), overrides=["data.max_length=512"])
        for event in danlu.training.watch(job.name):
            ...

A YAML training config is the YAML form of ``TrainingJobSpec``: keys are the proto field names,
enums take their lower-case short names (``precision: bf16``, ``deepspeed: zero2``), a oneof whose
members are all messages is a tagged choice under the oneof's name (``method: {lora: {r: 16}}``,
``method: full``; other oneofs are written by member: ``epochs: 3``), and a plain string stands
for a message whose first field is a string (``datasets: [assistant]`` is
``datasets: [{dataset: assistant}]``). This is the shape of the training service's own parser
(danlu_training.core.spec), derived here from the descriptors. The SDK only converts that shape
to the wire form, naming each unknown key or mistyped value; the service validates and resolves
the spec (defaults, ranges, the model and datasets) and answers with every bad field.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
import time
from collections.abc import Iterable, Iterator

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from danlu.common.v1 import common_pb2
from danlu.training.v1 import (
    checkpoint_pb2,
    training_event_pb2,
    training_job_pb2,
    training_service_pb2_grpc,
)
from danlu.training.v1 import training_service_pb2 as pb
from danlu_client.errors import FieldViolation, InvalidArgumentError, from_rpc_error
from danlu_client.streams import resumable_events

TrainingJobSpec = training_job_pb2.TrainingJobSpec
TrainingJob = training_job_pb2.TrainingJob
TrainingEvent = training_event_pb2.TrainingEvent
Checkpoint = checkpoint_pb2.Checkpoint
TrainingConfig = training_job_pb2.TrainingConfig

SPEC_INVALID = "SPEC_INVALID"
TERMINAL_STATES = frozenset(
    {
        common_pb2.JOB_STATE_SUCCEEDED,
        common_pb2.JOB_STATE_FAILED,
        common_pb2.JOB_STATE_CANCELLED,
    }
)
# Codes on which `watch` reconnects: the service restarted or the network dropped.


def _mapped(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    return wrapper


# -- enums by short name ---------------------------------------------------------------------


def _enum_prefix(enum: EnumDescriptor) -> str:
    """``DeepspeedStage`` -> ``DEEPSPEED_STAGE_`` (the prefix every value carries)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_short_names(enum: EnumDescriptor) -> list[str]:
    """The lower-case short names of an enum's values, UNSPECIFIED left out."""
    prefix = _enum_prefix(enum)
    return [
        v.name.removeprefix(prefix).lower()
        for v in enum.values
        if not v.name.endswith("_UNSPECIFIED")
    ]


def enum_value(enum: EnumDescriptor, value: str | int) -> int:
    """An enum number from its full name, its short name (any case, ``-`` for ``_``, leading
    words of the type name optional: ``zero2``, ``deepspeed_zero2``) or its number."""
    if isinstance(value, int):
        return value
    key = str(value).strip().upper().replace("-", "_")
    prefix = _enum_prefix(enum)
    words = prefix.rstrip("_").split("_")
    candidates = [key, prefix + key]
    for n in range(1, len(words)):
        lead = "_".join(words[:n]) + "_"
        if key.startswith(lead):
            candidates.append(prefix + key[len(lead) :])
    for candidate in candidates:
        if candidate in enum.values_by_name:
            return enum.values_by_name[candidate].number
    names = enum_short_names(enum)
    close = difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"unknown value {value!r}: one of {', '.join(names)}{hint}")


def enum_short_name(enum: EnumDescriptor, number: int) -> str:
    """``PRECISION_BF16`` -> ``bf16`` (the number itself when unknown)."""
    value = enum.values_by_number.get(number)
    return value.name.removeprefix(_enum_prefix(enum)).lower() if value else str(number)


def state_name(state: int) -> str:
    """``JOB_STATE_RUNNING`` -> ``RUNNING``."""
    return enum_short_name(common_pb2.JobState.DESCRIPTOR, state).upper()


JOB_STATES = enum_short_names(common_pb2.JobState.DESCRIPTOR)
DEEPSPEED_STAGES = enum_short_names(training_job_pb2.DeepspeedStage.DESCRIPTOR)
EVENT_TYPES = enum_short_names(training_event_pb2.TrainingEventType.DESCRIPTOR)


# -- YAML <-> TrainingJobSpec ----------------------------------------------------------------


def _spec_error(violations: list[FieldViolation]) -> InvalidArgumentError:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return InvalidArgumentError(
        "INVALID_ARGUMENT",
        f"invalid training spec: {first.field}: {first.description}{more}",
        SPEC_INVALID,
        violations=violations,
    )


def _string_shorthand(message: Descriptor) -> FieldDescriptor | None:
    """The field a plain string fills: field 1 when it is a singular string."""
    first = message.fields_by_number.get(1)
    if first is not None and first.type == FieldDescriptor.TYPE_STRING and not first.is_repeated:
        return first
    return None


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_well_known(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name.startswith(
        "google.protobuf."
    )


def _real_oneof(field: FieldDescriptor):
    """The field's oneof, unless it is the synthetic one of a proto3 ``optional`` field."""
    oneof = field.containing_oneof
    if oneof is None or (len(oneof.fields) == 1 and oneof.name == f"_{field.name}"):
        return None
    return oneof


def _oneofs(desc: Descriptor) -> dict:
    return {
        o.name: o
        for o in desc.oneofs
        if not (len(o.fields) == 1 and o.name == f"_{o.fields[0].name}")
    }


def _tagged_oneofs(desc: Descriptor) -> dict:
    """Oneofs whose members are all messages: YAML writes them as a tagged choice."""
    return {name: o for name, o in _oneofs(desc).items() if all(f.message_type for f in o.fields)}


def _tagged(field: FieldDescriptor) -> bool:
    oneof = _real_oneof(field)
    return oneof is not None and oneof.name in _tagged_oneofs(field.containing_type)


def _yaml_keys(desc: Descriptor) -> list[str]:
    """The keys of ``desc`` in the YAML shape: a oneof of messages by its name (``method``)."""
    keys: list[str] = []
    for field in desc.fields:
        if _tagged(field):
            if _real_oneof(field).name not in keys:
                keys.append(_real_oneof(field).name)
        else:
            keys.append(field.name)
    return keys


def _unknown_key(desc: Descriptor, key: str) -> str:
    """Why ``key`` is not a field of ``desc``, with a suggestion when one is close."""
    known = _yaml_keys(desc)
    close = difflib.get_close_matches(key, known, n=1)
    where = close[0] if close else _find_field(desc, key, set())
    if where:
        return f"unknown key {key!r}; did you mean {where}?"
    return f"unknown key {key!r}; valid keys here: {', '.join(known)}"


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping"


def _scalar_problem(field: FieldDescriptor, value) -> str:
    """What is wrong with ``value`` for a scalar field ('' when its type fits)."""
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL and not isinstance(value, bool):
        return f"must be true or false, got {_kind(value)}"
    if field.cpp_type in (
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    ) and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be a whole number, got {_kind(value)}"
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads `2e-4` (no dot) as a string
            try:
                number = float(value.strip().replace("_", ""))
            except ValueError:
                number = None
        if number is None:
            return f"must be a number, got {_kind(value)}"
        if not math.isfinite(number):
            return f"must be a finite number, got {value}"
    if t == FieldDescriptor.TYPE_STRING and not isinstance(value, str):
        return f"must be a string, got {_kind(value)} (quote it)"
    return ""


def _find_field(desc: Descriptor, key: str, seen: set) -> str:
    """The dotted path of a field named ``key`` somewhere below ``desc`` ('' if none)."""
    seen.add(desc.full_name)
    for field in desc.fields:
        sub = field.message_type
        if sub is None or sub.full_name in seen or sub.full_name.startswith("google."):
            continue
        if key in sub.fields_by_name:
            return f"{field.name}.{key}"
        found = _find_field(sub, key, seen)
        if found:
            return f"{field.name}.{found}"
    return ""


def _clean_parse_error(err: json_format.ParseError) -> str:
    text = str(err)
    text = re.sub(r"^Failed to parse \w+ field: ", "", text)
    return re.sub(r" at [\w.\[\]]+\.?$", "", text)


class _SpecBuilder:
    """Fills a message from a YAML mapping, walking the message descriptor."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(path, description))

    def fill(self, message: Message, data, path: str) -> None:
        desc = message.DESCRIPTOR
        if not isinstance(data, dict):
            shorthand = _string_shorthand(desc)
            expected = f"a {shorthand.name} string or " if shorthand is not None else ""
            self.bad(path, f"must be {expected}a mapping of keys, got {_kind(data)}")
            return
        chosen: dict[str, str] = {}  # oneof name -> member set
        for key, value in data.items():
            key_path = f"{path}.{key}" if path else str(key)
            field = desc.fields_by_name.get(key) if isinstance(key, str) else None
            if field is not None and _tagged(field):
                oneof = _real_oneof(field)
                self.bad(
                    key_path,
                    f"unknown key {key!r}; a {oneof.name} goes under {oneof.name}: "
                    f"({oneof.name}: {{{key}: ...}})",
                )
                continue
            if field is None and isinstance(key, str) and key in _tagged_oneofs(desc):
                picked = self.tagged_choice(_tagged_oneofs(desc)[key], value, key_path)
                if picked is None:
                    continue
                member, value = picked
                field, key_path = desc.fields_by_name[member], f"{key_path}.{member}"
            if field is None:
                self.bad(key_path, _unknown_key(desc, str(key)))
                continue
            oneof = _real_oneof(field)
            if oneof is not None and value is not None:
                if oneof.name in chosen and chosen[oneof.name] != field.name:
                    self.bad(
                        key_path,
                        f"{chosen[oneof.name]} and {field.name} are alternatives "
                        f"({oneof.name}): set only one",
                    )
                    continue
                chosen[oneof.name] = field.name
            self.set_field(message, field, value, key_path)

    def tagged_choice(self, oneof, value, path: str):
        """``method: {lora: {...}}`` or ``method: lora`` -> ('lora', {...}); None if bad/empty."""
        members = [f.name for f in oneof.fields]
        choices = ", ".join(members)
        if value is None:
            return None
        if isinstance(value, str):
            if value.strip().lower() in members:
                return value.strip().lower(), None
            close = difflib.get_close_matches(value.strip().lower(), members, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.bad(path, f"unknown {oneof.name} {value!r}: one of {choices}{hint}")
            return None
        if not isinstance(value, dict):
            self.bad(path, f"must be a mapping with one of {choices}, got {_kind(value)}")
            return None
        if not value:
            self.bad(path, f"choose one of {choices}")
            return None
        chosen = [k for k in value if k in members]
        for k in value:
            if k not in members:
                close = difflib.get_close_matches(str(k), members, n=1)
                hint = f"; did you mean {close[0]}?" if close else f": one of {choices}"
                self.bad(f"{path}.{k}", f"unknown {oneof.name} {k!r}{hint}")
        if len(chosen) > 1:
            self.bad(
                f"{path}.{chosen[1]}",
                f"{oneof.name} takes exactly one of {choices}; got {', '.join(chosen)}",
            )
            return None
        return (chosen[0], value[chosen[0]]) if chosen else None

    def set_field(self, message: Message, field: FieldDescriptor, value, path: str) -> None:
        repeated = field.is_repeated
        if value is None:  # `full:` selects an empty message; a bare scalar key stays unset
            if field.message_type is not None and not repeated:
                getattr(message, field.name).SetInParent()
            return
        if _is_map(field) or _is_well_known(field):
            self.parse_json(message, field, value, path)
        elif field.message_type is not None:
            shorthand = _string_shorthand(field.message_type)
            if repeated:
                items = value if isinstance(value, list) else [value]
                container = getattr(message, field.name)
                del container[:]
                for i, item in enumerate(items):
                    if isinstance(item, str) and shorthand is not None:
                        item = {shorthand.name: item}
                    self.fill(container.add(), item, f"{path}[{i}]")
            else:
                if isinstance(value, str) and shorthand is not None:
                    value = {shorthand.name: value}
                sub = getattr(message, field.name)
                sub.SetInParent()
                self.fill(sub, value, path)
        elif field.enum_type is not None:
            items = value if repeated and isinstance(value, list) else [value]
            numbers = []
            for item in items:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    self.bad(
                        path, f"expected one of: {', '.join(enum_short_names(field.enum_type))}"
                    )
                    return
                try:
                    numbers.append(enum_value(field.enum_type, item))
                except ValueError as e:
                    self.bad(path, str(e))
                    return
            self.parse_json(message, field, numbers if repeated else numbers[0], path)
        else:
            items = value if repeated and isinstance(value, list) else [value]
            problems = [
                (f"{path}[{i}]" if repeated else path, _scalar_problem(field, item))
                for i, item in enumerate(items)
            ]
            problems = [(p, d) for p, d in problems if d]
            for p, d in problems:
                self.bad(p, d)
            if not problems:
                self.parse_json(message, field, items if repeated else value, path)

    def parse_json(self, message: Message, field: FieldDescriptor, value, path: str) -> None:
        try:
            json_format.ParseDict({field.name: value}, message)
        except json_format.ParseError as e:
            self.bad(path, _clean_parse_error(e))


def spec_from_dict(data: dict, *, path: str = "") -> TrainingJobSpec:
    """Convert the YAML shape of a spec into ``TrainingJobSpec``.

    Raises InvalidArgumentError (reason SPEC_INVALID) with one violation per bad key, each
    named by its path (``spec.optimization.learning_rate``)."""
    builder = _SpecBuilder()
    spec = TrainingJobSpec()
    if data is None:
        data = {}
    builder.fill(spec, data, path)
    if builder.violations:
        raise _spec_error(builder.violations)
    return spec


def load_yaml(text: str, *, path: str = "config") -> dict:
    """Parse YAML text into a mapping (InvalidArgumentError SPEC_INVALID when it is not one)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _spec_error([FieldViolation(path, f"not valid YAML: {e}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _spec_error([FieldViolation(path, f"expected a YAML mapping, got {data!r}")])
    return data


def _split_key(key: str) -> list[str | int] | None:
    """``datasets[0].weight`` or ``datasets.0.weight`` -> ['datasets', 0, 'weight']."""
    parts: list[str | int] = []
    for piece in key.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", piece)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        if m.group(1):
            parts.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts or None


def _dotted(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _set_path(data: dict, parts: list, value, remove: bool) -> str:
    """Put ``value`` at ``parts`` in the YAML tree; an error message, or '' on success. Walks the
    TrainingJobSpec descriptor alongside, so a shorthand on the way is expanded (a dataset
    string becomes ``{dataset: ...}``, ``method: lora`` becomes ``{lora: {}}``)."""
    node, desc = data, TrainingJobSpec.DESCRIPTOR
    for i, part in enumerate(parts[:-1]):
        here, following = _dotted(parts[: i + 1]), parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list):
                return f"{_dotted(parts[:i]) or 'the spec'} is not a list"
            if part >= len(node):
                return f"{here}: there are only {len(node)} entries"
            child = node[part]
            shorthand = _string_shorthand(desc) if desc is not None else None
            if isinstance(child, str) and shorthand is not None:
                child = node[part] = {shorthand.name: child}
            elif child is None:
                child = node[part] = {}
            elif not isinstance(child, dict | list):
                return f"{here} is a value, not a section"
            node = child
            continue
        if not isinstance(node, dict):
            return f"{_dotted(parts[:i]) or 'the spec'} is not a section"
        field = desc.fields_by_name.get(part) if desc is not None else None
        oneof = _tagged_oneofs(desc).get(part) if desc is not None and field is None else None
        child_desc = field.message_type if field is not None else (desc if oneof else None)
        child = node.get(part)
        if oneof is not None and isinstance(following, str):
            members = [f.name for f in oneof.fields]
            current = (
                child
                if isinstance(child, str)
                else next(iter(child), None)
                if isinstance(child, dict) and len(child) == 1
                else None
            )
            if current in members and current != following:
                rest = _dotted(parts[i + 2 :])
                hint = f"{part}.{current}.{rest}" if rest else f"{part}={following}"
                return (
                    f"the spec's {part} is {current}: set {hint}, or --set {part}={following} first"
                )
            if isinstance(child, str):
                child = node[part] = {child: {}}
        if child is None:
            if isinstance(following, int):
                return f"{here} has no entries"
            child = node[part] = {}
        elif isinstance(child, str):
            shorthand = _string_shorthand(child_desc) if child_desc is not None else None
            if shorthand is None or field is None or field.is_repeated:
                return f"{here} is a value, not a section"
            child = node[part] = {shorthand.name: child}
        elif not isinstance(child, dict | list):
            return f"{here} is a value, not a section"
        node, desc = child, child_desc
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return "no such list entry"
        node[last] = value
    elif not isinstance(node, dict):
        return "the parent is not a section"
    elif remove:
        node.pop(last, None)
    else:
        node[last] = value
    return ""


def apply_overrides(data: dict, overrides: Iterable[str] = ()) -> dict:
    """A copy of the YAML tree with ``KEY=VALUE`` settings applied (the CLI's ``--set``).

    KEY is a dotted YAML path (``optimization.learning_rate``, ``method.lora.r``,
    ``datasets[1].weight`` or ``datasets.1.weight``); VALUE is read as YAML (``16``, ``2e-4``,
    ``true``, ``[a, b]``); an empty VALUE removes the key (back to its default);
    ``method=full`` switches the method. Raises InvalidArgumentError (SPEC_INVALID) naming each
    bad key."""
    data = copy.deepcopy(data) if data else {}
    problems: list[FieldViolation] = []
    for item in overrides:
        label = f"--set {item}"
        key, sep, raw = item.partition("=")
        parts = _split_key(key.strip()) if sep else None
        if parts is None or isinstance(parts[0], int):
            problems.append(FieldViolation(key.strip() or item, f"{label}: expected KEY=VALUE"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            problems.append(FieldViolation(_dotted(parts), f"{label}: bad value: {e}"))
            continue
        error = _set_path(data, parts, value, remove=not raw.strip())
        if error:
            problems.append(FieldViolation(_dotted(parts), f"{label}: {error}"))
    if problems:
        raise _spec_error(problems)
    return data


def spec_from_yaml(
    text: str, overrides: Iterable[str] = (), *, deepspeed: str | None = None
) -> TrainingJobSpec:
    """YAML config text (+ ``--set`` overrides, + ``--deepspeed``) -> ``TrainingJobSpec``."""
    data = apply_overrides(load_yaml(text), overrides)
    if deepspeed:
        data["deepspeed"] = deepspeed
    return spec_from_dict(data)


def spec_to_dict(message: Message) -> dict:
    """The YAML shape of a spec (or any message): set fields only, enums by short name, oneofs
    of messages as tagged choices, a message holding only its string shorthand as the string.
    ``spec_from_dict(spec_to_dict(spec)) == spec``."""
    result: dict = {}
    for field, value in message.ListFields():
        if _is_map(field) or _is_well_known(field):
            rendered = json_format.MessageToDict(message, preserving_proto_field_name=True)[
                field.name
            ]
        elif field.message_type is not None:
            if field.is_repeated:
                rendered = [_message_or_shorthand(v) for v in value]
            else:
                rendered = _message_or_shorthand(value)
        elif field.enum_type is not None:
            if field.is_repeated:
                rendered = [enum_short_name(field.enum_type, v) for v in value]
            else:
                rendered = enum_short_name(field.enum_type, value)
        else:
            rendered = list(value) if field.is_repeated else value
        if _tagged(field):
            result[_real_oneof(field).name] = {field.name: rendered}
        else:
            result[field.name] = rendered
    return result


def _message_or_shorthand(message: Message):
    fields = message.ListFields()
    shorthand = _string_shorthand(message.DESCRIPTOR)
    if shorthand is not None and len(fields) == 1 and fields[0][0] is shorthand:
        return fields[0][1]
    return spec_to_dict(message)


def spec_to_yaml(message: Message) -> str:
    return yaml.safe_dump(
        spec_to_dict(message),
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


# -- the client ------------------------------------------------------------------------------


class TrainingClient:
    """Training jobs of one project. Short names are accepted everywhere: ``job-1`` for
    ``projects/{project}/trainingJobs/job-1``, ``job-1@step-30`` (or ``job-1@30``) for its
    checkpoint, ``tiny_lora_cpu`` for ``trainingConfigs/tiny_lora_cpu``. In a spec, the base model and
    datasets may be ids too (``tiny``, ``assistant``, ``assistant@<version>``): the service
    qualifies them within the project."""

    # How `watch` reconnects: consecutive attempts, first delay, longest delay (seconds).
    reconnect_attempts = 8
    reconnect_backoff = 0.5
    reconnect_max_backoff = 8.0

    def __init__(self, channel: grpc.Channel, project: str):
        self._stub = training_service_pb2_grpc.TrainingServiceStub(channel)
        self.project = project
        self._sleep = time.sleep

    # -- names ----------------------------------------------------------------------------

    @property
    def parent(self) -> str:
        return f"projects/{self.project}"

    def job_name(self, job: str) -> str:
        return job if job.startswith("projects/") else f"{self.parent}/trainingJobs/{job}"

    def checkpoint_name(self, ref: str, job: str | None = None) -> str:
        """``job@step-30``, ``job@30``, ``step-30`` with ``job``, or the full name."""
        if ref.startswith("projects/") and "/checkpoints/" in ref:
            return ref
        if "@" in ref:
            job, _, ref = ref.rpartition("@")
        if not job:
            raise InvalidArgumentError(
                "INVALID_ARGUMENT",
                f"checkpoint {ref!r} needs its job (JOB@step-N)",
                "INVALID_NAME",
                violations=[FieldViolation("name", "expected JOB@step-N")],
            )
        step = ref if ref.startswith("step-") else f"step-{ref}"
        return f"{self.job_name(job)}/checkpoints/{step}"

    @staticmethod
    def config_name(name: str) -> str:
        return name if name.startswith("trainingConfigs/") else f"trainingConfigs/{name}"

    # -- jobs -----------------------------------------------------------------------------

    def create_job(
        self,
        spec_yaml: str | None = None,
        *,
        spec: TrainingJobSpec | None = None,
        overrides: Iterable[str] = (),
        deepspeed: str | None = None,
        config_name: str = "",
        job_id: str = "",
        display_name: str = "",
        request_id: str = "",
        validate_only: bool = False,
        labels: dict[str, str] | None = None,
    ) -> TrainingJob:
        """Create (or with ``validate_only`` only validate and resolve) a training job from
        YAML config text or a ``TrainingJobSpec``; ``overrides`` are ``a.b=value`` settings and
        ``deepspeed`` a stage short name (``zero2``), both applied before conversion."""
        if (spec_yaml is None) == (spec is None):
            raise TypeError("create_job needs exactly one of spec_yaml and spec")
        if spec_yaml is not None:
            spec = spec_from_yaml(spec_yaml, overrides, deepspeed=deepspeed)
        elif overrides or deepspeed:
            data = apply_overrides(spec_to_dict(spec), overrides)
            if deepspeed:
                data["deepspeed"] = deepspeed
            spec = spec_from_dict(data)
        job = TrainingJob(
            display_name=display_name,
            spec=spec,
            config_name=self.config_name(config_name) if config_name else "",
            labels=labels or {},
        )
        return self._create(job, job_id, request_id, validate_only)

    @_mapped
    def _create(self, job, job_id, request_id, validate_only) -> TrainingJob:
        return self._stub.CreateTrainingJob(
            pb.CreateTrainingJobRequest(
                parent=self.parent,
                training_job=job,
                training_job_id=job_id,
                request_id=request_id,
                validate_only=validate_only,
            )
        )

    @_mapped
    def get_job(self, job: str) -> TrainingJob:
        return self._stub.GetTrainingJob(pb.GetTrainingJobRequest(name=self.job_name(job)))

    def list_jobs(
        self, state: str | int | None = None, page_size: int = 0
    ) -> Iterator[TrainingJob]:
        """Jobs of the project, newest first; ``state`` by short name (``running``) or number."""
        number = enum_value(common_pb2.JobState.DESCRIPTOR, state) if state is not None else 0
        yield from self._pages(
            lambda token: self._stub.ListTrainingJobs(
                pb.ListTrainingJobsRequest(
                    parent=self.parent, page_size=page_size, page_token=token, state=number
                )
            ),
            "training_jobs",
        )

    @_mapped
    def cancel_job(self, job: str) -> TrainingJob:
        return self._stub.CancelTrainingJob(pb.CancelTrainingJobRequest(name=self.job_name(job)))

    @_mapped
    def delete_job(self, job: str) -> None:
        self._stub.DeleteTrainingJob(pb.DeleteTrainingJobRequest(name=self.job_name(job)))

    # -- events ---------------------------------------------------------------------------

    @staticmethod
    def _event_types(event_types: Iterable[str | int]) -> list[int]:
        enum = training_event_pb2.TrainingEventType.DESCRIPTOR
        return [enum_value(enum, t) for t in event_types]

    def watch(
        self,
        job: str,
        after_sequence: int = 0,
        follow: bool = True,
        *,
        event_types: Iterable[str | int] = (),
    ) -> Iterator[TrainingEvent]:
        """Stream a job's events after ``after_sequence``; with ``follow`` until the job is
        terminal. When the connection drops (UNAVAILABLE: the service restarted, the network
        blipped) it reconnects from the last sequence it yielded, so nothing is missed or
        repeated; after ``reconnect_attempts`` failed attempts in a row (backoff doubling from
        ``reconnect_backoff`` to ``reconnect_max_backoff`` seconds) it raises UnavailableError."""
        name = self.job_name(job)
        types = self._event_types(event_types)
        last = after_sequence
        yield from resumable_events(
            lambda after: self._stub.WatchTrainingJob(
                pb.WatchTrainingJobRequest(
                    name=name, after_sequence=after, follow=follow, event_types=types
                )
            ),
            last,
            attempts=self.reconnect_attempts,
            backoff=self.reconnect_backoff,
            max_backoff=self.reconnect_max_backoff,
            sleep=self._sleep,
        )

    def list_events(
        self, job: str, *, event_types: Iterable[str | int] = (), page_size: int = 0
    ) -> Iterator[TrainingEvent]:
        """Every recorded event of a job, in sequence order (``event_types``: e.g. ``log``)."""
        types = self._event_types(event_types)
        yield from self._pages(
            lambda token: self._stub.ListTrainingJobEvents(
                pb.ListTrainingJobEventsRequest(
                    parent=self.job_name(job),
                    page_size=page_size,
                    page_token=token,
                    event_types=types,
                )
            ),
            "events",
        )

    # -- checkpoints ----------------------------------------------------------------------

    def list_checkpoints(self, job: str, page_size: int = 0) -> Iterator[Checkpoint]:
        yield from self._pages(
            lambda token: self._stub.ListCheckpoints(
                pb.ListCheckpointsRequest(
                    parent=self.job_name(job), page_size=page_size, page_token=token
                )
            ),
            "checkpoints",
        )

    @_mapped
    def get_checkpoint(self, ref: str, job: str | None = None) -> Checkpoint:
        return self._stub.GetCheckpoint(
            pb.GetCheckpointRequest(name=self.checkpoint_name(ref, job))
        )

    # -- built-in configs -----------------------------------------------------------------

    def list_configs(self, pattern: str = "", page_size: int = 0) -> Iterator[TrainingConfig]:
        """Built-in configs whose id contains ``pattern`` (case-insensitive), by name."""
        yield from self._pages(
            lambda token: self._stub.ListTrainingConfigs(
                pb.ListTrainingConfigsRequest(
                    page_size=page_size, page_token=token, pattern=pattern
                )
            ),
            "training_configs",
        )

    @_mapped
    def get_config(self, name: str) -> TrainingConfig:
        return self._stub.GetTrainingConfig(
            pb.GetTrainingConfigRequest(name=self.config_name(name))
        )

    @staticmethod
    def _pages(call, field_name: str):
        token = ""
        while True:
            try:
                response = call(token)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
            yield from getattr(response, field_name)
            token = response.next_page_token
            if not token:
                return

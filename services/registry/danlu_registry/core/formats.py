"""Detect, validate and normalise an uploaded dataset file into danlu's canonical JSONL.

Accepted inputs (what users of the OpenAI fine-tuning API, LLaMA-Factory and XTuner bring):

- ``openai``   ``{"messages": [{"role": "system|user|assistant", "content": str}, ...]}``
- ``alpaca``   ``{"instruction", "input", "output"}`` + optional ``"system"`` and
               ``"history": [[prompt, response], ...]`` (LLaMA-Factory's layout)
- ``sharegpt`` ``{"conversations": [{"from": "human|gpt|system", "value": str}, ...]}``
               + optional ``"system"``; ``"user"``/``"assistant"`` are accepted as ``from``
- ``text``     ``{"text": str}`` records, or a ``.txt`` file with one sample per non-empty line

Records come as JSON Lines or as one top-level JSON array. Both are read as a stream
(JSONL line by line, arrays item by item through ``ijson``), so memory stays bounded by the
record size limit, never by the file size.

Canonical output, one compact JSON object per line:

- chat: ``{"messages": [{"role": ..., "content": ...}, ...]}``: at most one system message,
  first; then user/assistant turns alternating, starting with user and ending with assistant;
- text: ``{"text": ...}``.

Content is copied verbatim (no stripping): the model sees what the user uploaded.

Violation fields name the record, then the field inside it, in the file's own terms:
``line 12: messages[1].role`` for JSON Lines and ``.txt`` (1-based line numbers, blank lines
counted), ``record[11].messages[1].role`` for a JSON array (0-based index), a bare ``line 12`` /
``record[11]`` for problems with the whole record, and ``file`` for the file as a whole.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO, Literal

import ijson
import orjson

from danlu_kit.errors import FieldViolation, InvalidArgument

Task = Literal["chat", "text"]

CHAT_ROLES = ("system", "user", "assistant")

_CHUNK = 1 << 20  # read size: large enough to keep per-call overhead negligible
_SINK_BUFFER = 256 << 10
_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_WS = b" \t\r\n"


class DatasetFormat(StrEnum):
    """The layouts an uploaded dataset may use."""

    OPENAI = "openai"
    ALPACA = "alpaca"
    SHAREGPT = "sharegpt"
    TEXT = "text"

    @property
    def task(self) -> Task:
        """What the normalised records train: conversations (``chat``) or raw ``text``."""
        return "text" if self is DatasetFormat.TEXT else "chat"

    @classmethod
    def from_name(cls, name: str) -> DatasetFormat | None:
        """Parse a user-supplied name; ``"auto"`` (or empty) means detect from the content."""
        key = (name or "").strip().lower()
        if key in ("", "auto"):
            return None
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(["auto", *(f.value for f in cls)])
            raise InvalidArgument.from_violations(
                "UNKNOWN_DATASET_FORMAT",
                [FieldViolation("format", f'unknown dataset format "{name}" (expected {known})')],
            ) from None


@dataclass(frozen=True)
class IngestLimits:
    """Bounds that keep ingestion safe on hostile or broken uploads."""

    # A record larger than this is rejected. JSONL/.txt: the line's bytes; JSON array: the
    # record's compact JSON encoding (so a pretty-printed file's indentation does not count).
    max_record_bytes: int = 1 << 20
    # Stop after this many problems: enough to fix a file, without reporting a broken
    # file's every line.
    max_violations: int = 20

    def __post_init__(self) -> None:
        if self.max_record_bytes <= 0 or self.max_violations <= 0:
            raise ValueError("IngestLimits values must be positive")


@dataclass(frozen=True)
class IngestStats:
    """Shape of a normalised dataset. ``turns`` count messages (system included); ``chars``
    count the characters (code points) of contents per record. Turn fields are 0 for text."""

    record_count: int
    turns_by_role: dict[str, int]
    min_turns: int
    max_turns: int
    mean_turns: float
    total_chars: int
    min_chars: int
    max_chars: int
    mean_chars: float


@dataclass(frozen=True)
class IngestResult:
    format: DatasetFormat
    task: Task
    stats: IngestStats


def normalize_dataset(
    source: BinaryIO,
    sink: BinaryIO,
    *,
    format: DatasetFormat | None = None,
    filename: str = "",
    limits: IngestLimits = IngestLimits(),
) -> IngestResult:
    """Validate ``source`` completely and write its canonical JSONL to ``sink``.

    ``format=None`` detects the format from the first record (a ``.txt`` ``filename`` means
    raw text lines). Raises ``InvalidArgument(reason="DATASET_INVALID")`` with up to
    ``limits.max_violations`` field violations; the caller then discards whatever reached
    ``sink``.
    """
    return _Ingest(source, sink, format, filename, limits).run()


def iter_canonical_records(source: BinaryIO, *, limit: int | None = None) -> Iterator[dict]:
    """Read back records of a canonical JSONL stream written by ``normalize_dataset``."""
    for n, line in enumerate(source):
        if limit is not None and n >= limit:
            return
        yield json.loads(line)


# --------------------------------------------------------------------------- JSON
# orjson parses and serialises several times faster than the standard library, which matters
# at hundreds of MB per upload. Whatever orjson refuses goes through ``json`` instead, so the
# values accepted, the error messages and the bytes written are those of the standard library.


def _loads(text: str) -> Any:
    """``json.loads(text)``. orjson refuses NaN/Infinity, numbers out of double range and
    unpaired surrogate escapes, which ``json`` accepts: those lines take the ``json`` path, as
    do invalid ones (its messages are the documented ones). The one difference left, integers
    beyond 64 bits read as floats, is invisible here: numbers are only ever reported as
    "number" (no canonical field holds one)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _dumps(record: dict) -> bytes:
    """Compact UTF-8 JSON, byte for byte ``json.dumps(record, ensure_ascii=False,
    separators=(",", ":")).encode()``; raises UnicodeEncodeError for unpaired surrogates."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:  # unpaired surrogates: let json say so, as before
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- violations


class _Stop(Exception):
    """Ends the reading loop: nothing more can be checked."""


class _Violations:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[FieldViolation] = []

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def add(self, field_: str, description: str) -> None:
        if not self.full:  # one record may hold many problems; keep the first ones
            self.items.append(FieldViolation(field_, description))


@dataclass(frozen=True)
class _Where:
    """A record's position, rendered in the file's own terms."""

    kind: Literal["line", "record"]
    n: int  # 1-based line number, or 0-based array index

    def __str__(self) -> str:
        return f"line {self.n}" if self.kind == "line" else f"record[{self.n}]"

    def field(self, path: str) -> str:
        if not path:
            return str(self)
        return f"{self}: {path}" if self.kind == "line" else f"{self}.{path}"


class _Record:
    """Checks one record, reporting problems under its position."""

    def __init__(self, where: _Where, violations: _Violations) -> None:
        self.where = where
        self._violations = violations
        self.ok = True

    def fail(self, path: str, description: str) -> None:
        self.ok = False
        self._violations.add(self.where.field(path), description)

    def string(
        self, obj: Mapping[str, Any], key: str, path: str, *, required: bool, allow_empty: bool
    ) -> str | None:
        """``obj[key]`` as a string; None (after reporting) when absent or wrong.

        An optional field that is missing, ``null`` or blank is simply absent.
        """
        if key not in obj or obj[key] is None:
            if required:
                self.fail(
                    path, "required field is missing" if key not in obj else "must not be null"
                )
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_json_type(value)}")
            return None
        if not value.strip():
            if required and not allow_empty:
                self.fail(path, "content is empty or whitespace only")
            return value if allow_empty else None
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --------------------------------------------------------------------------- detection

# The key that identifies each format, in detection priority order.
_SIGNATURES: tuple[tuple[DatasetFormat, tuple[str, ...]], ...] = (
    (DatasetFormat.OPENAI, ("messages",)),
    (DatasetFormat.SHAREGPT, ("conversations",)),
    (DatasetFormat.ALPACA, ("instruction", "output")),
    (DatasetFormat.TEXT, ("text",)),
)


def _sniff(record: Mapping[str, Any]) -> DatasetFormat | None:
    for fmt, keys in _SIGNATURES:
        if any(k in record for k in keys):
            return fmt
    return None


_EXPECTED_KEYS = (
    'expected "messages" (openai), "conversations" (sharegpt), '
    '"instruction"/"input"/"output" (alpaca) or "text" (text)'
)
_NOT_JSON = (
    "not JSON: expected a JSON array of records or one JSON object per line "
    "(for raw text, upload a .txt file or set the format to text)"
)


def _signature(fmt: DatasetFormat) -> str:
    keys = dict(_SIGNATURES)[fmt]
    return " and ".join(f'"{k}"' for k in keys)


# --------------------------------------------------------------------------- conversions


def _check_turn_order(roles: list[str], role_path: Callable[[int], str]) -> tuple[str, str] | None:
    """The first problem with the order of canonical roles, as (path, description)."""
    expected = "user"
    first_turn = 1 if roles and roles[0] == "system" else 0
    for i, role in enumerate(roles):
        if role == "system":
            if i != 0:
                return role_path(i), "a system message is only allowed as the first message"
            continue
        if role != expected:
            if i == first_turn:
                return role_path(i), (
                    f"the conversation must start with a user turn (after an optional system "
                    f"message), got {role}"
                )
            return role_path(i), (
                f"two {role} turns in a row: turns must alternate between user and assistant"
            )
        expected = "assistant" if role == "user" else "user"
    if len(roles) == first_turn:
        return None  # reported by the caller: no turns at all
    if roles[-1] != "assistant":
        return role_path(len(roles) - 1), (
            f"the conversation must end with an assistant turn, got {roles[-1]}"
        )
    return None


def _turns(
    rec: _Record,
    obj: Mapping[str, Any],
    *,
    list_key: str,
    role_key: str,
    content_key: str,
    role_map: Mapping[str, str],
    expected_roles: str,
) -> list[dict[str, str]] | None:
    """Convert a list of role/content objects (OpenAI messages, ShareGPT conversations)."""
    if list_key not in obj:
        rec.fail(list_key, "required field is missing")
        return None
    items = obj[list_key]
    if not isinstance(items, list):
        rec.fail(list_key, f"must be an array, got {_json_type(items)}")
        return None
    if not items:
        rec.fail(list_key, "must hold at least one user and one assistant turn, got none")
        return None
    out: list[dict[str, str]] = []
    for i, item in enumerate(items):
        path = f"{list_key}[{i}]"
        if not isinstance(item, dict):
            rec.fail(path, f"must be an object, got {_json_type(item)}")
            continue
        raw_role = rec.string(item, role_key, f"{path}.{role_key}", required=True, allow_empty=True)
        role = role_map.get(raw_role) if raw_role is not None else None
        if raw_role is not None and role is None:
            rec.fail(f"{path}.{role_key}", f'unknown role "{raw_role}" (expected {expected_roles})')
        content = rec.string(
            item, content_key, f"{path}.{content_key}", required=True, allow_empty=False
        )
        if role is not None and content is not None:
            out.append({"role": role, "content": content})
    if not rec.ok:
        return None  # order checks on a partly unreadable list would only add noise
    roles = [m["role"] for m in out]
    problem = _check_turn_order(roles, lambda i: f"{list_key}[{i}].{role_key}")
    if problem is None and roles in ([], ["system"]):
        problem = (list_key, "must hold at least one user and one assistant turn")
    if problem is not None:
        rec.fail(*problem)
        return None
    return out


def _openai(rec: _Record, obj: Mapping[str, Any]) -> dict | None:
    messages = _turns(
        rec,
        obj,
        list_key="messages",
        role_key="role",
        content_key="content",
        role_map={r: r for r in CHAT_ROLES},
        expected_roles="system, user or assistant",
    )
    return None if messages is None else {"messages": messages}


# ShareGPT as LLaMA-Factory reads it; "user"/"assistant" appear in many exports too.
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _sharegpt(rec: _Record, obj: Mapping[str, Any]) -> dict | None:
    system = rec.string(obj, "system", "system", required=False, allow_empty=False)
    turns = _turns(
        rec,
        obj,
        list_key="conversations",
        role_key="from",
        content_key="value",
        role_map=_SHAREGPT_ROLES,
        expected_roles="human, gpt or system",
    )
    if turns is None or not rec.ok:
        return None
    if system is not None:
        if turns[0]["role"] == "system":
            rec.fail("system", "a system prompt is given both here and as conversations[0]")
            return None
        turns.insert(0, {"role": "system", "content": system})
    return {"messages": turns}


def _alpaca(rec: _Record, obj: Mapping[str, Any]) -> dict | None:
    instruction = rec.string(obj, "instruction", "instruction", required=True, allow_empty=True)
    query = rec.string(obj, "input", "input", required=False, allow_empty=True)
    output = rec.string(obj, "output", "output", required=True, allow_empty=False)
    system = rec.string(obj, "system", "system", required=False, allow_empty=False)
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})

    history = obj.get("history")
    if history is not None:
        if not isinstance(history, list):
            rec.fail(
                "history",
                f"must be an array of [prompt, response] pairs, got {_json_type(history)}",
            )
        else:
            for i, pair in enumerate(history):
                if not (isinstance(pair, list) and len(pair) == 2):
                    got = f"{len(pair)} items" if isinstance(pair, list) else _json_type(pair)
                    rec.fail(f"history[{i}]", f"must be a [prompt, response] pair, got {got}")
                    continue
                for j, role in enumerate(("user", "assistant")):
                    text = pair[j]
                    if not isinstance(text, str):
                        rec.fail(f"history[{i}][{j}]", f"must be a string, got {_json_type(text)}")
                    elif not text.strip():
                        rec.fail(f"history[{i}][{j}]", "content is empty or whitespace only")
                    else:
                        messages.append({"role": role, "content": text})

    # Like LLaMA-Factory: the user turn is the instruction and the input, joined by a newline,
    # leaving out whichever is empty.
    parts = [p for p in (instruction, query) if p is not None and p.strip()]
    if instruction is not None and not parts:
        rec.fail("instruction", "instruction and input are both empty")
    if not rec.ok or output is None:
        return None
    messages.append({"role": "user", "content": "\n".join(parts)})
    messages.append({"role": "assistant", "content": output})
    return {"messages": messages}


def _text(rec: _Record, obj: Mapping[str, Any]) -> dict | None:
    text = rec.string(obj, "text", "text", required=True, allow_empty=False)
    return None if text is None else {"text": text}


_CONVERTERS: dict[DatasetFormat, Callable[[_Record, Mapping[str, Any]], dict | None]] = {
    DatasetFormat.OPENAI: _openai,
    DatasetFormat.SHAREGPT: _sharegpt,
    DatasetFormat.ALPACA: _alpaca,
    DatasetFormat.TEXT: _text,
}


# --------------------------------------------------------------------------- reading


class _Source:
    """The upload stream with the bytes already peeked at put back in front."""

    def __init__(self, raw: BinaryIO, head: bytes) -> None:
        self._raw = raw
        self._head = head

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes with read(0) to tell bytes from text streams
            return b""
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._raw.read(n if n and n > 0 else _CHUNK) or b""


class _Utf8CheckedReader:
    """Feeds ijson while validating UTF-8 incrementally, so a bad byte is reported with its
    exact file offset and line (yajl would only say "invalid bytes in UTF8 string").

    It also stops a runaway record: ijson must buffer a whole item before handing it over,
    so if an item's raw text grows past ``guard`` bytes, reading stops (``_RunawayRecord``).
    """

    def __init__(self, source: _Source, offset: int, lines_before: int, guard: int) -> None:
        self._source = source
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._guard = guard
        self.offset = offset  # bytes of the file handed to ijson so far
        self._newlines = lines_before
        self._item_mark = offset
        self._error: _BadUtf8 | None = None

    def mark_item(self) -> None:
        """Called for each item ijson yields: the next item starts after this point."""
        self._item_mark = self.offset

    def read(self, n: int) -> bytes:
        if n == 0:
            return b""
        if self._error is not None:
            raise self._error
        if self.offset - self._item_mark > self._guard:
            raise _RunawayRecord
        data = self._source.read(n)
        pending = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            # e.start indexes the decoder's pending bytes followed by this chunk. Hand ijson
            # the valid part first, so that the records before the bad byte are still checked
            # and the error is blamed on the record that holds it.
            data = data[: max(0, e.start - pending)]
            line = self._newlines + data.count(b"\n") + 1
            self._error = _BadUtf8(self.offset - pending + e.start, line, e.reason)
            if not data:
                raise self._error from None
        self.offset += len(data)
        self._newlines += data.count(b"\n")
        return data


class _BadUtf8(Exception):
    def __init__(self, offset: int, line: int, reason: str) -> None:
        super().__init__(reason)
        self.offset, self.line, self.reason = offset, line, reason


class _RunawayRecord(Exception):
    pass


# Yielded by the readers: a record's position and its parsed value, or _UNREADABLE when the
# reader already reported why the record could not be read.
_UNREADABLE: Any = object()


class _Ingest:
    def __init__(
        self,
        source: BinaryIO,
        sink: BinaryIO,
        fmt: DatasetFormat | None,
        filename: str,
        limits: IngestLimits,
    ) -> None:
        self._raw = source
        self._sink = sink
        self._fmt = fmt
        self._fmt_origin = "format set explicitly"
        self._filename = filename.lower()
        self._limits = limits
        self._violations = _Violations(limits.max_violations)
        self._checked = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._stats = _StatsBuilder()

    # ---- orchestration

    def run(self) -> IngestResult:
        try:
            for where, value in self._records():
                self._checked += 1
                if value is not _UNREADABLE:
                    self._accept(where, value)
                if self._violations.full:
                    break
        except _Stop:
            pass
        if not self._violations.items and (self._checked == 0 or self._fmt is None):
            self._violations.items.append(
                FieldViolation(
                    "file", "no records found: the file is empty or holds only blank lines"
                )
            )
        if self._violations.items:
            self._raise()
        self._flush(force=True)
        return IngestResult(self._fmt, self._fmt.task, self._stats.build(self._fmt.task))

    def _raise(self) -> None:
        n = len(self._violations.items)
        what = f"{self._fmt.value} " if self._fmt else ""
        summary = (
            f"the {what}dataset is invalid: {n} problem{'s' if n != 1 else ''} in "
            f"{self._checked} record{'s' if self._checked != 1 else ''} checked"
        )
        if self._violations.full:
            summary += f" (stopped after {self._limits.max_violations} problems)"
        raise InvalidArgument.from_violations("DATASET_INVALID", self._violations.items, summary)

    def _accept(self, where: _Where, value: Any) -> None:
        rec = _Record(where, self._violations)
        if not isinstance(value, dict):
            rec.fail("", f"a record must be a JSON object, got {_json_type(value)}")
            return
        if self._fmt is None:
            self._fmt = _sniff(value)
            if self._fmt is None:
                keys = ", ".join(f'"{k}"' for k in list(value)[:8]) or "none"
                rec.fail("", f"cannot detect the dataset format from keys {keys}; {_EXPECTED_KEYS}")
                raise _Stop  # without a format nothing else can be checked
            self._fmt_origin = f"detected from {where}"
        fmt = self._fmt
        # A record in another format: say so, rather than listing its "missing" fields.
        if not any(k in value for k in dict(_SIGNATURES)[fmt]):
            other = _sniff(value)
            if other is not None:
                problem = f"record is {other.value} (has {_signature(other)}), but the file is "
                rec.fail("", f"{problem}{fmt.value} ({self._fmt_origin})")
                return
        canonical = _CONVERTERS[fmt](rec, value)
        if canonical is None or self._violations.items:
            return  # invalid, or the output is going to be discarded anyway
        try:
            line = _dumps(canonical)
        except UnicodeEncodeError:
            # json.loads accepts "\ud800"; such text cannot be stored or tokenised.
            rec.fail("", "contains an unpaired UTF-16 surrogate escape (e.g. \\ud800)")
            return
        self._stats.add(canonical)
        self._write(line + b"\n")

    # ---- output

    def _write(self, line: bytes) -> None:
        self._out.append(line)
        self._out_size += len(line)
        self._flush(force=False)

    def _flush(self, *, force: bool) -> None:
        if self._out and (force or self._out_size >= _SINK_BUFFER):
            self._sink.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0

    # ---- containers

    def _records(self) -> Iterator[tuple[_Where, Any]]:
        head = self._raw.read(_CHUNK) or b""
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            self._violations.add("file", "the file is UTF-16 encoded: save it as UTF-8")
            raise _Stop
        offset = 0
        if head.startswith(_UTF8_BOM):  # Windows editors add one; it is not content
            head, offset = head[len(_UTF8_BOM) :], len(_UTF8_BOM)
        # Find the first non-blank byte, however far away, without holding the blank bytes.
        lines_before = 0
        while not (stripped := head.lstrip(_JSON_WS)):
            lines_before += head.count(b"\n")
            offset += len(head)
            head = self._raw.read(_CHUNK) or b""
            if not head:
                return  # empty file
        source = _Source(self._raw, head)
        first = stripped[:1]
        if self._filename.endswith(".txt") and self._fmt in (None, DatasetFormat.TEXT):
            self._fmt = DatasetFormat.TEXT
            self._fmt_origin = "a .txt file holds raw text"
            yield from self._text_lines(source, offset, lines_before)
        elif first == b"[":
            yield from self._json_array(source, offset, lines_before)
        elif first == b"{":
            yield from self._json_lines(source, offset, lines_before)
        elif self._fmt is DatasetFormat.TEXT:
            yield from self._text_lines(source, offset, lines_before)
        else:
            line = lines_before + head[: len(head) - len(stripped)].count(b"\n") + 1
            self._violations.add(f"line {line}", _NOT_JSON)
            raise _Stop

    def _lines(
        self, source: _Source, offset: int, number: int
    ) -> Iterator[tuple[int, int, bytes | None]]:
        """(line number, file offset, bytes without the line break) for every line after the
        ``number`` lines already read; bytes is None for a line over the size limit, which is
        skipped without being held in memory."""
        limit = self._limits.max_record_bytes
        buf = b""
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl >= 0:
                number += 1
                line = buf[pos:nl]
                if line.endswith(b"\r"):
                    line = line[:-1]
                yield number, offset, line if len(line) <= limit else None
                offset += nl + 1 - pos
                pos = nl + 1
                continue
            rest = buf[pos:]
            chunk = source.read(_CHUNK)
            if not chunk:
                if rest:
                    number += 1
                    rest = rest.removesuffix(b"\r")
                    yield number, offset, rest if len(rest) <= limit else None
                return
            if len(rest) > limit + 1:  # +1: the "\r" of a CRLF line
                # Over the limit already: report it and skip to its end.
                number += 1
                yield number, offset, None
                skipped = len(rest)
                while (nl := chunk.find(b"\n")) < 0:
                    skipped += len(chunk)
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        return
                offset += skipped + nl + 1
                buf, pos = chunk, nl + 1
            else:
                buf, pos = rest + chunk, 0

    def _decoded_lines(
        self, source: _Source, offset: int, lines_before: int
    ) -> Iterator[tuple[_Where, str | None]]:
        """Non-blank lines as text; None where the line was reported as unreadable."""
        for number, start, data in self._lines(source, offset, lines_before):
            where = _Where("line", number)
            if data is None:
                self._violations.add(
                    str(where), f"record is larger than {self._limits.max_record_bytes} bytes"
                )
                yield where, None
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                at = f"at byte {e.start} of the line (file offset {start + e.start})"
                self._violations.add(str(where), f"not valid UTF-8 ({e.reason}) {at}")
                yield where, None
                continue
            if text.strip():
                yield where, text

    def _json_lines(
        self, source: _Source, offset: int, lines_before: int
    ) -> Iterator[tuple[_Where, Any]]:
        first = True
        for where, text in self._decoded_lines(source, offset, lines_before):
            if text is None:
                yield where, _UNREADABLE
                first = False
                continue
            try:
                value = _loads(text)
            except json.JSONDecodeError as e:
                problem = f"invalid JSON: {e.msg} (column {e.colno})"
                # A first record cut off at the end of its line is a JSON document spread over
                # several lines, not JSON Lines: one violation says it all.
                spread = first and e.pos >= len(text.rstrip())
                if spread:
                    problem += "; the record does not end on its line"
                if first and self._filename.endswith(".json"):
                    problem += "; a .json file must hold a JSON array of records"
                if spread or first:
                    problem += " (JSON Lines needs exactly one record per line)"
                self._violations.add(str(where), problem)
                if spread:
                    raise _Stop from None
                value = _UNREADABLE
            yield where, value
            first = False

    def _text_lines(
        self, source: _Source, offset: int, lines_before: int
    ) -> Iterator[tuple[_Where, Any]]:
        # LLaMA-Factory's text loader: one sample per non-empty line, kept as written.
        for where, text in self._decoded_lines(source, offset, lines_before):
            yield where, _UNREADABLE if text is None else {"text": text}

    def _json_array(
        self, source: _Source, offset: int, lines_before: int
    ) -> Iterator[tuple[_Where, Any]]:
        limit = self._limits.max_record_bytes
        # The limit applies to the compact encoding, and indentation may make the raw text a
        # few times larger; raw text far past the limit is over it and is not buffered further.
        reader = _Utf8CheckedReader(source, offset, lines_before, guard=4 * limit + _CHUNK)
        index = 0
        try:
            for item in ijson.items(reader, "item", use_float=True, buf_size=64 << 10):
                reader.mark_item()
                where = _Where("record", index)
                index += 1
                size = len(json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass"))
                if size > limit:
                    self._violations.add(str(where), f"record is larger than {limit} bytes")
                    yield where, _UNREADABLE
                else:
                    yield where, item
        except _BadUtf8 as e:
            self._checked += 1
            self._violations.add(
                f"record[{index}]",
                f"not valid UTF-8 ({e.reason}) at line {e.line}, file offset {e.offset}",
            )
        except _RunawayRecord:
            self._checked += 1
            self._violations.add(
                f"record[{index}]", f"record is larger than {limit} bytes (stopped reading here)"
            )
        except ijson.JSONError as e:
            self._checked += 1
            # A broken array cannot be resynchronised: what follows is not checked.
            self._violations.add(f"record[{index}]", _yajl_problem(e, index))


def _yajl_problem(error: Exception, complete: int) -> str:
    """yajl's message is "<reason>\\n<context>\\n<marker>"; keep the reason and the context."""
    text = error.args[0] if error.args else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in str(text).splitlines()]
    reason = lines[0] if lines else "malformed JSON"
    near = f" near `{lines[1]}`" if len(lines) > 1 and lines[1] else ""
    records = "record" if complete == 1 else "records"
    return f"invalid JSON after {complete} complete {records}: {reason}{near}"


# --------------------------------------------------------------------------- statistics


@dataclass
class _StatsBuilder:
    count: int = 0
    roles: Counter[str] = field(default_factory=Counter)
    turns_total: int = 0
    turns_min: int = 0
    turns_max: int = 0
    chars_total: int = 0
    chars_min: int = 0
    chars_max: int = 0

    def add(self, record: dict) -> None:
        if "messages" in record:
            messages = record["messages"]
            turns = len(messages)
            chars = sum(len(m["content"]) for m in messages)
            self.roles.update(m["role"] for m in messages)
        else:
            turns, chars = 0, len(record["text"])
        first = self.count == 0
        self.count += 1
        self.turns_total += turns
        self.turns_min = turns if first else min(self.turns_min, turns)
        self.turns_max = max(self.turns_max, turns)
        self.chars_total += chars
        self.chars_min = chars if first else min(self.chars_min, chars)
        self.chars_max = max(self.chars_max, chars)

    def build(self, task: Task) -> IngestStats:
        n = max(self.count, 1)
        return IngestStats(
            record_count=self.count,
            turns_by_role=dict(self.roles) if task == "chat" else {},
            min_turns=self.turns_min,
            max_turns=self.turns_max,
            mean_turns=self.turns_total / n,
            total_chars=self.chars_total,
            min_chars=self.chars_min,
            max_chars=self.chars_max,
            mean_chars=self.chars_total / n,
        )

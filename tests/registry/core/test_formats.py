"""Dataset detection, validation and normalisation (danlu_registry.core.formats)."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from danlu_kit.errors import InvalidArgument
from danlu_registry.core.formats import (
    DatasetFormat,
    IngestLimits,
    IngestResult,
    iter_canonical_records,
    normalize_dataset,
)


def ingest(data: bytes | str, **kwargs: Any) -> tuple[IngestResult, str]:
    raw = data.encode() if isinstance(data, str) else data
    sink = io.BytesIO()
    result = normalize_dataset(io.BytesIO(raw), sink, **kwargs)
    return result, sink.getvalue().decode()


def rejected(data: bytes | str, **kwargs: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        ingest(data, **kwargs)
    assert info.value.reason == "DATASET_INVALID"
    return info.value


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def canonical(*records: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)


U, A, S = "user", "assistant", "system"
GOOD = chat((U, "hi"), (A, "hello"))


# ----------------------------------------------------------------------------- good input


def test_openai_jsonl_is_detected_and_normalised() -> None:
    data = jsonl(
        {"messages": [{"role": "system", "content": "Be brief."}, *GOOD["messages"]]},
        # Extra keys (OpenAI's "weight", "name") are ignored; content is copied verbatim.
        {
            "messages": [
                {"role": "user", "content": "  2+2?\n", "name": "bob"},
                {"role": "assistant", "content": "4", "weight": 1},
                {"role": "user", "content": "再见"},
                {"role": "assistant", "content": "再见。"},
            ],
            "id": 7,
        },
    )
    result, out = ingest(data, filename="chat.jsonl")
    assert result.format is DatasetFormat.OPENAI
    assert result.task == "chat"
    assert out == (
        '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},'
        '{"role":"assistant","content":"hello"}]}\n'
        '{"messages":[{"role":"user","content":"  2+2?\\n"},{"role":"assistant","content":"4"},'
        '{"role":"user","content":"再见"},{"role":"assistant","content":"再见。"}]}\n'
    )
    stats = result.stats
    assert stats.record_count == 2
    assert stats.turns_by_role == {"system": 1, "user": 3, "assistant": 3}
    assert (stats.min_turns, stats.max_turns, stats.mean_turns) == (3, 4, 3.5)
    chars = [len("Be brief.hihello"), len("  2+2?\n4再见再见。")]
    assert stats.total_chars == sum(chars)
    assert (stats.min_chars, stats.max_chars) == (min(chars), max(chars))
    assert stats.mean_chars == sum(chars) / 2


def test_openai_json_array_pretty_printed() -> None:
    records = [GOOD, chat((S, "s"), (U, "q"), (A, "a"))]
    result, out = ingest(json.dumps(records, indent=4), filename="data.json")
    assert result.format is DatasetFormat.OPENAI
    assert out == canonical(*records)


def test_personal_assistant_json_array_of_10001_records() -> None:
    # XTuner's tutorial dataset: one identity conversation repeated, pretty-printed.
    record = chat(
        (U, "请介绍一下你自己"), (A, "我是丹炉的小助手。内在是上海AI实验室书生·浦语的1.8B大模型哦")
    )
    data = json.dumps([record] * 10_001, ensure_ascii=False, indent=4)
    result, out = ingest(data, filename="personal_assistant.json")
    assert result.format is DatasetFormat.OPENAI
    assert result.stats.record_count == 10_001
    assert result.stats.turns_by_role == {"user": 10_001, "assistant": 10_001}
    lines = out.splitlines()
    assert len(lines) == 10_001
    assert set(lines) == {canonical(record).rstrip("\n")}


def test_alpaca_with_system_history_and_input() -> None:
    data = jsonl(
        {
            "instruction": "Translate",
            "input": "hello",
            "output": "你好",
            "system": "You translate.",
            "history": [["Who are you?", "A translator."], ["Ready?", "Yes."]],
        },
        {"instruction": "Say hi", "input": "", "output": "hi"},  # empty input: left out
        {"instruction": "Say hi", "input": None, "output": "hi", "system": ""},  # absent
        {"instruction": "", "input": "only input", "output": "ok"},
    )
    result, out = ingest(data)
    assert result.format is DatasetFormat.ALPACA
    assert out == canonical(
        chat(
            (S, "You translate."),
            (U, "Who are you?"),
            (A, "A translator."),
            (U, "Ready?"),
            (A, "Yes."),
            (U, "Translate\nhello"),
            (A, "你好"),
        ),
        chat((U, "Say hi"), (A, "hi")),
        chat((U, "Say hi"), (A, "hi")),
        chat((U, "only input"), (A, "ok")),
    )


def test_alpaca_json_array() -> None:
    data = json.dumps([{"instruction": "a", "output": "b"}])
    result, out = ingest(data)
    assert result.format is DatasetFormat.ALPACA
    assert out == canonical(chat((U, "a"), (A, "b")))


def test_sharegpt_with_system_field_and_system_turn() -> None:
    records = [
        {
            "system": "You are Danlu.",
            "conversations": [
                {"from": "human", "value": "Who are you?"},
                {"from": "gpt", "value": "Danlu."},
                {"from": "user", "value": "Sure?"},  # user/assistant accepted too
                {"from": "assistant", "value": "Yes."},
            ],
        },
        {
            "conversations": [
                {"from": "system", "value": "Terse."},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ]
        },
    ]
    result, out = ingest(json.dumps(records))
    assert result.format is DatasetFormat.SHAREGPT
    assert out == canonical(
        chat((S, "You are Danlu."), (U, "Who are you?"), (A, "Danlu."), (U, "Sure?"), (A, "Yes.")),
        chat((S, "Terse."), (U, "q"), (A, "a")),
    )


def test_txt_file_one_sample_per_non_empty_line() -> None:
    data = "first line\r\n\n   \n  indented stays indented \nlast, without newline"
    result, out = ingest(data, filename="corpus.TXT")
    assert result.format is DatasetFormat.TEXT
    assert result.task == "text"
    assert out == canonical(
        {"text": "first line"},
        {"text": "  indented stays indented "},
        {"text": "last, without newline"},
    )
    assert result.stats.turns_by_role == {}
    assert result.stats.total_chars == len(
        "first line  indented stays indented last, without newline"
    )


def test_txt_lines_that_look_like_json_are_still_text() -> None:
    _, out = ingest('{"not": "parsed"}\n', filename="notes.txt")
    assert out == canonical({"text": '{"not": "parsed"}'})


def test_text_jsonl_and_json_array() -> None:
    result, out = ingest(jsonl({"text": "alpha"}, {"text": "beta", "meta": 1}))
    assert result.format is DatasetFormat.TEXT
    assert out == canonical({"text": "alpha"}, {"text": "beta"})
    result, out = ingest(json.dumps([{"text": "gamma"}]))
    assert (result.format, out) == (DatasetFormat.TEXT, canonical({"text": "gamma"}))


def test_explicit_text_format_reads_plain_lines_without_txt_extension() -> None:
    result, out = ingest("plain prose\nmore prose\n", format=DatasetFormat.TEXT, filename="a.md")
    assert result.format is DatasetFormat.TEXT
    assert out == canonical({"text": "plain prose"}, {"text": "more prose"})


def test_explicit_format_that_matches() -> None:
    result, out = ingest(jsonl(GOOD), format=DatasetFormat.OPENAI)
    assert (result.format, out) == (DatasetFormat.OPENAI, canonical(GOOD))


def test_utf8_bom_and_leading_blank_lines_are_tolerated() -> None:
    result, out = ingest(b"\xef\xbb\xbf\n\n" + jsonl(GOOD).encode())
    assert (result.format, out) == (DatasetFormat.OPENAI, canonical(GOOD))


def test_crlf_jsonl() -> None:
    _, out = ingest(jsonl(GOOD, GOOD).replace("\n", "\r\n"))
    assert out == canonical(GOOD, GOOD)


def test_canonical_output_reads_back() -> None:
    _, out = ingest(
        jsonl(GOOD, {"messages": [{"role": "user", "content": "x"}, GOOD["messages"][1]]})
    )
    records = list(iter_canonical_records(io.BytesIO(out.encode()), limit=1))
    assert records == [GOOD]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("auto", None), ("", None), (" OpenAI ", DatasetFormat.OPENAI), ("text", DatasetFormat.TEXT)],
)
def test_format_from_name(name: str, expected: DatasetFormat | None) -> None:
    assert DatasetFormat.from_name(name) is expected


def test_format_from_unknown_name() -> None:
    with pytest.raises(InvalidArgument) as info:
        DatasetFormat.from_name("csv")
    assert info.value.reason == "UNKNOWN_DATASET_FORMAT"
    assert info.value.violations[0].field == "format"
    assert "auto, openai, alpaca, sharegpt, text" in info.value.violations[0].description


# ----------------------------------------------------------------------------- bad input

G = json.dumps(GOOD)  # a good OpenAI line


def _msgs(*messages: Any) -> str:
    return json.dumps({"messages": list(messages)})


def _m(role: Any, content: Any) -> dict:
    return {"role": role, "content": content}


SMALL = {"limits": IngestLimits(max_record_bytes=128)}

# (case id, file bytes, keyword arguments, violation field, words the description contains)
BAD_CORPUS: list[tuple[str, bytes | str, dict, str, str]] = [
    # --- file level
    ("empty file", b"", {}, "file", "no records found"),
    ("blank lines only", "\n  \n\t\n", {}, "file", "no records found"),
    ("empty json array", " [ ] ", {}, "file", "no records found"),
    ("utf-16 file", G, {"_encoding": "utf-16"}, "file", "UTF-16"),
    ("not json", "hello world\n", {}, "line 1", "not JSON"),
    ("not json after blank lines", "\n\nhello\n", {}, "line 3", "not JSON"),
    (
        "undetectable keys",
        '{"prompt": "a", "completion": "b"}\n',
        {},
        "line 1",
        'cannot detect the dataset format from keys "prompt", "completion"',
    ),
    # --- JSONL syntax, encoding, size
    (
        "malformed json line",
        f'{G}\n{{"messages": [}}\n',
        {},
        "line 2",
        "invalid JSON: Expecting value (column 15)",
    ),
    (
        "malformed after blank lines",
        f"{G}\n\n\n{{oops\n",
        {},
        "line 4",
        "invalid JSON: Expecting property name enclosed in double quotes (column 2)",
    ),
    (
        "pretty-printed object in .json",
        json.dumps(GOOD, indent=2),
        {"filename": "x.json"},
        "line 1",
        "a .json file must hold a JSON array",
    ),
    (
        "non-utf8 line",
        f"{G}\n".encode() + b'{"messages": "\xff"}\n',
        {},
        "line 2",
        f"not valid UTF-8 (invalid start byte) at byte 14 of the line (file offset {len(G) + 15})",
    ),
    (
        "record over max_record_bytes",
        f"{G}\n" + _msgs(_m(U, "x" * 200), _m(A, "y")),
        SMALL,
        "line 2",
        "record is larger than 128 bytes",
    ),
    (
        "record not an object",
        f"{G}\n[1, 2]\n",
        {},
        "line 2",
        "a record must be a JSON object, got array",
    ),
    (
        "lone surrogate",
        _msgs(_m(U, "\\ud800"), _m(A, "a")).replace("\\\\", "\\"),
        {},
        "line 1",
        "unpaired UTF-16 surrogate",
    ),
    # --- OpenAI schema
    (
        "messages not array",
        '{"messages": "hi"}',
        {},
        "line 1: messages",
        "must be an array, got string",
    ),
    (
        "messages empty",
        '{"messages": []}',
        {},
        "line 1: messages",
        "at least one user and one assistant",
    ),
    ("only a system message", _msgs(_m(S, "s")), {}, "line 1: messages", "at least one user"),
    (
        "message not object",
        _msgs(_m(U, "q"), "a"),
        {},
        "line 1: messages[1]",
        "must be an object, got string",
    ),
    (
        "role missing",
        _msgs({"content": "q"}, _m(A, "a")),
        {},
        "line 1: messages[0].role",
        "required field is missing",
    ),
    (
        "role not string",
        _msgs(_m(1, "q"), _m(A, "a")),
        {},
        "line 1: messages[0].role",
        "must be a string, got number",
    ),
    (
        "unknown role",
        f"{G}\n{G}\n" + _msgs(_m("robot", "beep"), _m(A, "a")),
        {},
        "line 3: messages[0].role",
        'unknown role "robot" (expected system, user or assistant)',
    ),
    (
        "tool role",
        _msgs(_m(U, "q"), _m("tool", "42"), _m(A, "a")),
        {},
        "line 1: messages[1].role",
        'unknown role "tool"',
    ),
    (
        "content missing",
        _msgs(_m(U, "q"), {"role": "assistant"}),
        {},
        "line 1: messages[1].content",
        "required field is missing",
    ),
    (
        "content null",
        _msgs(_m(U, "q"), _m(A, None)),
        {},
        "line 1: messages[1].content",
        "must not be null",
    ),
    (
        "content not string",
        _msgs(_m(U, ["q"]), _m(A, "a")),
        {},
        "line 1: messages[0].content",
        "must be a string, got array",
    ),
    (
        "content empty",
        _msgs(_m(U, ""), _m(A, "a")),
        {},
        "line 1: messages[0].content",
        "content is empty or whitespace only",
    ),
    (
        "content whitespace",
        _msgs(_m(U, "q"), _m(A, " \n\t")),
        {},
        "line 1: messages[1].content",
        "content is empty or whitespace only",
    ),
    # --- role order
    (
        "two users in a row",
        _msgs(_m(U, "a"), _m(U, "b"), _m(A, "c")),
        {},
        "line 1: messages[1].role",
        "two user turns in a row",
    ),
    (
        "two assistants in a row",
        _msgs(_m(U, "a"), _m(A, "b"), _m(A, "c")),
        {},
        "line 1: messages[2].role",
        "two assistant turns in a row",
    ),
    (
        "ends with user",
        _msgs(_m(U, "a"), _m(A, "b"), _m(U, "c")),
        {},
        "line 1: messages[2].role",
        "must end with an assistant turn, got user",
    ),
    (
        "starts with assistant",
        _msgs(_m(S, "s"), _m(A, "b")),
        {},
        "line 1: messages[1].role",
        "must start with a user turn",
    ),
    (
        "system not first",
        _msgs(_m(U, "a"), _m(A, "b"), _m(S, "s")),
        {},
        "line 1: messages[2].role",
        "a system message is only allowed as the first message",
    ),
    (
        "two system messages",
        _msgs(_m(S, "a"), _m(S, "b"), _m(U, "q"), _m(A, "a")),
        {},
        "line 1: messages[1].role",
        "only allowed as the first message",
    ),
    # --- mixed formats and explicit override
    (
        "alpaca record in openai file",
        f"{G}\n{G}\n{G}\n{G}\n" + '{"instruction": "a", "output": "b"}\n',
        {},
        "line 5",
        'record is alpaca (has "instruction" and "output"), '
        "but the file is openai (detected from line 1)",
    ),
    (
        "explicit format mismatch",
        f"{G}\n",
        {"format": DatasetFormat.ALPACA},
        "line 1",
        'record is openai (has "messages"), but the file is alpaca (format set explicitly)',
    ),
    (
        "openai record with other keys only",
        f'{G}\n{{"msgs": []}}\n',
        {},
        "line 2: messages",
        "required field is missing",
    ),
    # --- JSON array
    (
        "array: unknown role",
        json.dumps([GOOD, {"messages": [_m("robot", "q"), _m(A, "a")]}]),
        {},
        "record[1].messages[0].role",
        'unknown role "robot"',
    ),
    (
        "array: mixed format",
        json.dumps([GOOD] * 4 + [{"text": "t"}]),
        {},
        "record[4]",
        'record is text (has "text"), but the file is openai (detected from record[0])',
    ),
    (
        "array: syntax error",
        f'[{G}, {{"messages": [}}]',
        {},
        "record[1]",
        "invalid JSON after 1 complete record: parse error",
    ),
    (
        "array: truncated",
        f"[{G}, {G}",
        {},
        "record[2]",
        "invalid JSON after 2 complete records: parse error: premature EOF",
    ),
    ("array: trailing garbage", f"[{G}] x", {}, "record[1]", "trailing garbage"),
    (
        "array: non-utf8",
        f"[{G},\n{G},\n".encode() + b'{"text": "\xc3\x28"}]',
        {},
        "record[2]",
        f"not valid UTF-8 (invalid continuation byte) at line 3, file offset {2 * len(G) + 15}",
    ),
    (
        "array: record over limit",
        json.dumps([GOOD, {"text": "x" * 200}]),
        SMALL,
        "record[1]",
        "record is larger than 128 bytes",
    ),
    (
        "array: runaway record",
        '[{"text": "' + "x" * 2_500_000 + '"}]',
        {"limits": IngestLimits(max_record_bytes=16)},
        "record[0]",
        "larger than 16 bytes (stopped reading here)",
    ),
    (
        "array: item not object",
        json.dumps([GOOD, "text"]),
        {},
        "record[1]",
        "must be a JSON object, got string",
    ),
    # --- Alpaca
    (
        "alpaca: output missing",
        '{"instruction": "a"}',
        {},
        "line 1: output",
        "required field is missing",
    ),
    ("alpaca: output empty", '{"instruction": "a", "output": " "}', {}, "line 1: output", "empty"),
    (
        "alpaca: instruction and input empty",
        '{"instruction": "", "input": " ", "output": "b"}',
        {},
        "line 1: instruction",
        "instruction and input are both empty",
    ),
    (
        "alpaca: instruction not string",
        '{"instruction": 3, "output": "b"}',
        {},
        "line 1: instruction",
        "must be a string, got number",
    ),
    (
        "alpaca: system not string",
        '{"instruction": "a", "output": "b", "system": 1}',
        {},
        "line 1: system",
        "must be a string, got number",
    ),
    (
        "alpaca: history not array",
        '{"instruction": "a", "output": "b", "history": "x"}',
        {},
        "line 1: history",
        "must be an array of [prompt, response] pairs, got string",
    ),
    (
        "alpaca: history pair too long",
        '{"instruction": "a", "output": "b", "history": [["q", "a", "z"]]}',
        {},
        "line 1: history[0]",
        "must be a [prompt, response] pair, got 3 items",
    ),
    (
        "alpaca: history response empty",
        '{"instruction": "a", "output": "b", "history": [["q", ""]]}',
        {},
        "line 1: history[0][1]",
        "content is empty or whitespace only",
    ),
    # --- ShareGPT
    (
        "sharegpt: unknown from",
        json.dumps({"conversations": [{"from": "observation", "value": "x"}]}),
        {},
        "line 1: conversations[0].from",
        'unknown role "observation" (expected human, gpt or system)',
    ),
    (
        "sharegpt: value empty",
        json.dumps(
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}
        ),
        {},
        "line 1: conversations[1].value",
        "empty",
    ),
    (
        "sharegpt: two system prompts",
        json.dumps(
            {
                "system": "a",
                "conversations": [
                    {"from": "system", "value": "b"},
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                ],
            }
        ),
        {},
        "line 1: system",
        "given both here and as conversations[0]",
    ),
    (
        "sharegpt: human twice",
        json.dumps(
            {
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                ]
            }
        ),
        {},
        "line 1: conversations[1].from",
        "two user turns in a row",
    ),
    # --- text
    ("text: empty", '{"text": ""}', {}, "line 1: text", "empty"),
    ("text: not string", '{"text": ["a"]}', {}, "line 1: text", "must be a string, got array"),
    (
        "txt: non-utf8 line",
        b"ok\n\xe4\xbd\n",
        {"filename": "a.txt"},
        "line 2",
        "not valid UTF-8 (unexpected end of data) at byte 0 of the line (file offset 3)",
    ),
    (
        "txt: line over limit",
        "short\n" + "y" * 200 + "\nshort\n",
        {"filename": "a.txt", **SMALL},
        "line 2",
        "record is larger than 128 bytes",
    ),
]


@pytest.mark.parametrize(
    ("data", "kwargs", "field", "words"),
    [pytest.param(d, k, f, w, id=i) for i, d, k, f, w in BAD_CORPUS],
)
def test_bad_input_corpus(data: bytes | str, kwargs: dict, field: str, words: str) -> None:
    kwargs = dict(kwargs)
    if isinstance(data, str):
        data = data.encode(kwargs.pop("_encoding", "utf-8"))
    error = rejected(data, **kwargs)
    assert [v.field for v in error.violations] == [field]
    assert words in error.violations[0].description
    assert "checked" in error.message


def test_good_records_around_a_bad_one_are_still_all_checked() -> None:
    data = jsonl(GOOD, chat((U, "a"), (U, "b")), GOOD, {"messages": [_m("robot", "x"), _m(A, "")]})
    error = rejected(data)
    assert [v.field for v in error.violations] == [
        "line 2: messages[1].role",
        "line 4: messages[0].role",
        "line 4: messages[1].content",
    ]
    assert error.message.startswith(
        "the openai dataset is invalid: 3 problems in 4 records checked"
    )


def test_violations_stop_at_max_violations() -> None:
    data = "{bad\n" * 50
    error = rejected(data)
    assert len(error.violations) == 20
    assert error.violations[-1].field == "line 20"
    assert "20 problems in 20 records checked (stopped after 20 problems)" in error.message

    error = rejected(data, limits=IngestLimits(max_violations=3))
    assert [v.field for v in error.violations] == ["line 1", "line 2", "line 3"]


def test_nothing_is_written_once_a_violation_is_found() -> None:
    sink = io.BytesIO()
    data = jsonl(GOOD, {"messages": []}, *[GOOD] * 5)
    with pytest.raises(InvalidArgument):
        normalize_dataset(io.BytesIO(data.encode()), sink)
    assert sink.getvalue().count(b"\n") <= 1  # only what preceded the problem, if anything


# ----------------------------------------------------------------------------- fast JSON path


def test_output_bytes_are_the_standard_librarys_for_every_code_point() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    records = [{"text": text[i : i + 50_000]} for i in range(0, len(text), 50_000)]
    _, out = ingest(jsonl(*records))
    compact = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records)
    assert out == "".join(line + "\n" for line in compact)


@pytest.mark.parametrize(
    "value", ["NaN", "-Infinity", "1e400", "123456789012345678901234567890", '"\\udc00"']
)
def test_values_only_the_standard_library_reads_are_accepted_in_other_fields(value: str) -> None:
    messages = (
        '"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'
    )
    result, out = ingest('{"id": ' + value + ", " + messages + "}\n")
    assert result.stats.record_count == 1
    assert out == json.dumps(chat((U, "q"), (A, "a")), separators=(",", ":")) + "\n"


# ----------------------------------------------------------------------------- bounded memory


class _CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.size += len(b)
        return len(b)


def _peak_while_ingesting(path: Path) -> tuple[int, IngestResult]:
    sink = _CountingSink()
    tracemalloc.start()
    try:
        with path.open("rb") as source:
            result = normalize_dataset(source, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > 0
    return peak, result


def _conversation(i: int) -> dict:
    return chat(
        (S, "You are a helpful assistant."),
        (U, f"Question {i}: " + "why? " * 40),
        (A, "Because. " * 40),
    )


@pytest.mark.slow
def test_bounded_memory_on_a_50_mb_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as f:
        i = 0
        while f.tell() < 50 << 20:
            f.write(json.dumps(_conversation(i)) + "\n")
            i += 1
    peak, result = _peak_while_ingesting(path)
    assert result.stats.record_count == i
    assert peak < 8 << 20, f"peak {peak} bytes for a {path.stat().st_size} byte file"


@pytest.mark.slow
def test_bounded_memory_on_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as f:
        f.write("[\n")
        i = 0
        while f.tell() < 20 << 20:
            f.write(("," if i else "") + json.dumps(_conversation(i), indent=2) + "\n")
            i += 1
        f.write("]\n")
    peak, result = _peak_while_ingesting(path)
    assert result.stats.record_count == i
    assert peak < 8 << 20, f"peak {peak} bytes for a {path.stat().st_size} byte file"

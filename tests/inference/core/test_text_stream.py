"""Incremental decoding and stop words held back across delta boundaries."""

from __future__ import annotations

import pytest

from danlu_inference.core.engine import FinishReason
from danlu_inference.core.text_stream import IncrementalDecoder, StopScanner, TextStream


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(
    "text", ["The quick brown fox jumps.", "我是一个由丹炉微调的个人助手。", "a  b\n\n c 🙂 d"]
)
def test_decoder_never_splits_characters(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def feed(scanner: StopScanner, pieces):
    return "".join(scanner.feed(p) for p in pieces) + scanner.flush()


def test_stop_word_split_across_deltas_is_cut_whole():
    scanner = StopScanner(("STOP",))
    assert feed(scanner, ["hello S", "T", "O", "P and more"]) == "hello "
    assert scanner.reason is FinishReason.STOP_WORD


def test_held_text_is_released_when_it_is_not_a_stop_word():
    scanner = StopScanner(("STOP",))
    out = [scanner.feed(p) for p in ["hello S", "T", "ash"]]
    assert out == ["hello ", "", "STash"] and scanner.reason is None
    assert scanner.feed("x") == "x" and scanner.flush() == ""


def test_earliest_stop_word_wins_and_contract_words_stop():
    scanner = StopScanner(("world",), ("<end>",))
    assert feed(scanner, ["say <end> hello world"]) == "say "
    assert scanner.reason is FinishReason.STOP


def test_text_stream_counts_tokens(tokenizer):
    ids = tokenizer("hello world, again", add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, stop_words=(", again",))
    emitted = [stream.push(i) for i in ids]
    tail = stream.flush()
    assert "".join(t for t, _ in [*emitted, tail]) == "hello world"
    assert stream.completion_tokens == len(ids) and stream.reason is FinishReason.STOP_WORD

"""Token ids -> text deltas, with stop words held back and cut.

Two small state machines every engine can use:

- :class:`IncrementalDecoder` turns generated token ids into text as they arrive without ever
  emitting half a UTF-8 character (byte-level BPE splits CJK characters and emoji across
  tokens) and without the spacing errors of decoding tokens one by one.
- :class:`StopScanner` finds stop words across delta boundaries. Text that could be the start
  of a stop word is held back until it is known not to be one, so a matched stop word never
  reaches the client, not even partly.
"""

from __future__ import annotations

from typing import Any

from danlu_inference.core.engine import FinishReason


class IncrementalDecoder:
    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add one token; returns the text it completes (often '', e.g. mid-character)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still undecoded at the end (a dangling partial character as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]


class StopScanner:
    """Feed text, get back the text that is safe to emit and, once matched, why to stop.

    ``stop_words`` end generation with STOP_WORD (the request's), ``contract_words`` with STOP
    (the serving contract's, e.g. ``<|im_end|>`` when it is not a special token).
    """

    def __init__(self, stop_words: tuple[str, ...] = (), contract_words: tuple[str, ...] = ()):
        self._words = [(w, FinishReason.STOP_WORD) for w in stop_words if w]
        self._words += [(w, FinishReason.STOP) for w in contract_words if w]
        self._held = ""
        self.reason: FinishReason | None = None

    def feed(self, text: str) -> str:
        if self.reason is not None:
            return ""
        buffer = self._held + text
        if not self._words:
            self._held = ""
            return buffer
        first: tuple[int, FinishReason] | None = None
        for word, reason in self._words:
            at = buffer.find(word)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, reason)
        if first is not None:
            self.reason = first[1]
            self._held = ""
            return buffer[: first[0]]
        keep = 0
        for word, _ in self._words:
            for n in range(min(len(word) - 1, len(buffer)), keep, -1):
                if buffer.endswith(word[:n]):
                    keep = n
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text at the end of generation (it turned out not to be a stop word)."""
        held, self._held = self._held, ""
        return "" if self.reason is not None else held


class TextStream:
    """Decoder + stop scanner: ``push(token_id)`` -> (text to emit, tokens it covers)."""

    def __init__(self, tokenizer: Any, stop_words=(), contract_words=()):
        self.decoder = IncrementalDecoder(tokenizer)
        self.scanner = StopScanner(tuple(stop_words), tuple(contract_words))
        self.completion_tokens = 0
        self._pending_tokens = 0

    @property
    def reason(self) -> FinishReason | None:
        return self.scanner.reason

    def push(self, token_id: int) -> tuple[str, int]:
        self.completion_tokens += 1
        self._pending_tokens += 1
        text = self.scanner.feed(self.decoder.push(token_id))
        if not text:
            return "", 0
        count, self._pending_tokens = self._pending_tokens, 0
        return text, count

    def flush(self) -> tuple[str, int]:
        text = self.scanner.feed(self.decoder.flush())
        text += self.scanner.flush()
        count, self._pending_tokens = self._pending_tokens, 0
        return text, count if text else 0

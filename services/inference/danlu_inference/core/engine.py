"""The engine port: what the core needs from a serving engine (vLLM, transformers).

An engine holds one loaded model and generates for many requests. The core does everything
else (names, templates, validation, admission, adapters' fetching and eviction), so adding an
engine means implementing :class:`EngineClient` and an :class:`EngineFactory`, nothing more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-sequence token or a stop word of the serving contract
    LENGTH = "length"  # max_new_tokens or the context length was reached
    STOP_WORD = "stop_word"  # a stop word of the request (not included in the text)
    CANCELLED = "cancelled"  # the client went away or the deployment is being deleted


@dataclass(frozen=True)
class Sampling:
    """Resolved sampling parameters (every default filled in by the core)."""

    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    max_new_tokens: int = 512
    seed: int | None = None
    repetition_penalty: float = 1.0
    # Request stop words end with FinishReason.STOP_WORD; the contract's end with STOP.
    stop_words: tuple[str, ...] = ()
    contract_stop_words: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class AdapterRef:
    """An adapter as the engine knows it: a stable id (derived from its digest) and a local
    directory in PEFT format."""

    adapter_id: str
    path: Path
    rank: int = 0


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: Sampling
    adapter: AdapterRef | None = None


@dataclass(frozen=True)
class TokenDelta:
    """Newly decoded text and how many generated tokens it came from."""

    text: str
    token_count: int


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class EngineHealth:
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class EngineUsage:
    """Counters for logs and metrics."""

    running: int = 0
    requests_total: int = 0
    prompt_tokens_total: int = 0
    completion_tokens_total: int = 0
    adapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineOptions:
    """Resolved engine options (see deployment.proto's EngineOptions)."""

    bits: int = 0
    dtype: str = ""  # "", "float16", "bfloat16", "float32"
    max_model_len: int = 0
    max_loras: int = 4
    max_lora_rank: int = 64
    max_num_seqs: int = 1
    gpu_memory_utilization: float = 0.9
    max_queue_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)


class EngineClient(Protocol):
    """One loaded model.

    ``generate`` yields :class:`TokenDelta` items then exactly one :class:`Finish`. When the
    consumer stops iterating (the client went away) the engine stops generating for it within
    one token. Stop words are not included in the text.
    """

    # The tokenizer the model was loaded with (a transformers tokenizer).
    tokenizer: Any
    # Longest prompt + completion, in tokens.
    max_model_len: int

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenDelta | Finish]: ...

    async def add_adapter(self, adapter: AdapterRef) -> None: ...

    async def remove_adapter(self, adapter_id: str) -> None: ...

    def health(self) -> EngineHealth: ...

    def usage(self) -> EngineUsage: ...

    async def close(self) -> None:
        """Stop generating (in-flight requests finish with CANCELLED) and free the model."""


class EngineFactory(Protocol):
    """Loads a model directory into an engine (blocking; the core runs it in a thread)."""

    name: str

    def available(self) -> str | None:
        """None when the engine can run here, else why not (e.g. the package is missing)."""

    def load(self, model_dir: Path, options: EngineOptions) -> EngineClient: ...

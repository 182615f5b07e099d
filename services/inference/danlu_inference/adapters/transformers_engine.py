"""The transformers engine: any model transformers loads, adapters through peft, bits=4/8
through bitsandbytes. Simple and correct; the embedded default and the fallback where vLLM is
absent.

One worker thread per engine runs everything that touches the model: generation (transformers'
own ``generate``, so answers equal what a user gets from transformers directly), adapter loads
and unloads. Requests are therefore served one at a time per deployment, and switching the
active peft adapter between requests can never corrupt a running generation; the core's
admission queue holds the others ("queues, never corrupts").

Streaming: a ``BaseStreamer`` receives each new token in the worker thread, decodes it
incrementally, holds back possible stop words and hands text deltas to the event loop. A
``StoppingCriteria`` bound to the request's cancel event ends ``generate`` within one token when
the client goes away, a stop word matched, or the engine is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from danlu_inference.core.engine import (
    AdapterRef,
    EngineHealth,
    EngineOptions,
    EngineUsage,
    Finish,
    FinishReason,
    GenerationRequest,
    TokenDelta,
)
from danlu_inference.core.text_stream import TextStream

log = logging.getLogger(__name__)

# torch's default generator is process-wide: sampled (seeded or not) generations from different
# deployments take turns so that a seed reproduces its answer.
_RNG_LOCK = threading.Lock()

_DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}


class TransformersEngineFactory:
    """``torch_threads``: intra-op threads of each engine's worker thread (0: torch's default).
    On a small shared CPU one thread is several times faster than two that contend."""

    name = "transformers"

    def __init__(self, torch_threads: int = 0):
        self.torch_threads = torch_threads

    def available(self) -> str | None:
        return None  # transformers and torch are dependencies of the service

    def load(self, model_dir: Path, options: EngineOptions) -> TransformersEngine:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available()
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if options.dtype:
            kwargs["dtype"] = getattr(torch, _DTYPES[options.dtype])
        else:
            kwargs["dtype"] = "auto" if cuda else torch.float32
        if options.bits:
            from transformers import BitsAndBytesConfig

            compute = kwargs["dtype"] if not isinstance(kwargs["dtype"], str) else torch.float16
            kwargs["quantization_config"] = (
                BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=compute,
                    bnb_4bit_use_double_quant=True,
                )
                if options.bits == 4
                else BitsAndBytesConfig(load_in_8bit=True)
            )
            if cuda:
                kwargs["device_map"] = {"": 0}
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if cuda and not options.bits:
            model = model.to("cuda")
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        context = int(getattr(config, "max_position_embeddings", 0) or 0) or 2048
        max_len = min(options.max_model_len or context, context)
        return TransformersEngine(model, tokenizer, max_len, options, self.torch_threads)


def _set_threads(n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)  # OpenMP: applies to this (the worker) thread


# Text deltas after the first are sent at most this often (the text of the tokens decoded in
# between travels as one delta). Each delta wakes the event loop and becomes one gRPC message,
# whose handling holds the GIL that this engine's generation loop (mostly Python at small
# sizes) needs: one message per token cost ~10% of the tokens/s on 2 cores
# (benchmarks/serve.py). The first delta goes at once; none waits longer than this or one
# token.
EMIT_INTERVAL_S = 0.05


class _Streamer:
    """transformers streamer protocol (``put``/``end``), run in the worker thread."""

    def __init__(
        self,
        stream: TextStream,
        emit,
        cancel: threading.Event,
        eos_ids: set[int],
        interval: float = EMIT_INTERVAL_S,
    ):
        self.stream = stream
        self.emit = emit
        self.cancel = cancel
        self.eos_ids = eos_ids
        self.interval = interval
        self.prompt_seen = False
        self.last_token: int | None = None
        self._text: list[str] = []
        self._count = 0
        self._sent_at = float("-inf")

    def add(self, text: str, count: int) -> None:
        """Queue decoded text; send what is queued when the interval has passed."""
        if text:
            self._text.append(text)
            self._count += count
        if self._text and time.monotonic() - self._sent_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self._text:
            self.emit(TokenDelta("".join(self._text), self._count))
            self._text, self._count = [], 0
            self._sent_at = time.monotonic()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.last_token = token_id
            if token_id in self.eos_ids:
                self.stream.completion_tokens += 1
                continue
            text, count = self.stream.push(token_id)
            self.add(text, count)
            if self.stream.reason is not None:
                self.cancel.set()  # stop word: end generate() after this token

    def end(self) -> None:
        pass


class _StopWhen:
    """A StoppingCriteria that reads the cancel event."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full(
            (input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device
        )


class TransformersEngine:
    def __init__(
        self, model, tokenizer, max_model_len: int, options: EngineOptions, torch_threads: int = 0
    ):
        self.model = model  # the base model, or the PeftModel wrapping it once an adapter loads
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.options = options
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="transformers",
            initializer=_set_threads,
            initargs=(torch_threads,),
        )
        self._adapters: dict[str, AdapterRef] = {}
        self._cancels: set[threading.Event] = set()
        self._closed = False
        self._error: str = ""
        self._running = 0
        self._requests = self._prompt_tokens = self._completion_tokens = 0
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = getattr(gen, "pad_token_id", None)
        self._pad_id = pad if pad is not None else tokenizer.pad_token_id
        if self._pad_id is None and self._eos_ids:
            self._pad_id = min(self._eos_ids)

    # -- adapters (in the worker thread, between generations) ----------------------------

    async def add_adapter(self, adapter: AdapterRef) -> None:
        if adapter.adapter_id in self._adapters:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load_adapter, adapter)
        self._adapters[adapter.adapter_id] = adapter

    def _load_adapter(self, adapter: AdapterRef) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(adapter.path), adapter_name=adapter.adapter_id)
        else:
            self.model = PeftModel.from_pretrained(
                self.model, str(adapter.path), adapter_name=adapter.adapter_id
            )
        self.model.eval()

    async def remove_adapter(self, adapter_id: str) -> None:
        if self._adapters.pop(adapter_id, None) is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._delete_adapter, adapter_id)

    def _delete_adapter(self, adapter_id: str) -> None:
        if adapter_id in getattr(self.model, "peft_config", {}):
            self.model.delete_adapter(adapter_id)

    # -- generation -----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        if self._closed:
            yield Finish(FinishReason.CANCELLED, len(request.prompt_ids), 0)
            return
        self._cancels.add(cancel)
        loop.run_in_executor(self._executor, self._run, request, cancel, emit)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finish):
                    return
        finally:
            cancel.set()  # the client went away (or we are done): stop within one token
            self._cancels.discard(cancel)

    def _run(self, request: GenerationRequest, cancel: threading.Event, emit) -> None:
        prompt_tokens = len(request.prompt_ids)
        if cancel.is_set() or self._closed:
            emit(Finish(FinishReason.CANCELLED, prompt_tokens, 0))
            return
        self._running += 1
        try:
            finish = self._generate(request, cancel, emit)
        except Exception as exc:
            log.exception("generation failed", extra={"request": request.request_id})
            self._error = f"{type(exc).__name__}: {exc}"
            emit(exc)
            return
        finally:
            self._running -= 1
        self._requests += 1
        self._prompt_tokens += finish.prompt_tokens
        self._completion_tokens += finish.completion_tokens
        emit(finish)

    def _generate(self, request: GenerationRequest, cancel: threading.Event, emit) -> Finish:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        s = request.sampling
        stream = TextStream(self.tokenizer, s.stop_words, s.contract_stop_words)
        stop_ids = set(self._eos_ids)
        special = set(getattr(self.tokenizer, "all_special_tokens", ()))
        for word in s.contract_stop_words:  # special-token stop words never reach the text
            if word in special:
                stop_ids.add(self.tokenizer.convert_tokens_to_ids(word))
        streamer = _Streamer(stream, emit, cancel, stop_ids)
        config = GenerationConfig(
            max_new_tokens=s.max_new_tokens,
            do_sample=not s.greedy,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=self._pad_id,
            repetition_penalty=s.repetition_penalty,
        )
        if not s.greedy:
            config.temperature = s.temperature
            config.top_p = s.top_p
            config.top_k = s.top_k or None
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=device)
        model = self.model
        select = contextlib.nullcontext()
        if request.adapter is not None:
            if request.adapter.adapter_id not in getattr(model, "peft_config", {}):
                self._load_adapter(request.adapter)
                self._adapters[request.adapter.adapter_id] = request.adapter
                model = self.model
            model.set_adapter(request.adapter.adapter_id)
        elif hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
            select = model.disable_adapter()
        rng = contextlib.nullcontext() if s.greedy else _RNG_LOCK
        with rng, select, torch.inference_mode():
            if not s.greedy:
                if s.seed is not None:
                    torch.manual_seed(s.seed)
                else:
                    torch.seed()
            model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_StopWhen(cancel)]),
            )
        streamer.add(*stream.flush())
        streamer.flush()
        if stream.reason is not None:
            reason = stream.reason
        elif streamer.last_token is not None and streamer.last_token in stop_ids:
            reason = FinishReason.STOP
        elif cancel.is_set():
            reason = FinishReason.CANCELLED
        else:
            reason = FinishReason.LENGTH
        return Finish(reason, len(request.prompt_ids), stream.completion_tokens)

    # -- state ----------------------------------------------------------------------------

    def health(self) -> EngineHealth:
        if self._closed:
            return EngineHealth(False, "closed")
        return EngineHealth(True, self._error)

    def usage(self) -> EngineUsage:
        return EngineUsage(
            running=self._running,
            requests_total=self._requests,
            prompt_tokens_total=self._prompt_tokens,
            completion_tokens_total=self._completion_tokens,
            adapters=tuple(self._adapters),
        )

    async def close(self) -> None:
        self._closed = True
        for cancel in list(self._cancels):
            cancel.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self.model = None

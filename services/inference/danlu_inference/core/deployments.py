"""Deployment use cases: create (load in the background), get, list, delete, load/unload
adapters, and chat/generate with admission control.

The pieces a request goes through, in order:

1. the deployment must be READY (``DEPLOYMENT_NOT_READY`` otherwise);
2. messages and sampling are validated (INVALID_ARGUMENT naming the field);
3. admission: at most ``max_num_seqs`` generate and ``max_queue_size`` wait, beyond that
   RESOURCE_EXHAUSTED / ``QUEUE_FULL`` (checked before any work, so a full deployment sheds
   load cheaply);
4. the adapter, if any, is resolved through the registry **on every request** (its current
   digest), checked against the deployment's base, fetched into the digest-keyed cache and
   loaded on the engine on first use; the least recently used idle adapter is unloaded beyond
   ``max_loras``;
5. the chat template (request > adapter contract > model contract > tokenizer) renders the
   prompt, whose length is checked against the context;
6. the engine streams; when the consumer stops iterating (the client went away) generation
   stops and the slot is freed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from danlu_inference.core.adapters_cache import (
    ArtifactCache,
    LoadedAdapter,
    LoadedAdapters,
    adapter_id,
    check_adapter,
    check_rank,
)
from danlu_inference.core.artifacts import (
    ArtifactInfo,
    ModelSource,
    info_from_dict,
    info_to_dict,
)
from danlu_inference.core.engine import (
    AdapterRef,
    EngineClient,
    EngineFactory,
    EngineOptions,
    Finish,
    FinishReason,
    GenerationRequest,
    TokenDelta,
)
from danlu_inference.core.prompts import (
    Message,
    SamplingInput,
    check_messages,
    choose_template,
    fit_to_context,
    render_chat,
    resolve_sampling,
    tokenize_raw,
)
from danlu_inference.core.records import DeploymentRecord
from danlu_kit.errors import (
    Aborted,
    DanluError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from danlu_kit.names import check_id
from danlu_kit.threads import OffloadPool

log = logging.getLogger(__name__)

ENGINE_DEFAULT_SEQS = {"vllm": 256, "transformers": 1}
DTYPES = ("", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class CreateInput:
    project: str
    model: str  # projects/{p}/models/{m}
    deployment_id: str = ""
    engine: str = ""  # "" (the default engine), transformers, vllm
    options: dict = field(default_factory=dict)  # EngineOptions fields, 0/"" meaning default
    request_id: str = ""


@dataclass(frozen=True)
class ChatInput:
    messages: list[Message]
    adapter: str = ""
    system: str = ""
    chat_template: str = ""
    sampling: SamplingInput = field(default_factory=SamplingInput)
    request_id: str = ""


@dataclass(frozen=True)
class GenerateInput:
    prompt: str
    adapter: str = ""
    sampling: SamplingInput = field(default_factory=SamplingInput)
    request_id: str = ""


@dataclass
class DeploymentView:
    """A deployment as the API shows it: the stored record plus what is loaded right now."""

    record: DeploymentRecord
    adapters: list[LoadedAdapter] = field(default_factory=list)


class Admission:
    """``running`` requests generate at once, ``waiting`` more may queue; beyond: QUEUE_FULL."""

    def __init__(self, running: int, waiting: int):
        self.running = running
        self.waiting = waiting
        self._slots = asyncio.Semaphore(running)
        self.inside = 0

    def enter(self, deployment: str) -> None:
        if self.inside >= self.running + self.waiting:
            raise ResourceExhausted(
                f"{deployment} is busy: {self.running} generating and {self.waiting} waiting; "
                "retry later",
                reason="QUEUE_FULL",
                metadata={"retry_after_seconds": "1"},
            )
        self.inside += 1

    async def acquire(self) -> None:
        await self._slots.acquire()

    def release(self, acquired: bool) -> None:
        if acquired:
            self._slots.release()
        self.inside -= 1


@dataclass
class Runtime:
    """A READY deployment's live parts."""

    record: DeploymentRecord
    model: ArtifactInfo
    engine: EngineClient
    options: EngineOptions
    admission: Admission
    adapters: LoadedAdapters
    adapter_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retired: list[LoadedAdapter] = field(default_factory=list)
    closing: bool = False


def _error_dict(err: DanluError) -> dict:
    return {"code": err.code_name, "message": err.message, "reason": err.reason}


class Deployments:
    def __init__(
        self,
        repo,
        source: ModelSource,
        cache: ArtifactCache,
        factories: dict[str, EngineFactory],
        *,
        default_engine: str = "transformers",
        max_queue: int = 64,
        max_loras: int = 4,
        offload_threads: int = 16,
    ):
        self.repo = repo
        self.source = source
        self.cache = cache
        self.factories = factories
        self.default_engine = default_engine
        self.max_queue = max_queue
        self.max_loras = max_loras
        self._runtimes: dict[tuple[str, str], Runtime] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}
        self._deleting: set[tuple[str, str]] = set()
        # Adapter revisions seen, by digest (their contracts never change for a digest).
        self._adapter_infos: dict[str, ArtifactInfo] = {}
        # Registry calls and engine loads run in this core's own threads (see OffloadPool).
        self._pool = OffloadPool(offload_threads, "offload")

    async def _offload(self, fn, *args):
        return await self._pool.run(fn, *args)

    # -- lifecycle ------------------------------------------------------------------------

    def resolve_options(self, engine: str, given: dict, model: ArtifactInfo) -> EngineOptions:
        """Validate requested options (``deployment.options.*``) and fill in the defaults."""
        prefix = "deployment.options"
        violations = []

        def bad(name: str, description: str) -> None:
            violations.append(FieldViolation(f"{prefix}.{name}", description))

        def get(name: str, default=0):
            return given.get(name) or default

        bits = int(get("bits"))
        if bits not in (0, 4, 8):
            bad("bits", f"{bits}: must be 0 (none), 4 or 8")
        dtype = get("dtype", "")
        if dtype not in DTYPES:
            bad("dtype", f"{dtype!r}: must be one of float16, bfloat16, float32")
        for name in ("max_model_len", "max_loras", "max_lora_rank", "max_num_seqs"):
            if int(get(name)) < 0:
                bad(name, "must not be negative")
        if int(get("max_queue_size")) < 0:
            bad("max_queue_size", "must not be negative")
        gmu = float(get("gpu_memory_utilization", 0.0))
        if not 0 <= gmu <= 1:
            bad("gpu_memory_utilization", f"{gmu}: must be in (0, 1]")
        max_len = int(get("max_model_len"))
        if model.max_context_length and max_len > model.max_context_length:
            bad(
                "max_model_len",
                f"{max_len} is beyond the model's context length {model.max_context_length}",
            )
        seqs = int(get("max_num_seqs")) or ENGINE_DEFAULT_SEQS[engine]
        if engine == "transformers" and seqs > 1:
            bad(
                "max_num_seqs",
                "the transformers engine generates one sequence at a time (others queue); "
                "use the vllm engine to batch",
            )
        if violations:
            raise InvalidArgument.from_violations("INVALID_OPTIONS", violations)
        return EngineOptions(
            bits=bits,
            dtype=dtype,
            max_model_len=max_len or model.max_context_length,
            max_loras=int(get("max_loras")) or self.max_loras,
            max_lora_rank=int(get("max_lora_rank")) or 64,
            max_num_seqs=seqs,
            gpu_memory_utilization=gmu or 0.9,
            max_queue_size=int(get("max_queue_size")) or self.max_queue,
        )

    def _engine_name(self, requested: str) -> str:
        engine = requested or self.default_engine
        factory = self.factories.get(engine)
        why = "not built into this server" if factory is None else factory.available()
        if why:
            raise FailedPrecondition(
                f"the {engine} engine is not available here: {why}",
                reason="ENGINE_UNAVAILABLE",
                metadata={"engine": engine},
            )
        return engine

    async def create(self, inp: CreateInput) -> DeploymentView:
        if inp.request_id:
            existing = await asyncio.to_thread(
                self.repo.find_by_request_id, inp.project, inp.request_id
            )
            if existing is not None:
                return self._view(existing)
        deployment_id = inp.deployment_id or ""
        if deployment_id:
            check_id(deployment_id, "deployment_id")
        info = await self._offload(self.source.get, inp.model)
        if info.kind == "adapter":
            raise FailedPrecondition(
                f"{inp.model} is an adapter: deploy its base model and name the adapter per "
                "request (or merge it first)",
                reason="MODEL_IS_ADAPTER",
                metadata={"base_model": info.parent_model},
            )
        engine = self._engine_name(inp.engine)
        options = self.resolve_options(engine, inp.options, info)
        if not deployment_id:
            model_id = inp.model.rsplit("/", 1)[-1]
            deployment_id = f"{model_id[:50]}-{uuid.uuid4().hex[:6]}"
        record = DeploymentRecord(
            project=inp.project,
            deployment_id=deployment_id,
            model=inp.model,
            engine=engine,
            options=vars(options) | {"extra": {}},
            state="creating",
            model_digest=info.digest,
            model_info=info_to_dict(info),
            request_id=inp.request_id,
        )
        record = await asyncio.to_thread(self.repo.insert, record)
        log.info("deployment created", extra={"deployment": record.name, "engine": engine})
        self._start_loading(record)
        return self._view(record)

    def _start_loading(self, record: DeploymentRecord) -> None:
        key = (record.project, record.deployment_id)
        self._tasks[key] = asyncio.get_running_loop().create_task(self._load(record))

    async def _load(self, record: DeploymentRecord) -> None:
        key = (record.project, record.deployment_id)
        options = EngineOptions(**{k: v for k, v in record.options.items() if k != "extra"})
        try:
            info = info_from_dict(record.model_info)
            path = self.cache.cached(info.digest)
            if path is None:
                info, path = await self._fetch_current(info)
            self.cache.pin(info.digest)
            factory = self.factories[record.engine]
            engine = await self._offload(factory.load, path, options)
            if options.max_model_len == 0 or options.max_model_len > engine.max_model_len:
                options = EngineOptions(**{**vars(options), "max_model_len": engine.max_model_len})
            updated = None
            if key not in self._deleting:
                updated = await asyncio.to_thread(
                    self.repo.update,
                    record.project,
                    record.deployment_id,
                    only_if_state="creating",
                    state="ready",
                    error=None,
                    model_digest=info.digest,
                    model_info=info_to_dict(info),
                    options=vars(options) | {"extra": {}},
                )
            if updated is None or key in self._deleting:  # deleted while it was loading
                await engine.close()
                self.cache.unpin(info.digest)
                return
            self._runtimes[key] = Runtime(
                record=updated,
                model=info,
                engine=engine,
                options=options,
                admission=Admission(options.max_num_seqs, options.max_queue_size),
                adapters=LoadedAdapters(options.max_loras),
            )
            log.info("deployment ready", extra={"deployment": record.name})
        except Exception as exc:
            if isinstance(exc, DanluError):
                error = _error_dict(exc)
            else:
                log.exception("deployment failed to load", extra={"deployment": record.name})
                error = {
                    "code": "INTERNAL",
                    "message": f"the engine failed to load the model: {type(exc).__name__}: {exc}",
                    "reason": "ENGINE_LOAD_FAILED",
                }
            if key not in self._deleting:
                await asyncio.to_thread(
                    self.repo.update,
                    record.project,
                    record.deployment_id,
                    only_if_state="creating",
                    state="failed",
                    error=error,
                )
        finally:
            self._tasks.pop(key, None)

    async def _fetch_current(self, info: ArtifactInfo) -> tuple[ArtifactInfo, Any]:
        """Fetch ``info``'s revision, or the current one when it was replaced since."""
        for _attempt in range(3):
            try:
                return info, await self._offload(self.cache.fetch, info)
            except (Aborted, NotFound):
                current = await self._offload(self.source.get, info.name)
                if current.digest == info.digest:
                    raise
                info = current
        raise Aborted(f"{info.name} keeps changing; retry", reason="ARTIFACT_CHANGED")

    async def restore(self) -> None:
        """After a restart: reload every deployment that was creating or ready."""
        for record in await asyncio.to_thread(self.repo.all):
            if record.state == "deleting":
                await asyncio.to_thread(self.repo.delete, record.project, record.deployment_id)
            elif record.state in ("creating", "ready"):
                record = await asyncio.to_thread(
                    self.repo.update, record.project, record.deployment_id, state="creating"
                )
                if record is not None:
                    self._start_loading(record)

    def _view(self, record: DeploymentRecord) -> DeploymentView:
        rt = self._runtimes.get((record.project, record.deployment_id))
        if record.state == "ready" and rt is None:
            # Stored as ready by a previous run of this process; reloading now (see restore).
            record = replace(record, state="creating")
        return DeploymentView(record, rt.adapters.entries() if rt else [])

    async def get(self, project: str, deployment_id: str) -> DeploymentView:
        record = await asyncio.to_thread(self.repo.get, project, deployment_id)
        if record is None:
            raise NotFound(
                f"projects/{project}/deployments/{deployment_id} not found",
                reason="DEPLOYMENT_NOT_FOUND",
            )
        return self._view(record)

    async def list(self, project: str, after: str | None, limit: int) -> list[DeploymentView]:
        records = await asyncio.to_thread(self.repo.list, project, after, limit)
        return [self._view(r) for r in records]

    async def delete(self, project: str, deployment_id: str) -> None:
        await self.get(project, deployment_id)
        key = (project, deployment_id)
        self._deleting.add(key)
        try:
            await asyncio.to_thread(self.repo.update, project, deployment_id, state="deleting")
            rt = self._runtimes.pop(key, None)
            if rt is not None:
                await self._close_runtime(rt)
            await asyncio.to_thread(self.repo.delete, project, deployment_id)
        finally:
            self._deleting.discard(key)
        log.info("deployment deleted", extra={"deployment": f"projects/{project}/{deployment_id}"})

    async def _close_runtime(self, rt: Runtime) -> None:
        rt.closing = True
        await rt.engine.close()
        self.cache.unpin(rt.model.digest)
        for entry in [*rt.adapters.entries(), *rt.retired]:
            self.cache.unpin(entry.digest)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for key in list(self._runtimes):
            await self._close_runtime(self._runtimes.pop(key))
        self._pool.shutdown()

    # -- adapters -------------------------------------------------------------------------

    def _ready(self, project: str, deployment_id: str, record: DeploymentRecord) -> Runtime:
        rt = self._runtimes.get((project, deployment_id))
        if rt is None or rt.closing or record.state != "ready":
            raise FailedPrecondition(
                f"{record.name} is {record.state}, not ready",
                reason="DEPLOYMENT_NOT_READY",
                metadata={"state": record.state},
            )
        health = rt.engine.health()
        if not health.healthy:
            raise FailedPrecondition(
                f"{record.name}: the engine is unhealthy: {health.detail}",
                reason="DEPLOYMENT_NOT_READY",
                metadata={"state": "unhealthy"},
            )
        return rt

    async def _runtime(self, project: str, deployment_id: str) -> Runtime:
        view = await self.get(project, deployment_id)
        return self._ready(project, deployment_id, view.record)

    async def _resolve_adapter(self, rt: Runtime, name: str, field_name: str) -> ArtifactInfo:
        info = await self._offload(self.source.get, name)
        check_adapter(
            info,
            deployment_model=rt.model.name,
            deployment_digest=rt.model.digest,
            field=field_name,
        )
        return info

    async def _acquire_adapter(
        self, rt: Runtime, name: str, field_name: str = "adapter"
    ) -> LoadedAdapter:
        """The adapter loaded at its current revision, marked in use (release it after)."""
        info = await self._resolve_adapter(rt, name, field_name)
        async with rt.adapter_lock:
            entry = rt.adapters.get(name, info.digest)
            if entry is None:
                info, path = await self._fetch_current(info)
                rank = check_rank(info, path, rt.options.max_lora_rank, field_name)
                ref = AdapterRef(adapter_id(info.digest), path, rank)
                self._adapter_infos[info.digest] = info
                self.cache.pin(info.digest)
                try:
                    await rt.engine.add_adapter(ref)
                except Exception:
                    self.cache.unpin(info.digest)
                    raise
                if stale := rt.adapters.pop(name):
                    rt.retired.append(stale)  # an older revision: unloaded once idle
                entry = LoadedAdapter(name=name, digest=info.digest, ref=ref)
                rt.adapters.add(entry)
                log.info("adapter loaded", extra={"adapter": name, "digest": info.digest})
            entry.in_use += 1
            rt.adapters.touch(entry)
        return entry

    def _release_adapter(self, rt: Runtime, entry: LoadedAdapter) -> None:
        entry.in_use -= 1
        if not rt.closing:
            asyncio.get_running_loop().create_task(self._sweep(rt))

    async def _sweep(self, rt: Runtime) -> None:
        """Unload retired revisions and LRU victims that are idle."""
        async with rt.adapter_lock:
            idle = [e for e in rt.retired if e.in_use == 0]
            rt.retired = [e for e in rt.retired if e.in_use > 0]
            for victim in rt.adapters.victims():
                rt.adapters.pop(victim.name)
                idle.append(victim)
            live = {e.ref.adapter_id for e in [*rt.adapters.entries(), *rt.retired]}
            for entry in idle:
                if entry.ref.adapter_id not in live and not rt.closing:
                    await rt.engine.remove_adapter(entry.ref.adapter_id)
                self.cache.unpin(entry.digest)
                log.info("adapter unloaded", extra={"adapter": entry.name, "digest": entry.digest})

    async def load_adapter(self, project: str, deployment_id: str, name: str) -> DeploymentView:
        rt = await self._runtime(project, deployment_id)
        entry = await self._acquire_adapter(rt, name)
        self._release_adapter(rt, entry)
        return await self.get(project, deployment_id)

    async def unload_adapter(self, project: str, deployment_id: str, name: str) -> DeploymentView:
        view = await self.get(project, deployment_id)
        rt = self._runtimes.get((project, deployment_id))
        if rt is not None:
            async with rt.adapter_lock:
                if entry := rt.adapters.pop(name):
                    rt.retired.append(entry)  # requests using it finish first
            await self._sweep(rt)
            view = await self.get(project, deployment_id)
        return view

    # -- generation -----------------------------------------------------------------------

    async def chat(
        self, project: str, deployment_id: str, inp: ChatInput
    ) -> AsyncIterator[TokenDelta | Finish]:
        rt = await self._runtime(project, deployment_id)
        check_messages(inp.messages)
        resolve_sampling(inp.sampling, {})  # validate before any work

        async def prepare(adapter: LoadedAdapter | None):
            adapter_contract = None
            if adapter is not None:
                adapter_contract = (await self._resolve_cached(rt, adapter)).contract
            model_contract = rt.model.contract
            template = choose_template(
                rt.engine.tokenizer,
                requested=inp.chat_template,
                adapter_template=adapter_contract.chat_template if adapter_contract else "",
                model_template=model_contract.chat_template,
            )
            prompt = render_chat(rt.engine.tokenizer, inp.messages, template, system=inp.system)
            stops = set(model_contract.stop_words) | set(template.stop_words)
            defaults = model_contract.generation_defaults()
            if adapter_contract is not None:
                stops |= set(adapter_contract.stop_words)
                defaults = defaults | adapter_contract.generation_defaults()
            return prompt.ids, defaults, tuple(sorted(stops))

        async for item in self._generate(
            rt, inp.adapter, inp.sampling, inp.request_id, prepare, "messages"
        ):
            yield item

    async def generate(
        self, project: str, deployment_id: str, inp: GenerateInput
    ) -> AsyncIterator[TokenDelta | Finish]:
        rt = await self._runtime(project, deployment_id)
        resolve_sampling(inp.sampling, {})
        if not inp.prompt:
            tokenize_raw(rt.engine.tokenizer, inp.prompt)  # raises: prompt is empty

        async def prepare(adapter: LoadedAdapter | None):
            defaults = rt.model.contract.generation_defaults()
            stops = set(rt.model.contract.stop_words)
            if adapter is not None:
                contract = (await self._resolve_cached(rt, adapter)).contract
                defaults = defaults | contract.generation_defaults()
                stops |= set(contract.stop_words)
            prompt = tokenize_raw(rt.engine.tokenizer, inp.prompt)
            return prompt.ids, defaults, tuple(sorted(stops))

        async for item in self._generate(
            rt, inp.adapter, inp.sampling, inp.request_id, prepare, "prompt"
        ):
            yield item

    async def _resolve_cached(self, rt: Runtime, adapter: LoadedAdapter) -> ArtifactInfo:
        # The contract travels with the revision; _acquire_adapter just resolved it.
        return self._adapter_infos.get(adapter.digest) or await self._resolve_adapter(
            rt, adapter.name, "adapter"
        )

    async def _generate(
        self, rt: Runtime, adapter_name, sampling_in, request_id, prepare, prompt_field: str
    ):
        name = rt.record.name
        rt.admission.enter(name)
        acquired = False
        adapter: LoadedAdapter | None = None
        prompt_tokens = 0
        try:
            if adapter_name:
                adapter = await self._acquire_adapter(rt, adapter_name)
            prompt_ids, defaults, stops = await prepare(adapter)
            prompt_tokens = len(prompt_ids)
            sampling = resolve_sampling(sampling_in, defaults, stops)
            sampling = fit_to_context(
                sampling,
                prompt_tokens,
                rt.options.max_model_len or rt.engine.max_model_len,
                prompt_field=prompt_field,
            )
            await rt.admission.acquire()
            acquired = True
            if rt.closing:
                yield Finish(FinishReason.CANCELLED, prompt_tokens, 0)
                return
            request = GenerationRequest(
                request_id=request_id or uuid.uuid4().hex[:16],
                prompt_ids=prompt_ids,
                sampling=sampling,
                adapter=adapter.ref if adapter else None,
            )
            async for item in rt.engine.generate(request):
                yield item
        finally:
            rt.admission.release(acquired)
            if adapter is not None:
                self._release_adapter(rt, adapter)

    # -- names as OpenAI clients spell them -------------------------------------------------

    async def resolve_alias(self, project: str, model: str) -> tuple[str, str]:
        """``DEPLOYMENT``, ``MODEL`` (a deployed model), ``BASE:ADAPTER`` or an adapter's
        registry name -> (deployment id, adapter resource name or "")."""
        base, sep, adapter = model.partition(":")
        if sep and not (base and adapter):
            raise InvalidArgument.from_violations(
                "INVALID_MODEL", [FieldViolation("model", "expected BASE:ADAPTER")]
            )
        deployment_id = await self._find_deployment(project, base)
        if sep:
            return self._required(deployment_id, model), f"projects/{project}/models/{adapter}"
        if deployment_id:
            return deployment_id, ""
        # An adapter addressed by its registry name: served by a deployment of its base.
        info = await self._offload(self.source.get, f"projects/{project}/models/{base}")
        if info.kind == "adapter":
            for rt in self._ready_runtimes(project):
                digest = info.contract.base_model_digest
                if (digest and digest == rt.model.digest) or (
                    not digest and info.parent_model == rt.model.name
                ):
                    return rt.record.deployment_id, info.name
            raise FailedPrecondition(
                f"no ready deployment serves the base of adapter {base}; deploy "
                f"{info.parent_model or 'its base model'} first",
                reason="DEPLOYMENT_NOT_READY",
            )
        return self._required("", model), ""

    def _ready_runtimes(self, project: str) -> list[Runtime]:
        return [
            rt
            for (p, _), rt in sorted(self._runtimes.items())
            if p == project and not rt.closing and rt.record.state == "ready"
        ]

    async def _find_deployment(self, project: str, name: str) -> str:
        if (project, name) in self._runtimes:
            return name
        record = await asyncio.to_thread(self.repo.get, project, name)
        if record is not None:
            return name
        for rt in self._ready_runtimes(project):  # a deployed model's id
            if rt.model.name == f"projects/{project}/models/{name}":
                return rt.record.deployment_id
        return ""

    @staticmethod
    def _required(deployment_id: str, model: str) -> str:
        if not deployment_id:
            raise NotFound(
                f"model {model!r} is neither a deployment, a deployed model nor an adapter",
                reason="MODEL_NOT_FOUND",
            )
        return deployment_id

    def ready_views(self, project: str) -> list[DeploymentView]:
        return [
            DeploymentView(rt.record, rt.adapters.entries()) for rt in self._ready_runtimes(project)
        ]

"""Composition root of the inference service: settings -> adapters -> core -> components."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from grpc import aio

from danlu.inference.v1 import inference_service_pb2, inference_service_pb2_grpc
from danlu_inference.adapters.db import DeploymentRepository
from danlu_inference.adapters.registry_source import RegistrySource
from danlu_inference.adapters.transformers_engine import TransformersEngineFactory
from danlu_inference.adapters.vllm_engine import VllmEngineFactory
from danlu_inference.api import InferenceServicer
from danlu_inference.core.adapters_cache import ArtifactCache
from danlu_inference.core.deployments import Deployments
from danlu_inference.openai_http import OpenAIEndpoint
from danlu_inference.settings import InferenceSettings
from danlu_kit.db import make_engine

log = logging.getLogger(__name__)

SERVICE_NAME = inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


@dataclass
class InferenceComponent:
    """The inference service as a server component (see danlu_kit.server.Component).

    ``register`` runs inside the server's event loop; it also starts what needs the loop:
    reloading persisted deployments and, when configured, the OpenAI-compatible HTTP endpoint
    (its socket is bound right there, so ``http_port`` is known once the server started).
    """

    servicer: InferenceServicer
    deployments: Deployments
    repository: DeploymentRepository
    source: RegistrySource
    http: OpenAIEndpoint | None = None
    service_names: tuple[str, ...] = (SERVICE_NAME,)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    def register(self, server: aio.Server) -> None:
        inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.deployments.restore()))
        if self.http is not None:
            self.http.bind()
            self._tasks.append(loop.create_task(self.http.start()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.http is not None:
            await self.http.stop()
        await self.deployments.close()
        self.source.close()
        self.repository.engine.dispose()


def default_engine(setting: str, factories: dict) -> str:
    """``auto``: vLLM where it is installed and a GPU is present, else transformers."""
    if setting != "auto":
        return setting
    vllm = factories.get("vllm")
    if vllm is not None and vllm.available() is None and vllm.has_gpu():
        return "vllm"
    return "transformers"


def build_inference(
    settings: InferenceSettings, *, registry_target: str | Callable[[], str] | None = None
) -> InferenceComponent:
    """``registry_target`` overrides the setting (the embedded process passes its own port,
    known only once the server is bound, as a callable)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repository = DeploymentRepository(make_engine(settings.database_url))
    repository.migrate()
    source = RegistrySource(registry_target or settings.registry_target, settings.registry_token)
    cache = ArtifactCache(
        settings.data_dir / "cache" / "inference" / "models", source, settings.cache_bytes
    )
    factories = {
        "transformers": TransformersEngineFactory(settings.torch_threads),
        "vllm": VllmEngineFactory(),
    }
    deployments = Deployments(
        repository,
        source,
        cache,
        factories,
        default_engine=default_engine(settings.default_engine, factories),
        max_queue=settings.max_queue,
        max_loras=settings.max_loaded_adapters,
    )
    http = None
    if settings.http_port is not None:
        http = OpenAIEndpoint(deployments, settings.host, settings.http_port, settings.tokens)
    return InferenceComponent(InferenceServicer(deployments), deployments, repository, source, http)

"""Composition root of the conversion service: settings -> adapters -> core -> gRPC component."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from grpc import aio

from danlu.conversion.v1 import conversion_service_pb2, conversion_service_pb2_grpc
from danlu_client import Client
from danlu_conversion.adapters.db import ConversionRepository
from danlu_conversion.adapters.registry_client import RegistryAdapter
from danlu_conversion.api import ConversionServicer
from danlu_conversion.core.jobs import Jobs, Runtime
from danlu_conversion.settings import ConversionSettings
from danlu_kit.db import make_engine
from danlu_kit.objectstore import open_object_store

SERVICE_NAME = conversion_service_pb2.DESCRIPTOR.services_by_name["ConversionService"].full_name


@dataclass
class ConversionComponent:
    """The conversion service as a server component (see danlu_kit.server.Component)."""

    servicer: ConversionServicer
    jobs: Jobs
    repository: ConversionRepository
    service_names: tuple[str, ...] = (SERVICE_NAME,)

    def register(self, server: aio.Server) -> None:
        conversion_service_pb2_grpc.add_ConversionServiceServicer_to_server(self.servicer, server)

    async def start(self, port: int) -> None:
        await asyncio.to_thread(self.jobs.recover)

    async def close(self) -> None:
        await asyncio.to_thread(self.jobs.shutdown)
        self.repository.engine.dispose()


def build_conversion(
    settings: ConversionSettings, *, registry_target: Callable[[], str] | str | None = None
) -> ConversionComponent:
    """``registry_target`` overrides the setting; a callable is asked at each use (the embedded
    server knows its own port only once bound)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repository = ConversionRepository(make_engine(settings.database_url))
    repository.migrate()
    store = open_object_store(
        settings.object_store_url,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )
    target = registry_target or settings.registry_target
    clients: dict[tuple[str, str, str | None], Client] = {}

    def registry(project: str, caller_token: str | None):
        # DANLU_CONVERSION_REGISTRY_TOKEN when set, else the token of the caller who created the
        # job (kept in memory for the job's run), as the training service does.
        address = target() if callable(target) else target
        token = settings.registry_token or caller_token
        key = (address, project, token)
        if key not in clients:
            clients[key] = Client(address, token=token, project=project)
        return RegistryAdapter(clients[key].registry)

    runtime = Runtime(
        registry=registry,
        store=store,
        scratch_dir=settings.data_dir / "conversion",
        precision_max_bytes=settings.precision_max_bytes,
    )
    jobs = Jobs(repository, runtime, max_concurrent_jobs=settings.max_concurrent_jobs)
    return ConversionComponent(ConversionServicer(jobs), jobs, repository)

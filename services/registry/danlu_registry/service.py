"""Composition root of the registry: settings -> adapters -> core -> gRPC component."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from danlu.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from danlu_kit.db import make_engine
from danlu_kit.objectstore import ObjectStore, open_object_store
from danlu_registry.adapters.db import RegistryRepository
from danlu_registry.api import RegistryServicer
from danlu_registry.core.datasets import Datasets
from danlu_registry.core.formats import IngestLimits
from danlu_registry.core.models import Models
from danlu_registry.core.preview_service import Previews
from danlu_registry.settings import RegistrySettings

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


@dataclass
class RegistryComponent:
    """The registry as a server component (see danlu_kit.server.Component)."""

    servicer: RegistryServicer
    repository: RegistryRepository
    store: ObjectStore
    service_names: tuple[str, ...] = (SERVICE_NAME,)

    def register(self, server: aio.Server) -> None:
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(self.servicer, server)

    async def close(self) -> None:
        self.repository.engine.dispose()


def build_registry(settings: RegistrySettings) -> RegistryComponent:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    spool_dir = settings.data_dir / "spool" / "registry"
    spool_dir.mkdir(parents=True, exist_ok=True)
    repository = RegistryRepository(make_engine(settings.database_url))
    repository.migrate()
    store = open_object_store(
        settings.object_store_url,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )
    datasets = Datasets(
        repository,
        store,
        limits=IngestLimits(
            max_record_bytes=settings.max_record_bytes, max_violations=settings.max_violations
        ),
        work_dir=spool_dir,
    )
    models = Models(repository, store)
    previews = Previews(
        datasets, models, cache_dir=Path(settings.data_dir) / "cache" / "tokenizers"
    )
    return RegistryComponent(
        RegistryServicer(datasets, models, previews, spool_dir), repository, store
    )

"""Composition root of the training service: settings -> adapters -> core -> gRPC component."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grpc import aio

from danlu.training.v1 import training_service_pb2, training_service_pb2_grpc
from danlu.training.worker.v1alpha1 import worker_service_pb2, worker_service_pb2_grpc
from danlu_kit.db import make_engine
from danlu_kit.objectstore import ObjectStore, open_object_store
from danlu_training.adapters.db import TrainingRepository
from danlu_training.adapters.kubernetes import KubernetesConfig
from danlu_training.adapters.launchers import KubernetesLauncher, LocalProcessLauncher
from danlu_training.adapters.registry_client import RegistryCatalog
from danlu_training.api import TrainingServicer
from danlu_training.core.jobs import Jobs
from danlu_training.core.ports import Launcher
from danlu_training.core.scheduler import Scheduler, SchedulerConfig
from danlu_training.core.signals import ChangeSignal
from danlu_training.core.workers import WorkerSessions
from danlu_training.settings import TrainingSettings
from danlu_training.worker_api import WorkerServicer

SERVICE_NAME = training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
WORKER_SERVICE_NAME = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
_ANY_ADDRESS = ("", "0.0.0.0", "::", "[::]")


@dataclass
class TrainingComponent:
    """The training service as a server component (see danlu_kit.server.Component): the public
    TrainingService, the workers' WorkerService, and the scheduler that runs while it serves."""

    servicer: TrainingServicer
    worker_servicer: WorkerServicer
    repository: TrainingRepository
    store: ObjectStore
    catalog: RegistryCatalog
    scheduler: Scheduler
    launcher: Launcher
    host: str
    port: int = 0
    service_names: tuple[str, ...] = (SERVICE_NAME, WORKER_SERVICE_NAME)
    # Workers authenticate with their per-attempt token, not a bearer token.
    self_authenticated_services: tuple[str, ...] = (WORKER_SERVICE_NAME,)

    def register(self, server: aio.Server) -> None:
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server(self.servicer, server)
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self.worker_servicer, server)

    async def start(self, port: int) -> None:
        self.port = port
        self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.stop()
        self.servicer.registry_calls.shutdown()
        self.catalog.close()
        self.repository.engine.dispose()

    def own_target(self) -> str:
        """This server's address as seen from this machine (known once started)."""
        host = "127.0.0.1" if self.host in _ANY_ADDRESS else self.host
        return f"{host}:{self.port}"


def make_launcher(settings: TrainingSettings) -> Launcher:
    if settings.launcher == "kubernetes":
        from danlu_training.adapters.kubernetes import OfficialKubernetesApi

        k8s = settings.kubernetes
        config = KubernetesConfig(
            namespace=k8s.namespace,
            image=k8s.worker_image,
            gpus_per_node=k8s.gpus_per_node,
            s3_secret=k8s.s3_secret,
            ttl_seconds_after_finished=k8s.job_ttl_seconds,
            service_account=k8s.service_account,
        )
        return KubernetesLauncher(config, OfficialKubernetesApi())
    credentials = {
        name: value
        for name, value in (
            ("DANLU_WORKER_S3_ACCESS_KEY", settings.s3_access_key),
            ("DANLU_WORKER_S3_SECRET_KEY", settings.s3_secret_key),
        )
        if value
    }
    return LocalProcessLauncher(
        settings.data_dir / "logs", gpus=settings.gpus, credentials=credentials
    )


def build_training(
    settings: TrainingSettings,
    *,
    registry_target: Callable[[], str] | str | None = None,
    launcher: Launcher | None = None,
) -> TrainingComponent:
    """``registry_target`` overrides the setting; a callable is asked at each use (the embedded
    server knows its own port only once bound). ``launcher`` overrides the configured one."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    events, wake = ChangeSignal(), ChangeSignal()
    repository = TrainingRepository(make_engine(settings.database_url), on_events=events.notify)
    repository.migrate()
    store = open_object_store(
        settings.object_store_url,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )
    launcher = launcher or make_launcher(settings)
    catalog = RegistryCatalog(registry_target or settings.registry_target, settings.registry_token)
    jobs = Jobs(
        repository,
        store,
        catalog,
        launcher,
        gpu_capacity=settings.gpus,
        events=events,
        schedule=wake.notify,
    )
    sessions = WorkerSessions(
        repository,
        store,
        max_attempts=settings.max_attempts,
        # Several heartbeats fit in the timeout, so one slow call does not lose a worker.
        heartbeat_interval_seconds=max(0.2, settings.heartbeat_timeout_seconds / 4),
        schedule=wake.notify,
    )

    def worker_env() -> dict[str, str]:
        return {
            "DANLU_WORKER_CONTROL_TARGET": settings.worker_control_target or component.own_target(),
            "DANLU_WORKER_OBJECT_STORE_URL": settings.object_store_url,
            "DANLU_WORKER_CACHE_DIR": str(settings.worker_cache_dir),
        }

    scheduler = Scheduler(
        repository,
        launcher,
        SchedulerConfig(
            cpu_slots=settings.max_concurrent_jobs,
            gpus=settings.gpus,
            max_attempts=settings.max_attempts,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
            cancel_grace_seconds=settings.cancel_grace_seconds,
            interval_seconds=settings.scheduler_interval_seconds,
        ),
        worker_env,
        wake,
    )
    component = TrainingComponent(
        servicer=TrainingServicer(jobs),
        worker_servicer=WorkerServicer(sessions),
        repository=repository,
        store=store,
        catalog=catalog,
        scheduler=scheduler,
        launcher=launcher,
        host=settings.host,
    )
    return component

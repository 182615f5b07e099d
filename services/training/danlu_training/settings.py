"""Training settings: every ``DANLU_TRAINING_*`` variable is read here and nowhere else.

| variable | default | meaning |
|---|---|---|
| DANLU_TRAINING_HOST / _PORT | 127.0.0.1 / 50052 | where gRPC listens |
| DANLU_TRAINING_METRICS_PORT | unset | Prometheus metrics HTTP port (off when unset) |
| DANLU_TRAINING_DATA_DIR | ~/.danlu | SQLite file, worker logs (`logs/`), worker cache |
| DANLU_TRAINING_DATABASE_URL | sqlite:///DATA_DIR/training.db | SQLAlchemy URL (postgresql://...) |
| DANLU_TRAINING_OBJECT_STORE_URL | file://DATA_DIR/objects | the registry's store: workers read models and data from it by key |
| DANLU_TRAINING_S3_ACCESS_KEY / _S3_SECRET_KEY | unset | S3 credentials (local workers get them too) |
| DANLU_TRAINING_REGISTRY_TARGET | 127.0.0.1:50051 | the registry's gRPC address |
| DANLU_TRAINING_REGISTRY_TOKEN | unset | token for the registry; unset: the caller's own token is passed on |
| DANLU_TRAINING_WORKER_CONTROL_TARGET | this service's HOST:PORT | what workers dial (WorkerService) |
| DANLU_TRAINING_WORKER_CACHE_DIR | DATA_DIR/cache/worker | local workers' model/data cache |
| DANLU_TRAINING_LAUNCHER | local | `local` (processes on this machine) or `kubernetes` (a Job per attempt) |
| DANLU_TRAINING_MAX_CONCURRENT_JOBS | 1 | CPU jobs (no GPU) that run at once |
| DANLU_TRAINING_GPUS | detected (0 without NVIDIA GPUs) | GPUs the service hands out to jobs at once (with `kubernetes`: its share of the cluster) |
| DANLU_TRAINING_MAX_ATTEMPTS | 3 | attempts of a job before a lost worker fails it |
| DANLU_TRAINING_HEARTBEAT_TIMEOUT_SECONDS | 60 | silence after which a worker is presumed lost |
| DANLU_TRAINING_CANCEL_GRACE_SECONDS | 15 | how long a cancelled worker may take to stop before it is killed |
| DANLU_TRAINING_SCHEDULER_INTERVAL_SECONDS | 1 | how often the scheduler looks at the queue and the workers |
| DANLU_TRAINING_K8S_NAMESPACE | danlu | namespace of the worker Jobs |
| DANLU_TRAINING_K8S_WORKER_IMAGE | danlu-worker:latest | worker image |
| DANLU_TRAINING_K8S_GPUS_PER_NODE | GPUS | most GPUs one worker pod may ask for |
| DANLU_TRAINING_K8S_S3_SECRET | unset | Secret with `access-key` / `secret-key` for the workers |
| DANLU_TRAINING_K8S_SERVICE_ACCOUNT | unset | service account of the worker pods |
| DANLU_TRAINING_K8S_JOB_TTL_SECONDS | 3600 | `ttlSecondsAfterFinished` of worker Jobs |
| DANLU_TRAINING_AUTH | on | bearer-token auth (off only on loopback) |
| DANLU_TRAINING_AUTH_TOKENS_FILE | unset | file of hashed tokens (`sha256:<hex> PROJECT`) |
| DANLU_TRAINING_AUTH_BOOTSTRAP_TOKEN / _PROJECT | unset / default | one plain token |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.settings import Env, StoreServerSettings
from danlu_training.adapters.launchers import detect_gpus

LAUNCHERS = ("local", "kubernetes")


@dataclass
class KubernetesSettings:
    namespace: str = "danlu"
    worker_image: str = "danlu-worker:latest"
    gpus_per_node: int = 0
    s3_secret: str = ""
    service_account: str = ""
    job_ttl_seconds: int = 3600


@dataclass(frozen=True)
class TrainingSettings(StoreServerSettings):
    registry_target: str
    registry_token: str | None = field(repr=False)
    worker_control_target: str | None  # None: this service's own address once bound
    worker_cache_dir: Path
    launcher: str
    max_concurrent_jobs: int
    gpus: int
    max_attempts: int
    heartbeat_timeout_seconds: float
    cancel_grace_seconds: float
    scheduler_interval_seconds: float
    kubernetes: KubernetesSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingSettings:
        env = Env("TRAINING", environ)
        common = cls.read_common(env, port=50052, database="training.db")
        launcher = env.str("LAUNCHER", "local")
        if launcher not in LAUNCHERS:
            raise InvalidArgument.from_violations(
                "SETTING_INVALID",
                [FieldViolation(env.var("LAUNCHER"), f"{launcher!r} is not one of {LAUNCHERS}")],
            )
        gpus = env.int("GPUS", -1)
        gpus = detect_gpus() if gpus < 0 else gpus
        settings = cls(
            **common,
            registry_target=env.str("REGISTRY_TARGET", "127.0.0.1:50051"),
            registry_token=env.str("REGISTRY_TOKEN"),
            worker_control_target=env.str("WORKER_CONTROL_TARGET"),
            worker_cache_dir=env.path("WORKER_CACHE_DIR", common["data_dir"] / "cache" / "worker"),
            launcher=launcher,
            max_concurrent_jobs=env.int("MAX_CONCURRENT_JOBS", 1),
            gpus=gpus,
            max_attempts=env.int("MAX_ATTEMPTS", 3),
            heartbeat_timeout_seconds=env.float("HEARTBEAT_TIMEOUT_SECONDS", 60.0),
            cancel_grace_seconds=env.float("CANCEL_GRACE_SECONDS", 15.0),
            scheduler_interval_seconds=env.float("SCHEDULER_INTERVAL_SECONDS", 1.0),
            kubernetes=KubernetesSettings(
                namespace=env.str("K8S_NAMESPACE", "danlu"),
                worker_image=env.str("K8S_WORKER_IMAGE", "danlu-worker:latest"),
                gpus_per_node=env.int("K8S_GPUS_PER_NODE", gpus),
                s3_secret=env.str("K8S_S3_SECRET", ""),
                service_account=env.str("K8S_SERVICE_ACCOUNT", ""),
                job_ttl_seconds=env.int("K8S_JOB_TTL_SECONDS", 3600),
            ),
        )
        settings._check(env)
        return settings

    def _check(self, env: Env) -> None:
        bad = [
            FieldViolation(env.var(name), "must be >= 1")
            for name, value in (
                ("MAX_CONCURRENT_JOBS", self.max_concurrent_jobs),
                ("MAX_ATTEMPTS", self.max_attempts),
            )
            if value < 1
        ] + [
            FieldViolation(env.var(name), "must be > 0")
            for name, value in (
                ("HEARTBEAT_TIMEOUT_SECONDS", self.heartbeat_timeout_seconds),
                ("CANCEL_GRACE_SECONDS", self.cancel_grace_seconds),
                ("SCHEDULER_INTERVAL_SECONDS", self.scheduler_interval_seconds),
            )
            if value <= 0
        ]
        if bad:
            raise InvalidArgument.from_violations("SETTING_INVALID", bad, "bad setting")

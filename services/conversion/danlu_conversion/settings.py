"""Conversion settings: every ``DANLU_CONVERSION_*`` variable is read here and nowhere else.

| variable | default | meaning |
|---|---|---|
| DANLU_CONVERSION_HOST / _PORT | 127.0.0.1 / 50053 | where gRPC listens |
| DANLU_CONVERSION_METRICS_PORT | unset | Prometheus metrics HTTP port (off when unset) |
| DANLU_CONVERSION_DATA_DIR | ~/.danlu | SQLite file and the scratch directory (`conversion/`) |
| DANLU_CONVERSION_DATABASE_URL | sqlite:///DATA_DIR/conversion.db | SQLAlchemy URL (postgresql://...) |
| DANLU_CONVERSION_OBJECT_STORE_URL | file://DATA_DIR/objects | the store the training checkpoints are in |
| DANLU_CONVERSION_S3_ACCESS_KEY / _S3_SECRET_KEY | unset | S3 credentials |
| DANLU_CONVERSION_REGISTRY_TARGET | 127.0.0.1:50051 | the registry's gRPC address |
| DANLU_CONVERSION_REGISTRY_TOKEN | unset | token for the registry; unset: the job creator's own token is passed on |
| DANLU_CONVERSION_MAX_CONCURRENT_JOBS | 1 | jobs that run at once (threads of this process) |
| DANLU_CONVERSION_PRECISION_MAX_BYTES | 2000000000 | largest base (bytes of weights) that gets a precision report |
| DANLU_CONVERSION_AUTH | on | bearer-token auth (off only on loopback) |
| DANLU_CONVERSION_AUTH_TOKENS_FILE | unset | file of hashed tokens (`sha256:<hex> PROJECT`) |
| DANLU_CONVERSION_AUTH_BOOTSTRAP_TOKEN / _PROJECT | unset / default | one plain token |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from danlu_kit.auth import TokenBook
from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.settings import Env


@dataclass
class ConversionSettings:
    host: str
    port: int
    metrics_port: int | None
    data_dir: Path
    database_url: str
    object_store_url: str
    s3_access_key: str | None = field(repr=False)
    s3_secret_key: str | None = field(repr=False)
    registry_target: str
    registry_token: str | None = field(repr=False)
    max_concurrent_jobs: int
    precision_max_bytes: int
    tokens: TokenBook | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConversionSettings:
        env = Env("CONVERSION", environ)
        data_dir = env.path("DATA_DIR", Path("~/.danlu").expanduser())
        metrics = env.int("METRICS_PORT", -1)
        settings = cls(
            host=env.str("HOST", "127.0.0.1"),
            port=env.int("PORT", 50053),
            metrics_port=None if metrics < 0 else metrics,
            data_dir=data_dir,
            database_url=env.str("DATABASE_URL", f"sqlite:///{data_dir}/conversion.db"),
            object_store_url=env.str("OBJECT_STORE_URL", f"file://{data_dir}/objects"),
            s3_access_key=env.str("S3_ACCESS_KEY"),
            s3_secret_key=env.str("S3_SECRET_KEY"),
            registry_target=env.str("REGISTRY_TARGET", "127.0.0.1:50051"),
            registry_token=env.str("REGISTRY_TOKEN"),
            max_concurrent_jobs=env.int("MAX_CONCURRENT_JOBS", 1),
            precision_max_bytes=env.int("PRECISION_MAX_BYTES", 2 * 10**9),
            tokens=env.tokens(),
        )
        if settings.max_concurrent_jobs < 1:
            raise InvalidArgument.from_violations(
                "SETTING_INVALID",
                [FieldViolation(env.var("MAX_CONCURRENT_JOBS"), "must be >= 1")],
                "bad setting",
            )
        return settings

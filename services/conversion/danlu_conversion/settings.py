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

from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.settings import Env, StoreServerSettings


@dataclass(frozen=True)
class ConversionSettings(StoreServerSettings):
    registry_target: str
    registry_token: str | None = field(repr=False)
    max_concurrent_jobs: int
    precision_max_bytes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConversionSettings:
        env = Env("CONVERSION", environ)
        settings = cls(
            **cls.read_common(env, port=50053, database="conversion.db"),
            registry_target=env.str("REGISTRY_TARGET", "127.0.0.1:50051"),
            registry_token=env.str("REGISTRY_TOKEN"),
            max_concurrent_jobs=env.int("MAX_CONCURRENT_JOBS", 1),
            precision_max_bytes=env.int("PRECISION_MAX_BYTES", 2 * 10**9),
        )
        if settings.max_concurrent_jobs < 1:
            raise InvalidArgument.from_violations(
                "SETTING_INVALID",
                [FieldViolation(env.var("MAX_CONCURRENT_JOBS"), "must be >= 1")],
                "bad setting",
            )
        return settings

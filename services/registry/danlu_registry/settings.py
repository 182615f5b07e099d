"""Registry settings: every ``DANLU_REGISTRY_*`` variable is read here and nowhere else.

| variable | default | meaning |
|---|---|---|
| DANLU_REGISTRY_HOST / _PORT | 127.0.0.1 / 50051 | where gRPC listens |
| DANLU_REGISTRY_METRICS_PORT | unset | Prometheus metrics HTTP port (off when unset) |
| DANLU_REGISTRY_DATA_DIR | ~/.danlu | SQLite file, local object store, spool files |
| DANLU_REGISTRY_DATABASE_URL | sqlite:///DATA_DIR/registry.db | SQLAlchemy URL (postgresql://...) |
| DANLU_REGISTRY_OBJECT_STORE_URL | file://DATA_DIR/objects | or s3://bucket?endpoint=http://host:9000 |
| DANLU_REGISTRY_S3_ACCESS_KEY / _S3_SECRET_KEY | unset | S3 credentials |
| DANLU_REGISTRY_MAX_RECORD_BYTES | 1048576 | largest single dataset record |
| DANLU_REGISTRY_MAX_VIOLATIONS | 20 | how many bad records one error lists |
| DANLU_REGISTRY_AUTH | on | bearer-token auth (off only on loopback) |
| DANLU_REGISTRY_AUTH_TOKENS_FILE | unset | file of hashed tokens (`sha256:<hex> PROJECT`) |
| DANLU_REGISTRY_AUTH_BOOTSTRAP_TOKEN / _PROJECT | unset / default | one plain token |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from danlu_kit.settings import Env, StoreServerSettings


@dataclass(frozen=True)
class RegistrySettings(StoreServerSettings):
    max_record_bytes: int
    max_violations: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistrySettings:
        env = Env("REGISTRY", environ)
        return cls(
            **cls.read_common(env, port=50051, database="registry.db"),
            max_record_bytes=env.int("MAX_RECORD_BYTES", 1024 * 1024),
            max_violations=env.int("MAX_VIOLATIONS", 20),
        )

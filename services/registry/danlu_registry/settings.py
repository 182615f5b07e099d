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
from pathlib import Path

from danlu_kit.auth import TokenBook
from danlu_kit.settings import Env


@dataclass
class RegistrySettings:
    host: str
    port: int
    metrics_port: int | None
    data_dir: Path
    database_url: str
    object_store_url: str
    s3_access_key: str | None
    s3_secret_key: str | None
    max_record_bytes: int
    max_violations: int
    tokens: TokenBook | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistrySettings:
        env = Env("REGISTRY", environ)
        data_dir = env.path("DATA_DIR", Path("~/.danlu").expanduser())
        metrics = env.int("METRICS_PORT", -1)
        return cls(
            host=env.str("HOST", "127.0.0.1"),
            port=env.int("PORT", 50051),
            metrics_port=None if metrics < 0 else metrics,
            data_dir=data_dir,
            database_url=env.str("DATABASE_URL", f"sqlite:///{data_dir}/registry.db"),
            object_store_url=env.str("OBJECT_STORE_URL", f"file://{data_dir}/objects"),
            s3_access_key=env.str("S3_ACCESS_KEY"),
            s3_secret_key=env.str("S3_SECRET_KEY"),
            max_record_bytes=env.int("MAX_RECORD_BYTES", 1024 * 1024),
            max_violations=env.int("MAX_VIOLATIONS", 20),
            tokens=env.tokens(),
        )

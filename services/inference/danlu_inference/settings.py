"""Inference settings: every ``DANLU_INFERENCE_*`` variable is read here and nowhere else.

| variable | default | meaning |
|---|---|---|
| DANLU_INFERENCE_HOST / _PORT | 127.0.0.1 / 50054 | where gRPC listens |
| DANLU_INFERENCE_HTTP_PORT | unset | OpenAI-compatible HTTP endpoint (`/v1/...`) on HOST (off when unset; 0 picks a free port) |
| DANLU_INFERENCE_METRICS_PORT | unset | Prometheus metrics HTTP port (off when unset) |
| DANLU_INFERENCE_DATA_DIR | ~/.danlu | SQLite file and the model/adapter cache (`cache/inference/models/<digest>`) |
| DANLU_INFERENCE_DATABASE_URL | sqlite:///DATA_DIR/inference.db | SQLAlchemy URL (postgresql://...); deployments persist and are reloaded on restart |
| DANLU_INFERENCE_REGISTRY_TARGET | 127.0.0.1:50051 | the registry's gRPC address (models and adapters are resolved and downloaded there) |
| DANLU_INFERENCE_REGISTRY_TOKEN | unset | token for the registry; unset: the caller's own bearer token is forwarded |
| DANLU_INFERENCE_DEFAULT_ENGINE | auto | engine when a deployment names none: `auto` (vLLM where it is installed and a GPU is present, else transformers), `transformers` or `vllm` |
| DANLU_INFERENCE_MAX_QUEUE | 64 | requests allowed to wait per deployment when its options name none |
| DANLU_INFERENCE_MAX_LOADED_ADAPTERS | 4 | adapters kept loaded per deployment when its options name none (LRU) |
| DANLU_INFERENCE_ADAPTER_CACHE_BYTES | 10 GiB | local disk kept for downloaded artifacts; least recently used ones beyond it are removed |
| DANLU_INFERENCE_TORCH_THREADS | 0 | intra-op threads per transformers engine (0: torch's default; 1 is fastest for small models on a busy CPU) |
| DANLU_INFERENCE_AUTH | on | bearer-token auth (off only on loopback); the HTTP endpoint checks the same tokens |
| DANLU_INFERENCE_AUTH_TOKENS_FILE | unset | file of hashed tokens (`sha256:<hex> PROJECT`) |
| DANLU_INFERENCE_AUTH_BOOTSTRAP_TOKEN / _PROJECT | unset / default | one plain token |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.settings import Env, ServerSettings

ENGINES = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class InferenceSettings(ServerSettings):
    http_port: int | None
    registry_target: str
    registry_token: str | None = field(repr=False)
    default_engine: str
    max_queue: int
    max_loaded_adapters: int
    cache_bytes: int
    torch_threads: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InferenceSettings:
        env = Env("INFERENCE", environ)
        http = env.int("HTTP_PORT", -1)
        engine = (env.str("DEFAULT_ENGINE", "auto") or "auto").lower()
        if engine not in ENGINES:
            raise InvalidArgument.from_violations(
                "SETTING_INVALID",
                [FieldViolation(env.var("DEFAULT_ENGINE"), f"expected one of {ENGINES}")],
                "bad setting",
            )
        return cls(
            **cls.read_common(env, port=50054, database="inference.db"),
            http_port=None if http < 0 else http,
            registry_target=env.str("REGISTRY_TARGET", "127.0.0.1:50051"),
            registry_token=env.str("REGISTRY_TOKEN"),
            default_engine=engine,
            max_queue=env.int("MAX_QUEUE", 64),
            max_loaded_adapters=env.int("MAX_LOADED_ADAPTERS", 4),
            cache_bytes=env.int("ADAPTER_CACHE_BYTES", 10 * 1024**3),
            torch_threads=env.int("TORCH_THREADS", 0),
        )

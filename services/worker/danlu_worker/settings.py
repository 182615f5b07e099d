"""The worker's settings: the one module that reads (and, for torch.distributed, writes) the
environment.

The launcher starts each attempt with these variables (``DANLU_WORKER_*``):

=================================  =========================================================
``CONTROL_TARGET``                 ``host:port`` of the training service's WorkerService
``JOB``                            ``projects/{project}/trainingJobs/{job}``
``ATTEMPT``                        the attempt number (1-based)
``TOKEN``                          the attempt's secret (never logged)
``OBJECT_STORE_URL``               ``file:///dir`` or ``s3://bucket?endpoint=...``
``S3_ACCESS_KEY``/``S3_SECRET_KEY``  credentials of an S3 store (optional)
``CACHE_DIR``                      local cache for models, data and checkpoints
                                   (default ``~/.cache/danlu-worker``)
``RPC_RETRY_SECONDS``              how long control-plane calls are retried while the training
                                   service is unreachable (default 900)
``KERNELS``                        fused training kernels: ``auto`` (default), ``liger``,
                                   ``compile`` or ``none`` (see ``danlu_worker.kernels``)
``ATTENTION``                      attention implementation: ``auto`` (default), ``sdpa``,
                                   ``flex_attention``, ``flash_attention_2`` or ``eager``
=================================  =========================================================

torchrun's ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` are read
here too (a single process without them is rank 0 of 1).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.settings import Env

DEFAULT_CACHE_DIR = Path("~/.cache/danlu-worker").expanduser()
KERNEL_MODES = ("auto", "liger", "compile", "none")  # see danlu_worker.kernels
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "flex_attention", "flash_attention_2", "eager")


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in a torchrun world (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class WorkerSettings:
    control_target: str
    training_job: str
    attempt: int
    token: str = field(repr=False)
    object_store_url: str
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    cache_dir: Path = DEFAULT_CACHE_DIR
    rpc_retry_seconds: float = 900.0
    kernels: str = "auto"
    attention: str = "auto"
    distributed: DistributedEnv = DistributedEnv()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        environ = os.environ if environ is None else environ
        env = Env("WORKER", environ)
        missing = [
            FieldViolation(env.var(name), "must be set")
            for name in ("CONTROL_TARGET", "JOB", "ATTEMPT", "TOKEN", "OBJECT_STORE_URL")
            if env.str(name) is None
        ]
        if missing:
            raise InvalidArgument.from_violations(
                "WORKER_SETTINGS_INVALID", missing, "the worker's environment is incomplete"
            )
        attempt = env.int("ATTEMPT", 0)
        if attempt < 1:
            raise InvalidArgument.from_violations(
                "WORKER_SETTINGS_INVALID",
                [FieldViolation(env.var("ATTEMPT"), "must be a positive integer")],
            )
        kernels = (env.str("KERNELS") or "auto").lower()
        attention = (env.str("ATTENTION") or "auto").lower()
        bad = [
            FieldViolation(env.var(name), f"must be one of {', '.join(allowed)}")
            for name, value, allowed in (
                ("KERNELS", kernels, KERNEL_MODES),
                ("ATTENTION", attention, ATTENTION_IMPLEMENTATIONS),
            )
            if value not in allowed
        ]
        if bad:
            raise InvalidArgument.from_violations("WORKER_SETTINGS_INVALID", bad)
        return cls(
            control_target=env.str("CONTROL_TARGET") or "",
            training_job=env.str("JOB") or "",
            attempt=attempt,
            token=env.str("TOKEN") or "",
            object_store_url=env.str("OBJECT_STORE_URL") or "",
            s3_access_key=env.str("S3_ACCESS_KEY"),
            s3_secret_key=env.str("S3_SECRET_KEY"),
            cache_dir=env.path("CACHE_DIR", DEFAULT_CACHE_DIR),
            rpc_retry_seconds=float(env.int("RPC_RETRY_SECONDS", 900)),
            kernels=kernels,
            attention=attention,
            distributed=distributed_env(environ),
        )


def distributed_env(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """torchrun's RANK / LOCAL_RANK / WORLD_SIZE (rank 0 of 1 when unset)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        raw = environ.get(name, "")
        try:
            return int(raw) if raw else default
        except ValueError:
            raise InvalidArgument(
                message=f"{name} must be an integer, got {raw!r}", reason="WORKER_SETTINGS_INVALID"
            ) from None

    return DistributedEnv(
        rank=number("RANK", 0),
        local_rank=number("LOCAL_RANK", 0),
        world_size=number("WORLD_SIZE", 1),
    )


def ensure_rendezvous_env() -> DistributedEnv:
    """Fill in a one-process rendezvous where torchrun did not set one.

    DeepSpeed (and torch.distributed's ``env://``) need RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT; without them DeepSpeed looks for mpi4py. A single process gets
    rank 0 of 1 on a free loopback port.
    """
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    return distributed_env()


def ensure_torch_extensions_dir(cache_dir: Path) -> None:
    """DeepSpeed JIT-compiles its ops on first use: keep them in the worker's cache (unless
    ``TORCH_EXTENSIONS_DIR`` names another place)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir / "torch_extensions"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""How an attempt ended, as the ``google.rpc.Status`` that CompleteWork carries.

- success: no status;
- cancelled on request: CANCELLED;
- typed errors (:mod:`danlu_kit.errors`): their canonical code, ErrorInfo reason and
  BadRequest violations (bad data is INVALID_ARGUMENT, a template that cannot render it
  FAILED_PRECONDITION, an unreachable object store UNAVAILABLE so the service may retry);
- running out of accelerator memory: RESOURCE_EXHAUSTED with a hint;
- anything else: INTERNAL with the exception's type and message (never a stack trace: that
  goes to the worker's own log).
"""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from danlu_kit.errors import Cancelled, DanluError
from danlu_kit.grpc_errors import status_for, status_proto

_MAX_MESSAGE = 1000


def status_for_exception(exc: BaseException | None) -> status_pb2.Status | None:
    """The CompleteWork error for ``exc`` (None: the attempt succeeded)."""
    if exc is None:
        return None
    if isinstance(exc, KeyboardInterrupt):
        exc = Cancelled(message="the worker was interrupted", reason="WORKER_INTERRUPTED")
    if isinstance(exc, DanluError):
        return status_for(exc)[1]
    if _is_out_of_memory(exc):
        return status_proto(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            _clip(
                f"out of memory: {exc}. Lower micro_batch_size or max_length, enable "
                "gradient_checkpointing, or use QLoRA / a DeepSpeed ZeRO stage with offload"
            ),
            "OUT_OF_MEMORY",
        )
    return status_proto(
        grpc.StatusCode.INTERNAL, _clip(f"{type(exc).__name__}: {exc}"), "WORKER_FAILED"
    )


def is_cancelled(status: status_pb2.Status | None) -> bool:
    return status is not None and status.code == grpc.StatusCode.CANCELLED.value[0]


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _clip(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"

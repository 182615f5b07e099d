"""How the worker talks to the control plane: events, heartbeats, checkpoints, the outcome.

:class:`Reporter` is the port the training loops use. :class:`GrpcReporter` speaks the
WorkerService (``danlu.training.worker.v1alpha1``); :class:`RecordingReporter` keeps everything
in memory for tests.

GrpcReporter's guarantees:

- Events are queued and sent in batches by a background thread, numbered with a strictly
  increasing ``batch_sequence``; a batch that failed is retried with the *same* number, which
  the service applies once. While the service is unreachable (UNAVAILABLE, e.g. restarting)
  every call is retried with exponential backoff for up to ``retry_seconds``, so a restarted
  training service loses no event, checkpoint or outcome.
- A heartbeat thread calls Heartbeat every ``heartbeat_interval`` and raises the cancel flag
  when the user cancelled; the loops read :attr:`Reporter.cancel_requested` at every
  micro-batch boundary.
- FAILED_PRECONDITION with reason STALE_ATTEMPT means this attempt was replaced: the flag
  :attr:`GrpcReporter.fenced` is raised (which also raises the cancel flag so the loop stops),
  and the worker exits without reporting anything more.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from danlu.training.v1 import checkpoint_pb2, training_event_pb2, training_job_pb2
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu.training.worker.v1alpha1 import worker_service_pb2_grpc as wgrpc

log = logging.getLogger(__name__)

LogLevel = int  # a danlu.training.v1.LogLevel value
DEBUG = training_event_pb2.LOG_LEVEL_DEBUG
INFO = training_event_pb2.LOG_LEVEL_INFO
WARNING = training_event_pb2.LOG_LEVEL_WARNING
ERROR = training_event_pb2.LOG_LEVEL_ERROR

STALE_ATTEMPT = "STALE_ATTEMPT"
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_RPC_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


class Reporter(Protocol):
    """What the training loops tell the control plane, and what it tells them."""

    def log(self, level: LogLevel, message: str) -> None: ...

    def metrics(self, metrics: training_job_pb2.TrainingMetrics) -> None: ...

    def evaluation(self, step: int, answers: Sequence[checkpoint_pb2.EvaluationAnswer]) -> None: ...

    def commit_checkpoint(self, checkpoint: checkpoint_pb2.Checkpoint) -> list[str]:
        """Record a checkpoint whose manifest is written; returns the names of checkpoints the
        keep policy deleted (their objects are gone; the worker drops local copies)."""
        ...

    def heartbeat(self) -> bool:
        """Tell the service the attempt is alive; True when the user asked to cancel."""
        ...

    @property
    def cancel_requested(self) -> bool: ...

    def complete(self, error: status_pb2.Status | None) -> None:
        """Report how the attempt ended (None: success). The last call."""
        ...


class StaleAttemptError(RuntimeError):
    """The service answered STALE_ATTEMPT: another attempt replaced this one."""


class ControlPlaneUnreachable(RuntimeError):
    """The training service stayed unreachable for longer than the retry budget."""


# --------------------------------------------------------------------------- in memory


@dataclass
class RecordingReporter:
    """Keeps what the worker reports, for tests. ``cancel_after_step`` raises the cancel flag
    once a metrics event at that step (or later) arrives; ``keep`` applies a keep policy like
    the service's (newest K plus the best by validation loss, else training loss), deleting
    dropped checkpoints' objects from ``store`` when one is given."""

    cancel_after_step: int | None = None
    keep: int = -1
    store: object | None = None
    logs: list[tuple[int, str]] = field(default_factory=list)
    metric_events: list[training_job_pb2.TrainingMetrics] = field(default_factory=list)
    evaluations: list[tuple[int, list[checkpoint_pb2.EvaluationAnswer]]] = field(
        default_factory=list
    )
    checkpoints: list[checkpoint_pb2.Checkpoint] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    heartbeats: int = 0
    completed: list[status_pb2.Status | None] = field(default_factory=list)
    _cancel: bool = False

    def log(self, level: LogLevel, message: str) -> None:
        self.logs.append((level, message))

    def metrics(self, metrics: training_job_pb2.TrainingMetrics) -> None:
        self.metric_events.append(metrics)
        if self.cancel_after_step is not None and metrics.step >= self.cancel_after_step:
            self._cancel = True

    def evaluation(self, step: int, answers: Sequence[checkpoint_pb2.EvaluationAnswer]) -> None:
        self.evaluations.append((step, list(answers)))

    def commit_checkpoint(self, checkpoint: checkpoint_pb2.Checkpoint) -> list[str]:
        self.checkpoints.append(checkpoint)
        if self.keep < 0:
            return []
        kept = [c for c in self.checkpoints if c.name not in self.deleted]
        best = min(kept, key=_score)
        newest = sorted(kept, key=lambda c: c.step)[-self.keep :] if self.keep else []
        dropped = [c for c in kept if c is not best and c not in newest]
        for c in dropped:
            self.deleted.append(c.name)
            if self.store is not None:
                self.store.delete_prefix(c.manifest.key.rsplit("/", 1)[0] + "/")  # type: ignore[attr-defined]
        return [c.name for c in dropped]

    def heartbeat(self) -> bool:
        self.heartbeats += 1
        return self._cancel

    def request_cancel(self) -> None:
        self._cancel = True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    def complete(self, error: status_pb2.Status | None) -> None:
        self.completed.append(error)


def _score(c: checkpoint_pb2.Checkpoint) -> tuple[float, int]:
    loss = c.validation_loss if c.HasField("validation_loss") else c.train_loss
    return (loss, -c.step)


# --------------------------------------------------------------------------- gRPC


class GrpcReporter:
    """The WorkerService client of one attempt (see the module docstring)."""

    def __init__(
        self,
        channel: grpc.Channel,
        identity: wpb.WorkerIdentity,
        *,
        rank: int = 0,
        retry_seconds: float = 900.0,
        flush_interval: float = 1.0,
        max_batch: int = 200,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._stub = wgrpc.WorkerServiceStub(channel)
        self._identity = identity
        self._rank = rank
        self._retry_seconds = retry_seconds
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._backoff = (backoff_initial, backoff_max)
        self._lock = threading.Condition()
        self._queue: list[wpb.WorkerEvent] = []
        self._inflight: wpb.ReportEventsRequest | None = None
        self._next_batch_sequence = 1
        self._cancel = threading.Event()
        self._fenced = threading.Event()
        self._closed = threading.Event()
        self._send_error: BaseException | None = None
        self._sender = threading.Thread(target=self._send_loop, name="danlu-events", daemon=True)
        self._sender.start()
        self._heartbeat_thread: threading.Thread | None = None

    # ---- lifecycle

    def get_assignment(self) -> wpb.WorkerAssignment:
        request = wpb.GetWorkerAssignmentRequest(worker=self._identity)
        return self._call(self._stub.GetWorkerAssignment, request)

    def start_heartbeats(self, interval_seconds: float) -> None:
        """Heartbeat every ``interval_seconds`` from a background thread (rank 0 only)."""
        if self._heartbeat_thread is not None:
            return
        interval = max(0.2, interval_seconds)
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, args=(interval,), name="danlu-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is queued (up to ``timeout``) and stop the threads."""
        try:
            self.flush(timeout)
        finally:
            self._closed.set()
            with self._lock:
                self._lock.notify_all()

    # ---- Reporter

    def log(self, level: LogLevel, message: str) -> None:
        self._enqueue(
            wpb.WorkerEvent(
                log=training_event_pb2.LogLine(level=level, message=message, rank=self._rank)
            )
        )

    def metrics(self, metrics: training_job_pb2.TrainingMetrics) -> None:
        self._enqueue(wpb.WorkerEvent(metrics=metrics))

    def evaluation(self, step: int, answers: Sequence[checkpoint_pb2.EvaluationAnswer]) -> None:
        payload = training_event_pb2.EvaluationAnswers(step=step, answers=list(answers))
        self._enqueue(wpb.WorkerEvent(evaluation=payload))

    def commit_checkpoint(self, checkpoint: checkpoint_pb2.Checkpoint) -> list[str]:
        self.flush()  # the step's metrics and answers go first
        request = wpb.CommitCheckpointRequest(worker=self._identity, checkpoint=checkpoint)
        response = self._call(self._stub.CommitCheckpoint, request)
        return list(response.deleted_checkpoints)

    def heartbeat(self) -> bool:
        request = wpb.HeartbeatRequest(worker=self._identity)
        response = self._call(self._stub.Heartbeat, request)
        if response.cancel_requested:
            self._cancel.set()
        return response.cancel_requested

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def fenced(self) -> bool:
        """True once the service said another attempt replaced this one."""
        return self._fenced.is_set()

    def complete(self, error: status_pb2.Status | None) -> None:
        try:
            self.flush()
        except StaleAttemptError:
            raise
        except Exception:  # the outcome matters more than the last events
            log.warning("events before completion could not be delivered", exc_info=True)
        request = wpb.CompleteWorkRequest(worker=self._identity)
        if error is not None:
            request.error.CopyFrom(error)
        self._call(self._stub.CompleteWork, request)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event was delivered (or raise why it cannot be)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
            while self._queue or self._inflight is not None:
                if self._send_error is not None:
                    raise self._send_error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("events are still waiting to be delivered")
                self._lock.wait(0.05 if remaining is None else min(0.05, remaining))
            if self._send_error is not None:
                raise self._send_error

    # ---- internals

    def _enqueue(self, event: wpb.WorkerEvent) -> None:
        event.event_time.CopyFrom(_now())
        with self._lock:
            self._queue.append(event)
            if len(self._queue) >= self._max_batch:
                self._lock.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                if self._inflight is None:
                    if not self._queue:
                        if self._closed.is_set():
                            return
                        self._lock.wait(self._flush_interval)
                        if not self._queue:
                            continue
                    batch, self._queue = (
                        self._queue[: self._max_batch],
                        self._queue[self._max_batch :],
                    )
                    self._inflight = wpb.ReportEventsRequest(
                        worker=self._identity,
                        batch_sequence=self._next_batch_sequence,
                        rank=self._rank,
                        events=batch,
                    )
                    self._next_batch_sequence += 1
                request = self._inflight
            try:
                self._call(self._stub.ReportEvents, request)
            except BaseException as exc:  # delivered to flush()'s caller
                with self._lock:
                    self._send_error = exc
                    self._inflight = None
                    self._queue.clear()
                    self._lock.notify_all()
                return
            with self._lock:
                self._inflight = None
                self._lock.notify_all()

    def _heartbeat_loop(self, interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                self.heartbeat()
            except StaleAttemptError:
                return
            except Exception:
                log.warning("heartbeat failed; will try again", exc_info=True)

    def _call(self, method: Callable[..., T], request: object) -> T:
        """Call with retries on UNAVAILABLE / DEADLINE_EXCEEDED for up to the retry budget."""
        deadline = time.monotonic() + self._retry_seconds
        delay, max_delay = self._backoff
        while True:
            try:
                return method(request, timeout=_RPC_TIMEOUT_SECONDS)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and _reason(exc) == STALE_ATTEMPT:
                    self._fenced.set()
                    self._cancel.set()
                    raise StaleAttemptError(exc.details() or STALE_ATTEMPT) from None
                if code not in _RETRYABLE:
                    raise
                if time.monotonic() + delay > deadline:
                    raise ControlPlaneUnreachable(
                        f"the training service stayed unreachable for {self._retry_seconds:.0f}s"
                        f" ({code.name}: {exc.details()})"
                    ) from exc
                log.info("training service unavailable (%s); retrying in %.1fs", code.name, delay)
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(max_delay, delay * 2)


def _reason(exc: grpc.RpcError) -> str | None:
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts

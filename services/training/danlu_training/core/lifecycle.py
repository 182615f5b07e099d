"""The job state machine and the attempt rules, applied inside one repository transaction.

QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, with CANCELLING between RUNNING and the
end when a user cancels. Every state change goes through :func:`change_state`, which refuses an
illegal transition and records the ``state_changed`` event in the same transaction as the change
itself, so the event log and the job never disagree (even across a crash).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from danlu.training.v1 import training_event_pb2
from danlu_kit.errors import ERROR_DOMAIN, FailedPrecondition
from danlu_training.core.records import CheckpointRecord, EventRecord, JobRecord, JobState

_ANY_END = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # A queued job fails without running when its worker cannot even be started.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # RUNNING -> CANCELLED directly when the worker stopped itself with CANCELLED.
    JobState.RUNNING: _ANY_END | {JobState.CANCELLING},
    # A worker that finishes (or fails) while stopping reports what really happened.
    JobState.CANCELLING: _ANY_END,
}


class JobTransaction(Protocol):
    """One job locked for update; everything done through it commits together."""

    job: JobRecord

    def emit(
        self,
        kind: str,
        payload: Message,
        *,
        attempt: int | None = None,
        event_time: datetime | None = None,
    ) -> EventRecord:
        """Append an event (numbered next in the job's log); attempt defaults to the job's."""
        ...

    def checkpoints(self) -> list[CheckpointRecord]:
        """The job's checkpoints by step (changes to them are saved with the transaction)."""
        ...

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None: ...

    def first_delivery(self, attempt: int, rank: int, batch_sequence: int) -> bool:
        """Record a report batch; False when it was applied before (a retry)."""
        ...


def error_status(code: int, message: str, reason: str, **metadata: str) -> status_pb2.Status:
    """A ``google.rpc.Status`` (``code`` from ``google.rpc.code_pb2``) with its ErrorInfo."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    return status_pb2.Status(code=code, message=message, details=[detail])


def change_state(
    tx: JobTransaction,
    new: JobState,
    message: str,
    now: datetime,
    *,
    error: status_pb2.Status | None = None,
) -> None:
    job = tx.job
    if new not in TRANSITIONS.get(job.state, frozenset()):
        raise FailedPrecondition(
            f"{job.name} cannot go from {job.state.name} to {new.name}",
            reason="ILLEGAL_TRANSITION",
        )
    tx.emit(
        "state_changed",
        training_event_pb2.StateChanged(
            previous_state=int(job.state), state=int(new), message=message
        ),
    )
    job.state = new
    job.update_time = now
    if new == JobState.RUNNING and job.start_time is None:
        job.start_time = now
    if new.terminal:
        job.end_time = now
        job.launch_pending = False
        job.cancel_requested = False
    if new == JobState.FAILED:
        job.error = error or error_status(code_pb2.UNKNOWN, message, "FAILED")


def newest_kept(checkpoints: list[CheckpointRecord]) -> CheckpointRecord | None:
    """The checkpoint a new attempt resumes from."""
    kept = [c for c in checkpoints if c.kept]
    return max(kept, key=lambda c: c.step) if kept else None


def lose_attempt(tx: JobTransaction, reason: str, now: datetime, *, max_attempts: int) -> None:
    """The current attempt ended without finishing: start another one that resumes from the
    newest checkpoint, or fail the job when the attempts are used up.

    The attempt number goes up at once, so the lost worker is fenced off (its calls fail with
    STALE_ATTEMPT) even before a new worker starts.
    """
    job = tx.job
    if job.state == JobState.CANCELLING:
        change_state(tx, JobState.CANCELLED, f"cancelled; the worker stopped: {reason}", now)
        return
    if job.attempt >= max_attempts:
        message = f"attempt {job.attempt} of {max_attempts} was lost: {reason}"
        change_state(
            tx,
            JobState.FAILED,
            message,
            now,
            error=error_status(
                code_pb2.ABORTED, message, "ATTEMPTS_EXHAUSTED", attempts=str(job.attempt)
            ),
        )
        return
    resume = newest_kept(tx.checkpoints())
    job.attempt += 1
    job.launch_pending = True
    job.last_heartbeat = None
    job.update_time = now
    tx.emit(
        "resumed",
        training_event_pb2.Resumed(
            attempt=job.attempt, from_step=resume.step if resume else 0, reason=reason
        ),
    )

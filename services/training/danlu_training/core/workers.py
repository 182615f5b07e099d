"""The worker side of a job: assignment, event reports, heartbeats, checkpoint commits and the
final report of an attempt.

Every call names its attempt and carries the attempt's token. The token is checked against the
hash stored when the attempt was launched; then a call from an attempt other than the job's
current one fails with STALE_ATTEMPT: a worker presumed lost and replaced can never change the
job again, even if it comes back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from danlu.training.v1 import training_event_pb2, training_job_pb2
from danlu_kit.auth import hash_token
from danlu_kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from danlu_kit.objectstore import ObjectStore
from danlu_training.core import checkpoints as keep_policy
from danlu_training.core.lifecycle import (
    JobTransaction,
    change_state,
    lose_attempt,
    newest_kept,
)
from danlu_training.core.records import (
    WORKER_EVENT_KINDS,
    CheckpointRecord,
    JobRecord,
    JobState,
    ObjectRef,
    checkpoint_id,
    checkpoint_prefix,
    job_name,
)

if TYPE_CHECKING:
    from danlu_training.adapters.db import TrainingRepository

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# Codes with which a worker says "try again": a new attempt resumes from the newest checkpoint.
TRANSIENT_CODES = frozenset({code_pb2.UNAVAILABLE, code_pb2.ABORTED})


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerIdentity:
    project: str
    job_id: str
    attempt: int
    token: str


@dataclass(frozen=True)
class WorkerEvent:
    kind: str  # one of WORKER_EVENT_KINDS
    payload: Message
    event_time: datetime | None = None


@dataclass(frozen=True)
class Assignment:
    job: JobRecord
    resume_from: CheckpointRecord | None
    checkpoint_prefix: str
    heartbeat_interval_seconds: float


@dataclass(frozen=True)
class NewCheckpoint:
    """What the worker says about a checkpoint it wrote."""

    name: str
    step: int
    epoch: float
    train_loss: float
    validation_loss: float | None
    answers: list[tuple[str, str]]
    manifest_key: str
    manifest_sha256: str
    size_bytes: int


class WorkerSessions:
    def __init__(
        self,
        repo: TrainingRepository,
        store: ObjectStore,
        *,
        max_attempts: int,
        heartbeat_interval_seconds: float,
        schedule: Callable[[], None] = lambda: None,
    ):
        self.repo = repo
        self.store = store
        self.max_attempts = max_attempts
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.schedule = schedule

    # -- identity -------------------------------------------------------------------------

    @staticmethod
    def _authorize(job: JobRecord, who: WorkerIdentity) -> None:
        expected = job.worker_tokens.get(str(who.attempt))
        if expected is None or hash_token(who.token) != expected:
            raise Unauthenticated(
                "the worker token is not valid for this job and attempt",
                reason="WORKER_TOKEN_INVALID",
            )
        if who.attempt != job.attempt:
            raise FailedPrecondition(
                f"attempt {who.attempt} of {job.name} was replaced by attempt {job.attempt}",
                reason="STALE_ATTEMPT",
                metadata={"current_attempt": str(job.attempt)},
            )

    @contextlib.contextmanager
    def _open(self, who: WorkerIdentity) -> Iterator[JobTransaction]:
        """The caller's job, locked, once its identity checked out."""
        with self.repo.job_transaction(who.project, who.job_id) as tx:
            self._authorize(tx.job, who)
            yield tx

    @staticmethod
    def _finished(job: JobRecord) -> FailedPrecondition:
        return FailedPrecondition(
            f"{job.name} is already {job.state.name.lower()}", reason="JOB_FINISHED"
        )

    # -- calls ----------------------------------------------------------------------------

    def assignment(self, who: WorkerIdentity) -> Assignment:
        now = _now()
        with self._open(who) as tx:
            job = tx.job
            if job.state.terminal:
                raise self._finished(job)
            if job.state == JobState.QUEUED:
                change_state(tx, JobState.RUNNING, f"attempt {job.attempt} started", now)
            job.last_heartbeat = now
            resume = newest_kept(tx.checkpoints())
        return Assignment(
            job=tx.job,
            resume_from=resume,
            checkpoint_prefix=checkpoint_prefix(who.project, who.job_id),
            heartbeat_interval_seconds=self.heartbeat_interval_seconds,
        )

    def report(
        self, who: WorkerIdentity, batch_sequence: int, rank: int, events: Sequence[WorkerEvent]
    ) -> None:
        bad = [
            FieldViolation(f"events[{i}]", "must be a log line, metrics or evaluation answers")
            for i, e in enumerate(events)
            if e.kind not in WORKER_EVENT_KINDS
        ]
        if bad:
            raise InvalidArgument.from_violations("INVALID_ARGUMENT", bad)
        now = _now()
        with self._open(who) as tx:
            job = tx.job
            if not tx.first_delivery(who.attempt, rank, batch_sequence):
                return  # a retry of a batch that was applied
            if job.state.terminal:
                raise self._finished(job)
            job.last_heartbeat = now
            for event in events:
                tx.emit(event.kind, event.payload, event_time=event.event_time or now)
                if event.kind == "metrics":
                    self._progress(job, event.payload, now)

    @staticmethod
    def _progress(job: JobRecord, metrics: training_job_pb2.TrainingMetrics, now) -> None:
        job.latest_metrics = metrics
        job.progress_completed = max(job.progress_completed, metrics.step)
        job.progress_eta_seconds = (
            metrics.eta.ToTimedelta().total_seconds() if metrics.HasField("eta") else None
        )
        job.progress_update_time = now
        job.update_time = now

    def heartbeat(self, who: WorkerIdentity) -> bool:
        """Returns whether the worker must stop (cancel requested, or the job ended)."""
        with self._open(who) as tx:
            job = tx.job
            job.last_heartbeat = _now()
            return job.cancel_requested or job.state.terminal

    def commit_checkpoint(
        self, who: WorkerIdentity, new: NewCheckpoint
    ) -> tuple[CheckpointRecord, list[str]]:
        """Record a checkpoint whose manifest is written, apply the keep policy, and delete the
        dropped checkpoints' objects. Returns the record and the names dropped."""
        prefix = f"{checkpoint_prefix(who.project, who.job_id)}{checkpoint_id(new.step)}/"
        self._check_checkpoint_request(who, new, prefix)
        # Identity first (nothing about the store is revealed to a stranger), then the manifest
        # outside the transaction: the object store is slow, the row lock is not held yet.
        job = self.repo.get_job(who.project, who.job_id)
        if job is None:
            raise NotFound(
                f"{job_name(who.project, who.job_id)} not found", reason="TRAINING_JOB_NOT_FOUND"
            )
        self._authorize(job, who)
        try:
            manifest = self.store.get_bytes(prefix + MANIFEST_NAME)
        except NotFound:
            raise FailedPrecondition(
                f"{new.name}: {prefix}{MANIFEST_NAME} is missing; write every file and the "
                "manifest before committing",
                reason="MANIFEST_MISSING",
            ) from None
        digest = hashlib.sha256(manifest).hexdigest()
        if new.manifest_sha256 and digest != new.manifest_sha256.removeprefix("sha256:"):
            raise InvalidArgument.from_violations(
                "DIGEST_MISMATCH",
                [
                    FieldViolation(
                        "checkpoint.manifest.sha256",
                        f"the stored manifest's sha256 is {digest}, not {new.manifest_sha256}",
                    )
                ],
            )
        now = _now()
        with self._open(who) as tx:
            job = tx.job
            existing = {c.step: c for c in tx.checkpoints()}
            if new.step in existing:
                # Idempotent per step: a retried commit gets the first answer.
                record = existing[new.step]
                return record, list(record.deleted_on_commit)
            if job.state.terminal:
                raise self._finished(job)
            record = CheckpointRecord(
                project=who.project,
                job_id=who.job_id,
                step=new.step,
                epoch=new.epoch,
                train_loss=new.train_loss,
                validation_loss=new.validation_loss,
                answers=list(new.answers),
                manifest=ObjectRef(prefix + MANIFEST_NAME, digest, len(manifest)),
                size_bytes=new.size_bytes,
                create_time=now,
                attempt=who.attempt,
            )
            tx.add_checkpoint(record)
            dropped = self._apply_keep_policy(tx, record, now)
            job.last_heartbeat = now
        for checkpoint in dropped:
            try:
                self.store.delete_prefix(checkpoint.prefix)
            except Exception:
                # The record says "not kept" already; deleting the whole job removes leftovers.
                log.warning("could not delete %s", checkpoint.name, exc_info=True)
        return record, record.deleted_on_commit

    @staticmethod
    def _check_checkpoint_request(who: WorkerIdentity, new: NewCheckpoint, prefix: str) -> None:
        expected_name = (
            f"projects/{who.project}/trainingJobs/{who.job_id}/checkpoints/"
            f"{checkpoint_id(new.step)}"
        )
        bad = []
        if new.step < 1:
            bad.append(FieldViolation("checkpoint.step", "must be >= 1"))
        if new.name and new.name != expected_name:
            bad.append(FieldViolation("checkpoint.name", f"must be {expected_name}"))
        if new.manifest_key and new.manifest_key != prefix + MANIFEST_NAME:
            bad.append(
                FieldViolation("checkpoint.manifest.key", f"must be {prefix}{MANIFEST_NAME}")
            )
        if bad:
            raise InvalidArgument.from_violations("INVALID_ARGUMENT", bad)

    @staticmethod
    def _apply_keep_policy(
        tx: JobTransaction, new: CheckpointRecord, now: datetime
    ) -> list[CheckpointRecord]:
        job = tx.job
        checkpoints = tx.checkpoints()
        decision = keep_policy.decide(
            checkpoints, job.resolved_spec.checkpoint.keep, validates=job.has_validation
        )
        for c in checkpoints:
            c.is_best = c.step == decision.best_step
            if c.is_best:
                job.best_checkpoint = c.name
        tx.emit(
            "checkpoint_committed",
            training_event_pb2.CheckpointCommitted(
                checkpoint=new.name, step=new.step, is_best=new.is_best
            ),
        )
        dropped = [c for c in checkpoints if c.step in decision.drop_steps]
        for c in dropped:
            c.kept = False
            tx.emit("checkpoint_deleted", training_event_pb2.CheckpointDeleted(checkpoint=c.name))
        new.deleted_on_commit = [c.name for c in dropped]
        job.update_time = now
        return dropped

    def complete(self, who: WorkerIdentity, error: status_pb2.Status | None) -> None:
        now = _now()
        with self._open(who) as tx:
            job = tx.job
            if job.state.terminal:
                return  # a retried report
            code = error.code if error is not None else code_pb2.OK
            if code == code_pb2.OK:
                if job.state == JobState.QUEUED:
                    change_state(tx, JobState.RUNNING, f"attempt {job.attempt} started", now)
                job.progress_total = max(job.progress_completed, 0) or job.progress_total
                change_state(tx, JobState.SUCCEEDED, "training finished", now)
            elif code == code_pb2.CANCELLED:
                message = "cancelled by user" if job.cancel_requested else "the worker cancelled"
                change_state(tx, JobState.CANCELLED, message, now)
            elif code in TRANSIENT_CODES:
                lose_attempt(
                    tx,
                    f"the worker reported a transient failure: {error.message}",
                    now,
                    max_attempts=self.max_attempts,
                )
            else:
                change_state(
                    tx, JobState.FAILED, error.message or "the worker failed", now, error=error
                )
        self.schedule()

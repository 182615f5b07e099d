"""The training service's tables and the repository the core uses (SQLAlchemy 2).

The jobs table is also the scheduler's queue, so nothing is lost when the service restarts.
Every change to a job goes through :meth:`TrainingRepository.job_transaction`: the job row is
locked (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, whose readers
would otherwise upgrade to writers and fail), the core changes the record and appends events,
and everything commits together. Event sequences come from a per-job counter on the locked row,
so they are gap-free and unique under concurrency.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    delete,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from danlu.training.v1 import training_job_pb2
from danlu_kit import db
from danlu_kit.errors import AlreadyExists, NotFound
from danlu_training.core.records import (
    EVENT_PAYLOADS,
    CheckpointRecord,
    EventRecord,
    JobRecord,
    JobState,
    ObjectRef,
    PinnedInputs,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_training"
_ACTIVE_STATES = [s.name for s in JobState if not s.terminal]


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_project_create_time", "project", "create_time"),
        Index("ix_training_jobs_project_request_id", "project", "request_id"),
    )
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    config_name: Mapped[str] = mapped_column(String(200), default="")
    labels: Mapped[dict] = mapped_column(JSON)
    spec: Mapped[bytes] = mapped_column(LargeBinary)  # TrainingJobSpec, serialized
    resolved_spec: Mapped[bytes] = mapped_column(LargeBinary)
    inputs: Mapped[dict] = mapped_column(JSON)  # PinnedInputs
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # google.rpc.Status
    progress_completed: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_eta_seconds: Mapped[float | None] = mapped_column(Double, nullable=True)
    progress_update_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    latest_metrics: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    best_checkpoint: Mapped[str] = mapped_column(String(400), default="")
    base_model_digest: Mapped[str] = mapped_column(String(80), default="")
    references: Mapped[list] = mapped_column(JSON)
    worker_tokens: Mapped[dict] = mapped_column(JSON)  # attempt -> sha256 of its token
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    launch_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    launch_handle: Mapped[str] = mapped_column(String(400), default="")
    launch_attempt: Mapped[int] = mapped_column(Integer, default=0)
    # The sequence of the job's newest event: the per-job counter events are numbered from.
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    request_id: Mapped[str] = mapped_column(String(128), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "training_events"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CheckpointRow(Base):
    __tablename__ = "training_checkpoints"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Double)
    train_loss: Mapped[float] = mapped_column(Double)
    validation_loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    answers: Mapped[list] = mapped_column(JSON)  # [[prompt, answer], ...]
    manifest: Mapped[dict] = mapped_column(JSON)  # ObjectRef of manifest.json
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    kept: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted_on_commit: Mapped[list] = mapped_column(JSON)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReportBatchRow(Base):
    """Report batches already applied: a retried ReportEvents is applied once."""

    __tablename__ = "training_report_batches"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; they were written as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _parse(message_type: type[Message], data: bytes | None):
    if data is None:
        return None
    message = message_type()
    message.ParseFromString(data)
    return message


# Columns copied one to one between JobRecord and JobRow.
_PLAIN_JOB_FIELDS = (
    "display_name",
    "config_name",
    "labels",
    "attempt",
    "progress_completed",
    "progress_total",
    "progress_eta_seconds",
    "progress_update_time",
    "best_checkpoint",
    "base_model_digest",
    "references",
    "worker_tokens",
    "cancel_requested",
    "cancel_time",
    "last_heartbeat",
    "launch_pending",
    "launch_handle",
    "launch_attempt",
    "request_id",
    "create_time",
    "start_time",
    "end_time",
    "update_time",
)
_TIME_FIELDS = {f for f in _PLAIN_JOB_FIELDS if f.endswith(("_time", "_heartbeat"))}


def _job_record(row: JobRow) -> JobRecord:
    plain = {
        f: _utc(getattr(row, f)) if f in _TIME_FIELDS else getattr(row, f)
        for f in _PLAIN_JOB_FIELDS
    }
    return JobRecord(
        project=row.project,
        job_id=row.job_id,
        spec=_parse(training_job_pb2.TrainingJobSpec, row.spec),
        resolved_spec=_parse(training_job_pb2.TrainingJobSpec, row.resolved_spec),
        inputs=PinnedInputs.from_json(row.inputs),
        state=JobState[row.state],
        error=_parse(status_pb2.Status, row.error),
        latest_metrics=_parse(training_job_pb2.TrainingMetrics, row.latest_metrics),
        # Copies: the core changes them in place, the row must keep what was loaded so that
        # SQLAlchemy sees the difference.
        **{
            **plain,
            "labels": dict(row.labels),
            "references": list(row.references),
            "worker_tokens": dict(row.worker_tokens),
        },
    )


def _write_job(row: JobRow, job: JobRecord) -> None:
    for f in _PLAIN_JOB_FIELDS:
        setattr(row, f, getattr(job, f))
    row.labels = dict(job.labels)
    row.references = list(job.references)
    row.worker_tokens = dict(job.worker_tokens)
    row.spec = job.spec.SerializeToString()
    row.resolved_spec = job.resolved_spec.SerializeToString()
    row.inputs = job.inputs.to_json()
    row.state = job.state.name
    row.error = None if job.error is None else job.error.SerializeToString()
    row.latest_metrics = (
        None if job.latest_metrics is None else job.latest_metrics.SerializeToString()
    )


def _checkpoint_record(row: CheckpointRow) -> CheckpointRecord:
    return CheckpointRecord(
        project=row.project,
        job_id=row.job_id,
        step=row.step,
        epoch=row.epoch,
        train_loss=row.train_loss,
        validation_loss=row.validation_loss,
        answers=[(p, a) for p, a in row.answers],
        manifest=ObjectRef.from_json(row.manifest),
        size_bytes=row.size_bytes,
        create_time=_utc(row.create_time),
        attempt=row.attempt,
        is_best=row.is_best,
        kept=row.kept,
        deleted_on_commit=list(row.deleted_on_commit),
    )


def _write_checkpoint(row: CheckpointRow, c: CheckpointRecord) -> None:
    row.attempt = c.attempt
    row.epoch = c.epoch
    row.train_loss = c.train_loss
    row.validation_loss = c.validation_loss
    row.answers = [list(a) for a in c.answers]
    row.manifest = c.manifest.to_json()
    row.size_bytes = c.size_bytes
    row.is_best = c.is_best
    row.kept = c.kept
    row.deleted_on_commit = list(c.deleted_on_commit)
    row.create_time = c.create_time


def _event_record(row: EventRow) -> EventRecord:
    return EventRecord(
        sequence=row.sequence,
        attempt=row.attempt,
        event_time=_utc(row.event_time),
        kind=row.kind,
        payload=_parse(EVENT_PAYLOADS[row.kind], row.payload),
    )


class _JobTransaction:
    """The repository side of :class:`danlu_training.core.lifecycle.JobTransaction`."""

    def __init__(self, session: Session, row: JobRow, job: JobRecord | None = None):
        self._session = session
        self._row = row
        self.job = _job_record(row) if job is None else job
        self.emitted: list[EventRecord] = []
        self._checkpoints: dict[int, tuple[CheckpointRow | None, CheckpointRecord]] | None = None

    def emit(self, kind, payload, *, attempt=None, event_time=None) -> EventRecord:
        if kind not in EVENT_PAYLOADS or not isinstance(payload, EVENT_PAYLOADS[kind]):
            raise TypeError(f"{kind!r} events carry {EVENT_PAYLOADS[kind].__name__}")
        self._row.last_sequence += 1
        event = EventRecord(
            sequence=self._row.last_sequence,
            attempt=self.job.attempt if attempt is None else attempt,
            event_time=event_time or _now(),
            kind=kind,
            payload=payload,
        )
        self.emitted.append(event)
        return event

    def checkpoints(self) -> list[CheckpointRecord]:
        if self._checkpoints is None:
            rows = self._session.scalars(
                select(CheckpointRow)
                .where(CheckpointRow.project == self._row.project)
                .where(CheckpointRow.job_id == self._row.job_id)
                .order_by(CheckpointRow.step)
            ).all()
            self._checkpoints = {r.step: (r, _checkpoint_record(r)) for r in rows}
        return [record for _, record in self._checkpoints.values()]

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        self.checkpoints()
        assert self._checkpoints is not None
        self._checkpoints[checkpoint.step] = (None, checkpoint)
        self._checkpoints = dict(sorted(self._checkpoints.items()))

    def first_delivery(self, attempt: int, rank: int, batch_sequence: int) -> bool:
        key = (self._row.project, self._row.job_id, attempt, rank, batch_sequence)
        if self._session.get(ReportBatchRow, key) is not None:
            return False
        self._session.add(
            ReportBatchRow(
                project=key[0],
                job_id=key[1],
                attempt=attempt,
                rank=rank,
                batch_sequence=batch_sequence,
                create_time=_now(),
            )
        )
        return True

    def flush(self) -> None:
        _write_job(self._row, self.job)
        for event in self.emitted:
            self._session.add(
                EventRow(
                    project=self._row.project,
                    job_id=self._row.job_id,
                    sequence=event.sequence,
                    attempt=event.attempt,
                    kind=event.kind,
                    payload=event.payload.SerializeToString(),
                    event_time=event.event_time,
                )
            )
        for row, record in (self._checkpoints or {}).values():
            if row is None:
                row = CheckpointRow(project=record.project, job_id=record.job_id, step=record.step)
                self._session.add(row)
            _write_checkpoint(row, record)


class TrainingRepository:
    """All metadata reads and writes of the training service, in short transactions.

    ``on_events`` is called after every commit that appended events (watchers wake up).
    """

    def __init__(self, engine: Engine, on_events: Callable[[], None] = lambda: None):
        self.engine = engine
        self.session = db.session_factory(engine)
        self._on_events = on_events
        self._sqlite = engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        db.migrate(self.engine, MIGRATIONS_DIR, VERSION_TABLE)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self.session() as s:
            if self._sqlite:
                # Take the write lock first: a deferred transaction that read and then writes
                # fails with "database is locked" when another writer committed in between.
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield s

    # -- jobs -----------------------------------------------------------------------------

    def insert_job(self, job: JobRecord, first_event: tuple[str, Message]) -> JobRecord:
        """Insert a new job with its first event. Raises AlreadyExists when the id is taken."""
        with self._write() as s:
            row = JobRow(project=job.project, job_id=job.job_id, last_sequence=0)
            tx = _JobTransaction(s, row, job)
            tx.emit(*first_event)
            tx.flush()
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise AlreadyExists(f"{job.name} already exists", reason="JOB_EXISTS") from None
        self._on_events()
        return job

    @contextlib.contextmanager
    def job_transaction(
        self, project: str, job_id: str, *, missing_ok: bool = False
    ) -> Iterator[_JobTransaction | None]:
        """Lock one job for update; commits when the block ends without an exception.

        A missing job raises NotFound, or yields None with ``missing_ok``."""
        with self._write() as s:
            row = s.get(JobRow, (project, job_id), with_for_update=True)
            if row is None:
                if missing_ok:
                    yield None
                    return
                raise NotFound(
                    f"projects/{project}/trainingJobs/{job_id} not found",
                    reason="TRAINING_JOB_NOT_FOUND",
                )
            tx = _JobTransaction(s, row)
            yield tx
            tx.flush()
            s.commit()
        if tx.emitted:
            self._on_events()

    def get_job(self, project: str, job_id: str) -> JobRecord | None:
        with self.session() as s:
            row = s.get(JobRow, (project, job_id))
            return None if row is None else _job_record(row)

    def find_job_by_request(self, project: str, request_id: str) -> JobRecord | None:
        with self.session() as s:
            row = s.scalars(
                select(JobRow)
                .where(JobRow.project == project, JobRow.request_id == request_id)
                .limit(1)
            ).first()
            return None if row is None else _job_record(row)

    def list_jobs(
        self, project: str, state: JobState | None, after: list | None, limit: int
    ) -> list[JobRecord]:
        """Newest first; ``after`` is the (create_time ISO, job_id) of the previous page's last."""
        with self.session() as s:
            q = select(JobRow).where(JobRow.project == project)
            if state is not None:
                q = q.where(JobRow.state == state.name)
            if after is not None:
                t, job_id = datetime.fromisoformat(after[0]), after[1]
                q = q.where(
                    or_(
                        JobRow.create_time < t,
                        and_(JobRow.create_time == t, JobRow.job_id < job_id),
                    )
                )
            rows = s.scalars(
                q.order_by(JobRow.create_time.desc(), JobRow.job_id.desc()).limit(limit)
            ).all()
            return [_job_record(r) for r in rows]

    def scheduling_view(self) -> list[JobRecord]:
        """What the scheduler looks at: unfinished jobs and jobs with a worker handle, in
        queue order (oldest first)."""
        with self.session() as s:
            rows = s.scalars(
                select(JobRow)
                .where(or_(JobRow.state.in_(_ACTIVE_STATES), JobRow.launch_handle != ""))
                .order_by(JobRow.create_time, JobRow.project, JobRow.job_id)
            ).all()
            return [_job_record(r) for r in rows]

    def delete_job(self, project: str, job_id: str) -> None:
        with self._write() as s:
            for table in (EventRow, CheckpointRow, ReportBatchRow, JobRow):
                s.execute(delete(table).where(table.project == project, table.job_id == job_id))
            s.commit()

    # -- events ---------------------------------------------------------------------------

    def list_events(
        self, project: str, job_id: str, after: int, kinds: list[str], limit: int
    ) -> list[EventRecord]:
        with self.session() as s:
            q = select(EventRow).where(
                EventRow.project == project, EventRow.job_id == job_id, EventRow.sequence > after
            )
            if kinds:
                q = q.where(EventRow.kind.in_(kinds))
            rows = s.scalars(q.order_by(EventRow.sequence).limit(limit)).all()
            return [_event_record(r) for r in rows]

    # -- checkpoints ----------------------------------------------------------------------

    def list_checkpoints(
        self, project: str, job_id: str, after_step: int, limit: int
    ) -> list[CheckpointRecord]:
        with self.session() as s:
            rows = s.scalars(
                select(CheckpointRow)
                .where(
                    CheckpointRow.project == project,
                    CheckpointRow.job_id == job_id,
                    CheckpointRow.step > after_step,
                )
                .order_by(CheckpointRow.step)
                .limit(limit)
            ).all()
            return [_checkpoint_record(r) for r in rows]

    def get_checkpoint(self, project: str, job_id: str, step: int) -> CheckpointRecord | None:
        with self.session() as s:
            row = s.get(CheckpointRow, (project, job_id, step))
            return None if row is None else _checkpoint_record(row)

"""Conversion jobs and their events in the metadata database (tables ``conversion_*``).

A job row keeps the job's resource as its serialized ``ConversionJob`` proto next to the columns
queries need (project, state, create time); events are serialized ``ConversionEvent`` protos
numbered 1..n per job from a counter on the job row, appended in the same transaction as the
change they describe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from danlu.conversion.v1 import conversion_job_pb2 as cj
from danlu_kit import db
from danlu_kit.errors import AlreadyExists, NotFound

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_conversion"


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "conversion_jobs"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[int] = mapped_column(Integer, index=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(128), default="")
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    job: Mapped[bytes] = mapped_column(LargeBinary)


class EventRow(Base):
    __tablename__ = "conversion_events"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event: Mapped[bytes] = mapped_column(LargeBinary)


Update = Callable[[cj.ConversionJob], list[cj.ConversionEvent]]


class ConversionRepository:
    def __init__(self, engine, on_events: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.session = db.session_factory(engine)
        self._lock = threading.Lock()  # one writer at a time (SQLite); cheap elsewhere
        self._on_events = on_events or (lambda: None)

    def migrate(self) -> None:
        db.migrate(self.engine, MIGRATIONS_DIR, VERSION_TABLE)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._lock, self.session() as s, s.begin():
            yield s

    def create(
        self, project: str, job_id: str, job: cj.ConversionJob, request_id: str, event
    ) -> cj.ConversionJob:
        with self._write() as s:
            existing = s.get(JobRow, (project, job_id))
            if existing is not None:
                if request_id and existing.request_id == request_id:
                    return cj.ConversionJob.FromString(existing.job)
                raise AlreadyExists(f"{job.name} already exists", reason="JOB_EXISTS")
            if request_id:
                again = s.scalars(
                    select(JobRow).where(JobRow.project == project, JobRow.request_id == request_id)
                ).first()
                if again is not None:
                    return cj.ConversionJob.FromString(again.job)
            event.sequence = 1
            s.add(
                JobRow(
                    project=project,
                    job_id=job_id,
                    state=job.state,
                    create_time=job.create_time.ToDatetime(),
                    request_id=request_id,
                    last_sequence=1,
                    job=job.SerializeToString(),
                )
            )
            s.add(
                EventRow(
                    project=project, job_id=job_id, sequence=1, event=event.SerializeToString()
                )
            )
        self._on_events()
        return job

    def get(self, project: str, job_id: str) -> cj.ConversionJob:
        with self.session() as s:
            row = s.get(JobRow, (project, job_id))
            if row is None:
                raise NotFound(
                    f"projects/{project}/conversionJobs/{job_id} not found", reason="JOB_NOT_FOUND"
                )
            return cj.ConversionJob.FromString(row.job)

    def update(self, project: str, job_id: str, change: Update) -> cj.ConversionJob:
        """Apply ``change`` to the job and append the events it returns, in one transaction."""
        with self._write() as s:
            row = s.get(JobRow, (project, job_id))
            if row is None:
                raise NotFound(
                    f"projects/{project}/conversionJobs/{job_id} not found", reason="JOB_NOT_FOUND"
                )
            job = cj.ConversionJob.FromString(row.job)
            events = change(job)
            for event in events:
                row.last_sequence += 1
                event.sequence = row.last_sequence
                s.add(
                    EventRow(
                        project=project,
                        job_id=job_id,
                        sequence=row.last_sequence,
                        event=event.SerializeToString(),
                    )
                )
            row.state = job.state
            row.job = job.SerializeToString()
        if events:
            self._on_events()
        return job

    def list(
        self, project: str, state: int, after: list | None, limit: int
    ) -> list[cj.ConversionJob]:
        with self.session() as s:
            q = select(JobRow).where(JobRow.project == project)
            if state:
                q = q.where(JobRow.state == state)
            if after:
                t, job_id = datetime.fromisoformat(after[0]), after[1]
                q = q.where(
                    (JobRow.create_time > t)
                    | ((JobRow.create_time == t) & (JobRow.job_id > job_id))
                )
            rows = s.scalars(q.order_by(JobRow.create_time, JobRow.job_id).limit(limit)).all()
            return [cj.ConversionJob.FromString(r.job) for r in rows]

    def unfinished(self) -> list[tuple[str, str]]:
        with self.session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.state.in_((1, 2, 5)))).all()
            return [(r.project, r.job_id) for r in rows]

    def events(self, project: str, job_id: str, after: int) -> list[cj.ConversionEvent]:
        with self.session() as s:
            rows = s.scalars(
                select(EventRow)
                .where(
                    EventRow.project == project,
                    EventRow.job_id == job_id,
                    EventRow.sequence > after,
                )
                .order_by(EventRow.sequence)
            ).all()
            return [cj.ConversionEvent.FromString(r.event) for r in rows]

    def delete(self, project: str, job_id: str) -> None:
        with self._write() as s:
            row = s.get(JobRow, (project, job_id))
            if row is None:
                raise NotFound(
                    f"projects/{project}/conversionJobs/{job_id} not found", reason="JOB_NOT_FOUND"
                )
            for e in s.scalars(
                select(EventRow).where(EventRow.project == project, EventRow.job_id == job_id)
            ):
                s.delete(e)
            s.delete(row)

"""The inference service's table and the repository the core uses (SQLAlchemy 2)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Engine, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from danlu_inference.core.records import DeploymentRecord
from danlu_kit import db
from danlu_kit.errors import AlreadyExists

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_inference"


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class DeploymentRow(Base):
    __tablename__ = "inference_deployments"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    model: Mapped[str] = mapped_column(String(400))
    engine: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    model_digest: Mapped[str] = mapped_column(String(80), default="")
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The registry's answer for the model at create time (kind, digest, context, contract): a
    # restarted service reloads from its local cache without asking the registry again.
    model_info: Mapped[dict] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _record(r: DeploymentRow) -> DeploymentRecord:
    return DeploymentRecord(
        project=r.project,
        deployment_id=r.deployment_id,
        model=r.model,
        engine=r.engine,
        options=dict(r.options or {}),
        state=r.state,
        model_digest=r.model_digest,
        error=r.error,
        model_info=dict(r.model_info or {}),
        request_id=r.request_id,
        create_time=r.create_time,
        update_time=r.update_time,
    )


class DeploymentRepository:
    """All metadata reads and writes of the inference service, in short transactions."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.session = db.session_factory(engine)

    def migrate(self) -> None:
        db.migrate(self.engine, MIGRATIONS_DIR, VERSION_TABLE)

    def insert(self, d: DeploymentRecord) -> DeploymentRecord:
        now = _now()
        with self.session() as s:
            s.add(
                DeploymentRow(
                    project=d.project,
                    deployment_id=d.deployment_id,
                    model=d.model,
                    engine=d.engine,
                    options=d.options,
                    state=d.state,
                    model_digest=d.model_digest,
                    error=d.error,
                    model_info=d.model_info,
                    request_id=d.request_id,
                    create_time=now,
                    update_time=now,
                )
            )
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise AlreadyExists(
                    f"{d.name} already exists", reason="DEPLOYMENT_EXISTS"
                ) from None
        return replace(d, create_time=now, update_time=now)

    def get(self, project: str, deployment_id: str) -> DeploymentRecord | None:
        with self.session() as s:
            row = s.get(DeploymentRow, (project, deployment_id))
            return None if row is None else _record(row)

    def find_by_request_id(self, project: str, request_id: str) -> DeploymentRecord | None:
        with self.session() as s:
            row = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.project == project, DeploymentRow.request_id == request_id)
                .limit(1)
            ).first()
            return None if row is None else _record(row)

    def list(self, project: str, after: str | None, limit: int) -> list[DeploymentRecord]:
        with self.session() as s:
            q = select(DeploymentRow).where(DeploymentRow.project == project)
            if after is not None:
                q = q.where(DeploymentRow.deployment_id > after)
            rows = s.scalars(q.order_by(DeploymentRow.deployment_id).limit(limit)).all()
            return [_record(r) for r in rows]

    def all(self) -> list[DeploymentRecord]:
        with self.session() as s:
            rows = s.scalars(
                select(DeploymentRow).order_by(DeploymentRow.project, DeploymentRow.deployment_id)
            ).all()
            return [_record(r) for r in rows]

    def update(
        self, project: str, deployment_id: str, *, only_if_state: str | None = None, **values
    ) -> DeploymentRecord | None:
        """Set columns (state, model_digest, error...); None when the row is gone or, with
        ``only_if_state``, is in another state (e.g. deleted while it was loading)."""
        with self.session() as s:
            row = s.get(DeploymentRow, (project, deployment_id), with_for_update=True)
            if row is None or (only_if_state is not None and row.state != only_if_state):
                return None
            for key, value in values.items():
                setattr(row, key, value)
            row.update_time = _now()
            s.commit()
            return _record(row)

    def delete(self, project: str, deployment_id: str) -> None:
        with self.session() as s:
            s.execute(
                delete(DeploymentRow).where(
                    DeploymentRow.project == project,
                    DeploymentRow.deployment_id == deployment_id,
                )
            )
            s.commit()

"""The registry's tables and the repository the core uses (SQLAlchemy 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from danlu_kit import db
from danlu_kit.errors import AlreadyExists
from danlu_registry.core.records import (
    DatasetRecord,
    DatasetVersionRecord,
    ModelFileRecord,
    ModelRecord,
    ReferenceRecord,
    StoredObject,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_registry"


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class DatasetRow(Base):
    __tablename__ = "registry_datasets"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetVersionRow(Base):
    __tablename__ = "registry_dataset_versions"
    __table_args__ = (UniqueConstraint("project", "dataset_id", "digest"),)
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80))
    format: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    source_filename: Mapped[str] = mapped_column(Text, default="")
    raw_object: Mapped[dict] = mapped_column(JSON)
    normalized_object: Mapped[dict] = mapped_column(JSON)
    stats: Mapped[dict] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelRow(Base):
    __tablename__ = "registry_models"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(80))
    revision_id: Mapped[str] = mapped_column(String(63))
    files: Mapped[list] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    model_type: Mapped[str] = mapped_column(String(64), default="")
    architecture: Mapped[str] = mapped_column(String(128), default="")
    max_context_length: Mapped[int] = mapped_column(BigInteger, default=0)
    has_chat_template: Mapped[bool] = mapped_column(Boolean, default=False)
    tokenizer_digest: Mapped[str] = mapped_column(String(80), default="")
    lineage: Mapped[dict] = mapped_column(JSON)
    contract: Mapped[dict] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(128), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReferenceRow(Base):
    __tablename__ = "registry_references"
    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    target: Mapped[str] = mapped_column(String(400), primary_key=True)
    reference_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(400))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Integer id keeps "oldest first" ordering stable across databases.
    seq: Mapped[int] = mapped_column(Integer, default=0)


def _obj(d: dict) -> StoredObject:
    return StoredObject(d["key"], d["sha256"], d["size_bytes"])


def _obj_dict(o: StoredObject) -> dict:
    return {"key": o.key, "sha256": o.sha256, "size_bytes": o.size_bytes}


class RegistryRepository:
    """All metadata reads and writes of the registry, in short transactions."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.session = db.session_factory(engine)

    def migrate(self) -> None:
        db.migrate(self.engine, MIGRATIONS_DIR, VERSION_TABLE)

    # -- references (counted into datasets/models) ------------------------------------------

    def _reference_counts(self, s, project: str, prefix: str) -> dict[str, int]:
        rows = s.execute(
            select(ReferenceRow.target, func.count())
            .where(ReferenceRow.project == project, ReferenceRow.target.startswith(prefix))
            .group_by(ReferenceRow.target)
        )
        return dict(rows.all())

    def count_references(self, project: str, target_prefix: str) -> int:
        with self.session() as s:
            return sum(self._reference_counts(s, project, target_prefix).values())

    def add_reference(
        self, project: str, target: str, reference_id: str, holder: str
    ) -> ReferenceRecord:
        with self.session() as s:
            existing = s.get(ReferenceRow, (project, target, reference_id))
            if existing is None:
                seq = s.scalar(select(func.coalesce(func.max(ReferenceRow.seq), 0))) + 1
                existing = ReferenceRow(
                    project=project,
                    target=target,
                    reference_id=reference_id,
                    holder=holder,
                    create_time=_now(),
                    seq=seq,
                )
                s.add(existing)
                s.commit()
            return self._reference(existing)

    def list_references(self, project: str, target: str, after: int | None, limit: int):
        with self.session() as s:
            q = select(ReferenceRow).where(
                ReferenceRow.project == project, ReferenceRow.target == target
            )
            if after is not None:
                q = q.where(ReferenceRow.seq > after)
            rows = s.scalars(q.order_by(ReferenceRow.seq).limit(limit)).all()
            return [(r.seq, self._reference(r)) for r in rows]

    def delete_reference(self, project: str, target: str, reference_id: str) -> bool:
        with self.session() as s:
            result = s.execute(
                delete(ReferenceRow).where(
                    ReferenceRow.project == project,
                    ReferenceRow.target == target,
                    ReferenceRow.reference_id == reference_id,
                )
            )
            s.commit()
            return result.rowcount > 0

    @staticmethod
    def _reference(r: ReferenceRow) -> ReferenceRecord:
        return ReferenceRecord(r.project, r.target, r.reference_id, r.holder, r.create_time)

    # -- datasets -------------------------------------------------------------------------

    def _dataset(self, s, row: DatasetRow) -> DatasetRecord:
        stats = s.execute(
            select(func.count(), func.max(DatasetVersionRow.create_time)).where(
                DatasetVersionRow.project == row.project,
                DatasetVersionRow.dataset_id == row.dataset_id,
            )
        ).one()
        latest = s.scalars(
            select(DatasetVersionRow.version_id)
            .where(
                DatasetVersionRow.project == row.project,
                DatasetVersionRow.dataset_id == row.dataset_id,
            )
            .order_by(DatasetVersionRow.create_time.desc(), DatasetVersionRow.version_id.desc())
            .limit(1)
        ).first()
        return DatasetRecord(
            project=row.project,
            dataset_id=row.dataset_id,
            description=row.description,
            create_time=row.create_time,
            update_time=row.update_time,
            latest_version=latest,
            version_count=stats[0],
        )

    def get_dataset(self, project: str, dataset_id: str) -> DatasetRecord | None:
        with self.session() as s:
            row = s.get(DatasetRow, (project, dataset_id))
            return None if row is None else self._dataset(s, row)

    def list_datasets(self, project: str, after: str | None, limit: int) -> list[DatasetRecord]:
        with self.session() as s:
            q = select(DatasetRow).where(DatasetRow.project == project)
            if after is not None:
                q = q.where(DatasetRow.dataset_id > after)
            rows = s.scalars(q.order_by(DatasetRow.dataset_id).limit(limit)).all()
            return [self._dataset(s, r) for r in rows]

    def delete_dataset(self, project: str, dataset_id: str) -> list[DatasetVersionRecord]:
        """Delete the dataset rows; returns the versions whose objects the caller removes."""
        with self.session() as s:
            versions = s.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.project == project, DatasetVersionRow.dataset_id == dataset_id
                )
            ).all()
            records = [self._version(v) for v in versions]
            for v in versions:
                s.delete(v)
            s.execute(
                delete(DatasetRow).where(
                    DatasetRow.project == project, DatasetRow.dataset_id == dataset_id
                )
            )
            s.commit()
            return records

    # -- dataset versions -----------------------------------------------------------------

    def _version(self, r: DatasetVersionRow, reference_count: int = 0) -> DatasetVersionRecord:
        return DatasetVersionRecord(
            project=r.project,
            dataset_id=r.dataset_id,
            version_id=r.version_id,
            digest=r.digest,
            format=r.format,
            task=r.task,
            source_filename=r.source_filename,
            raw=_obj(r.raw_object),
            normalized=_obj(r.normalized_object),
            stats=r.stats,
            create_time=r.create_time,
            request_id=r.request_id,
            reference_count=reference_count,
        )

    def _with_refs(self, s, rows) -> list[DatasetVersionRecord]:
        if not rows:
            return []
        prefix = f"projects/{rows[0].project}/datasets/{rows[0].dataset_id}/versions/"
        counts = self._reference_counts(s, rows[0].project, prefix)
        return [self._version(r, counts.get(prefix + r.version_id, 0)) for r in rows]

    def find_version(
        self, project: str, dataset_id: str, *, digest: str = "", request_id: str = ""
    ) -> DatasetVersionRecord | None:
        with self.session() as s:
            q = select(DatasetVersionRow).where(
                DatasetVersionRow.project == project, DatasetVersionRow.dataset_id == dataset_id
            )
            if digest:
                q = q.where(DatasetVersionRow.digest == digest)
            if request_id:
                q = q.where(DatasetVersionRow.request_id == request_id)
            row = s.scalars(q.limit(1)).first()
            return None if row is None else self._with_refs(s, [row])[0]

    def get_version(
        self, project: str, dataset_id: str, version_id: str
    ) -> DatasetVersionRecord | None:
        with self.session() as s:
            if version_id == "latest":
                row = s.scalars(
                    select(DatasetVersionRow)
                    .where(
                        DatasetVersionRow.project == project,
                        DatasetVersionRow.dataset_id == dataset_id,
                    )
                    .order_by(
                        DatasetVersionRow.create_time.desc(), DatasetVersionRow.version_id.desc()
                    )
                    .limit(1)
                ).first()
            else:
                row = s.get(DatasetVersionRow, (project, dataset_id, version_id))
            return None if row is None else self._with_refs(s, [row])[0]

    def list_versions(
        self, project: str, dataset_id: str, after: list | None, limit: int
    ) -> list[DatasetVersionRecord]:
        with self.session() as s:
            q = select(DatasetVersionRow).where(
                DatasetVersionRow.project == project, DatasetVersionRow.dataset_id == dataset_id
            )
            if after is not None:
                # Keyset pagination over (create_time, version_id), both descending.
                t, vid = datetime.fromisoformat(after[0]), after[1]
                q = q.where(
                    or_(
                        DatasetVersionRow.create_time < t,
                        and_(
                            DatasetVersionRow.create_time == t, DatasetVersionRow.version_id < vid
                        ),
                    )
                )
            rows = s.scalars(
                q.order_by(
                    DatasetVersionRow.create_time.desc(), DatasetVersionRow.version_id.desc()
                ).limit(limit)
            ).all()
            return self._with_refs(s, list(rows))

    def add_version(self, version: DatasetVersionRecord, description: str) -> DatasetVersionRecord:
        """Insert the version (and its dataset on first upload) in one transaction.

        Raises AlreadyExists when a concurrent upload committed the same digest first.
        """
        with self.session() as s:
            dataset = s.get(DatasetRow, (version.project, version.dataset_id))
            if dataset is None:
                s.add(
                    DatasetRow(
                        project=version.project,
                        dataset_id=version.dataset_id,
                        description=description,
                        create_time=version.create_time,
                        update_time=version.create_time,
                    )
                )
            else:
                dataset.update_time = version.create_time
            s.add(
                DatasetVersionRow(
                    project=version.project,
                    dataset_id=version.dataset_id,
                    version_id=version.version_id,
                    digest=version.digest,
                    format=version.format,
                    task=version.task,
                    source_filename=version.source_filename,
                    raw_object=_obj_dict(version.raw),
                    normalized_object=_obj_dict(version.normalized),
                    stats=version.stats,
                    request_id=version.request_id,
                    create_time=version.create_time,
                )
            )
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise AlreadyExists(
                    f"{version.name}: the same content was committed concurrently",
                    reason="DUPLICATE_CONTENT",
                ) from None
        return version

    def delete_version(self, project: str, dataset_id: str, version_id: str) -> None:
        with self.session() as s:
            s.execute(
                delete(DatasetVersionRow).where(
                    DatasetVersionRow.project == project,
                    DatasetVersionRow.dataset_id == dataset_id,
                    DatasetVersionRow.version_id == version_id,
                )
            )
            s.commit()

    # -- models ---------------------------------------------------------------------------

    def _model(self, s, r: ModelRow) -> ModelRecord:
        name = f"projects/{r.project}/models/{r.model_id}"
        refs = self._reference_counts(s, r.project, name).get(name, 0)
        return ModelRecord(
            project=r.project,
            model_id=r.model_id,
            kind=r.kind,
            description=r.description,
            digest=r.digest,
            revision_id=r.revision_id,
            files=[ModelFileRecord(f["path"], _obj(f)) for f in r.files],
            size_bytes=r.size_bytes,
            model_type=r.model_type,
            architecture=r.architecture,
            max_context_length=r.max_context_length,
            has_chat_template=r.has_chat_template,
            tokenizer_digest=r.tokenizer_digest,
            lineage=r.lineage,
            contract=r.contract,
            request_id=r.request_id,
            create_time=r.create_time,
            update_time=r.update_time,
            reference_count=refs,
        )

    def get_model(self, project: str, model_id: str) -> ModelRecord | None:
        with self.session() as s:
            row = s.get(ModelRow, (project, model_id))
            return None if row is None else self._model(s, row)

    def list_models(
        self, project: str, kind: str, after: str | None, limit: int
    ) -> list[ModelRecord]:
        with self.session() as s:
            q = select(ModelRow).where(ModelRow.project == project)
            if kind:
                q = q.where(ModelRow.kind == kind)
            if after is not None:
                q = q.where(ModelRow.model_id > after)
            rows = s.scalars(q.order_by(ModelRow.model_id).limit(limit)).all()
            return [self._model(s, r) for r in rows]

    def put_model(self, m: ModelRecord, *, expected_revision: str | None) -> ModelRecord:
        """Insert a model, or swap its revision when ``expected_revision`` is the current one.

        Raises AlreadyExists when the model exists and the caller did not expect it (or another
        upload replaced it in between).
        """
        files = [{"path": f.path, **_obj_dict(f.object)} for f in m.files]
        now = _now()
        with self.session() as s:
            row = s.get(ModelRow, (m.project, m.model_id), with_for_update=True)
            current = None if row is None else row.revision_id
            if current != expected_revision:
                raise AlreadyExists(
                    f"{m.name} already exists; pass replace to upload a new revision",
                    reason="MODEL_EXISTS",
                )
            if row is None:
                row = ModelRow(project=m.project, model_id=m.model_id, create_time=now)
                s.add(row)
            for attr in (
                "kind",
                "description",
                "digest",
                "revision_id",
                "size_bytes",
                "model_type",
                "architecture",
                "max_context_length",
                "has_chat_template",
                "tokenizer_digest",
                "lineage",
                "contract",
                "request_id",
            ):
                setattr(row, attr, getattr(m, attr))
            row.files = files
            row.update_time = now
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise AlreadyExists(
                    f"{m.name} was created concurrently", reason="MODEL_EXISTS"
                ) from None
            return self._model(s, row)

    def delete_model(self, project: str, model_id: str) -> None:
        with self.session() as s:
            s.execute(
                delete(ModelRow).where(ModelRow.project == project, ModelRow.model_id == model_id)
            )
            s.commit()

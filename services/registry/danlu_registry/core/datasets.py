"""Dataset use cases: ingest a version, read, list, download, delete, preview.

The core sees the object store through its port and metadata through the repository; it knows
nothing of gRPC. Upload bytes arrive as a spooled local file (the API layer receives the stream).
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from danlu_kit.errors import AlreadyExists, FailedPrecondition, NotFound
from danlu_kit.objectstore import ObjectInfo, ObjectStore
from danlu_kit.objectstore.artifacts import ArtifactWriter
from danlu_registry.core.formats import DatasetFormat, IngestLimits, normalize_dataset
from danlu_registry.core.records import DatasetRecord, DatasetVersionRecord, StoredObject

if TYPE_CHECKING:
    from danlu_registry.adapters.db import RegistryRepository

log = logging.getLogger(__name__)

RAW_FILE = "raw"
NORMALIZED_FILE = "normalized.jsonl"


@dataclass(frozen=True)
class ReceivedUpload:
    """A dataset upload whose bytes are complete and digest-checked in a local file."""

    project: str
    dataset_id: str
    path: Path
    sha256: str
    size_bytes: int
    filename: str = ""
    format: DatasetFormat | None = None
    description: str = ""
    request_id: str = ""


def dataset_prefix(project: str, dataset_id: str) -> str:
    return f"projects/{project}/datasets/{dataset_id}/"


def version_prefix(project: str, dataset_id: str, version_id: str) -> str:
    return f"{dataset_prefix(project, dataset_id)}versions/{version_id}/"


class Datasets:
    def __init__(
        self,
        repo: RegistryRepository,
        store: ObjectStore,
        *,
        limits: IngestLimits,
        work_dir: Path,
    ):
        self.repo = repo
        self.store = store
        self.limits = limits
        self.work_dir = work_dir

    # -- ingest ---------------------------------------------------------------------------

    def ingest(self, upload: ReceivedUpload) -> tuple[DatasetVersionRecord, bool]:
        """Validate, normalise and commit a new version; identical bytes return the old one."""
        digest = f"sha256:{upload.sha256}"
        if upload.request_id and (
            prior := self.repo.find_version(
                upload.project, upload.dataset_id, request_id=upload.request_id
            )
        ):
            return prior, False
        if existing := self.repo.find_version(upload.project, upload.dataset_id, digest=digest):
            return existing, False

        version_id = uuid.uuid4().hex[:12]
        prefix = version_prefix(upload.project, upload.dataset_id, version_id)
        name = f"projects/{upload.project}/datasets/{upload.dataset_id}/versions/{version_id}"
        with (
            tempfile.NamedTemporaryFile(dir=self.work_dir, suffix=".jsonl") as normalized,
            _VersionUpload(self.store, prefix, upload.path) as artifact,
        ):
            with upload.path.open("rb") as source:
                result = normalize_dataset(
                    source,
                    _StartingSink(normalized, artifact),
                    format=upload.format,
                    filename=upload.filename,
                    limits=self.limits,
                )
            normalized.flush()
            writer = artifact.start()  # a small file's first write was its last
            artifact.raise_if_failed()
            norm = writer.add_file(NORMALIZED_FILE, Path(normalized.name))
            raw = artifact.raw_result()
            stats = _stats_dict(result.stats)
            writer.commit(
                producer="registry",
                lineage={"dataset_version": name},
                extra={
                    "format": result.format.value,
                    "task": result.task,
                    "source_filename": upload.filename,
                    "stats": stats,
                },
            )
        record = DatasetVersionRecord(
            project=upload.project,
            dataset_id=upload.dataset_id,
            version_id=version_id,
            digest=digest,
            format=result.format.value,
            task=result.task,
            source_filename=upload.filename,
            raw=StoredObject(raw.key, raw.sha256 or "", raw.size_bytes),
            normalized=StoredObject(norm.key, norm.sha256 or "", norm.size_bytes),
            stats=stats,
            create_time=datetime.now(UTC),
            request_id=upload.request_id,
        )
        try:
            self.repo.add_version(record, upload.description)
        except AlreadyExists:
            # A concurrent upload of the same bytes won: drop ours and return theirs.
            self.store.delete_prefix(prefix)
            winner = self.repo.find_version(upload.project, upload.dataset_id, digest=digest)
            if winner is None:
                raise
            return winner, False
        except Exception:
            self.store.delete_prefix(prefix)
            raise
        log.info("dataset version committed", extra={"version": record.name, "digest": digest})
        return record, True

    # -- reads ----------------------------------------------------------------------------

    def get_dataset(self, project: str, dataset_id: str) -> DatasetRecord:
        record = self.repo.get_dataset(project, dataset_id)
        if record is None:
            raise NotFound(
                f"projects/{project}/datasets/{dataset_id} not found", reason="DATASET_NOT_FOUND"
            )
        return record

    def get_version(self, project: str, dataset_id: str, version_id: str) -> DatasetVersionRecord:
        record = self.repo.get_version(project, dataset_id, version_id)
        if record is None:
            self.get_dataset(project, dataset_id)  # the dataset itself may be what is missing
            raise NotFound(
                f"projects/{project}/datasets/{dataset_id}/versions/{version_id} not found",
                reason="DATASET_VERSION_NOT_FOUND",
            )
        return record

    def open_object(self, version: DatasetVersionRecord, *, raw: bool) -> Iterator[bytes]:
        return self.store.get((version.raw if raw else version.normalized).key)

    def read_records(self, version: DatasetVersionRecord, count: int) -> list[dict]:
        """The first ``count`` normalised records (streamed; the object is not read whole)."""
        lines = _iter_lines(self.store.get(version.normalized.key))
        return [json.loads(line) for line in islice(lines, count)]

    # -- deletes --------------------------------------------------------------------------

    def delete_version(self, project: str, dataset_id: str, version_id: str) -> None:
        version = self.get_version(project, dataset_id, version_id)
        if version.reference_count:
            raise FailedPrecondition(
                f"{version.name} is referenced by {version.reference_count} resource(s); "
                "delete them (or their references) first",
                reason="RESOURCE_IN_USE",
            )
        # Metadata first: once the row is gone nobody resolves the objects, then remove them.
        self.repo.delete_version(project, dataset_id, version.version_id)
        self.store.delete_prefix(version_prefix(project, dataset_id, version.version_id))

    def delete_dataset(self, project: str, dataset_id: str) -> None:
        dataset = self.get_dataset(project, dataset_id)
        in_use = self.repo.count_references(project, dataset.name + "/versions/")
        if in_use:
            raise FailedPrecondition(
                f"{dataset.name} has versions referenced by {in_use} resource(s)",
                reason="RESOURCE_IN_USE",
            )
        self.repo.delete_dataset(project, dataset_id)
        self.store.delete_prefix(dataset_prefix(project, dataset_id))


class _VersionUpload:
    """A version's artifact, opened at the normaliser's first output, whose raw file uploads
    on a thread of its own: the raw bytes travel to the object store while the normaliser
    (CPU-bound) is still reading them.

    ``start()`` opens the writer and starts the raw upload (once). Leaving the ``with`` block
    waits for that upload to end, then lets the writer delete what it wrote unless committed,
    so clean-up never races an upload in flight. The raw and normalised files are added from
    two threads: artifact writers allow that for different files (their bookkeeping is one
    list append and one dict store each).
    """

    def __init__(self, store: ObjectStore, prefix: str, raw_path: Path) -> None:
        self._store, self._prefix, self._raw_path = store, prefix, raw_path
        self._writer: ArtifactWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._raw: Future[ObjectInfo] | None = None

    def start(self) -> ArtifactWriter:
        if self._writer is None:
            self._writer = ArtifactWriter(self._store, self._prefix)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dataset-raw-upload")
            self._raw = self._pool.submit(self._writer.add_file, RAW_FILE, self._raw_path)
        return self._writer

    def raise_if_failed(self) -> None:
        """Raise the raw upload's error as soon as it has failed."""
        if self._raw is not None and self._raw.done() and self._raw.exception() is not None:
            self._raw.result()

    def raw_result(self) -> ObjectInfo:
        self.start()
        assert self._raw is not None
        return self._raw.result()

    def __enter__(self) -> _VersionUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)


class _StartingSink:
    """The normaliser's output file, which starts the raw upload at its first write.

    The normaliser buffers its output (256 KiB) and writes nothing more once a record is
    invalid, so a file that is broken from the start (the usual bad upload) is never uploaded;
    one found invalid later costs an upload that the writer deletes again.
    """

    def __init__(self, file: BinaryIO, artifact: _VersionUpload) -> None:
        self._file, self._artifact = file, artifact

    def write(self, data: bytes) -> int:
        self._artifact.raise_if_failed()  # the store is failing: stop normalising
        self._artifact.start()
        return self._file.write(data)


def _stats_dict(stats) -> dict:
    return stats if isinstance(stats, dict) else dict(vars(stats))


def _iter_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending

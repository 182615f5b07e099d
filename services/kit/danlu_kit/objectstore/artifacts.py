"""Atomic publishing of multi-file artifacts (DESIGN §3).

An artifact (checkpoint, adapter, merged model, dataset version) is a key prefix holding files
and, written **last**, ``{prefix}/manifest.json`` listing every file with its size and sha256,
the producer, lineage and extra metadata. The manifest is the commit marker: readers trust only
manifests, and a prefix with files but no manifest is an unfinished write that
:func:`collect_garbage` removes once it is old enough.

    with ArtifactWriter(store, "projects/p/trainingJobs/j/checkpoints/step-100") as w:
        w.add_file("model.safetensors", "/tmp/out/model.safetensors")
        w.add_file("config.json", b"{...}")
        manifest = w.commit(producer="trainer/0.1", lineage={"job": "..."})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, BinaryIO

from danlu_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from danlu_kit.objectstore._base import ObjectInfo, ObjectStore, validate_key, validate_prefix
from danlu_kit.objectstore._io import HashingReader

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 1

FileSource = str | os.PathLike[str] | bytes | BinaryIO | Iterable[bytes]


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to the artifact prefix
    size_bytes: int
    sha256: str  # hex


@dataclass(frozen=True)
class Manifest:
    """A committed artifact. ``digest`` (``sha256:<hex>`` of :meth:`canonical_bytes`) names the
    exact content and is what lineage records should point at."""

    prefix: str  # where it was written / read; not part of the canonical bytes
    files: tuple[ManifestFile, ...]
    producer: str
    lineage: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    create_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    format_version: int = MANIFEST_FORMAT_VERSION

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def total_size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def key(self, path: str) -> str:
        """The object key of one of the artifact's files."""
        return f"{self.prefix}/{path}"

    def file(self, path: str) -> ManifestFile:
        for f in self.files:
            if f.path == path:
                return f
        raise NotFound(
            message=f"artifact {self.prefix!r} has no file {path!r}",
            reason="ARTIFACT_FILE_NOT_FOUND",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "producer": self.producer,
            "create_time": _rfc3339(self.create_time),
            "files": [
                {"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in self.files
            ],
            "lineage": dict(self.lineage),
            "extra": dict(self.extra),
        }

    def canonical_bytes(self) -> bytes:
        """Sorted keys, no whitespace, UTF-8: the same manifest always gives the same bytes."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def from_bytes(cls, prefix: str, data: bytes) -> Manifest:
        try:
            doc = json.loads(data)
            version = doc["format_version"]
            if not isinstance(version, int) or version > MANIFEST_FORMAT_VERSION:
                raise FailedPrecondition(
                    message=f"artifact {prefix!r} has manifest format {version!r}; this build "
                    f"reads up to {MANIFEST_FORMAT_VERSION}",
                    reason="ARTIFACT_MANIFEST_UNSUPPORTED",
                )
            return cls(
                prefix=prefix,
                files=tuple(
                    ManifestFile(
                        path=str(f["path"]), size_bytes=int(f["size_bytes"]), sha256=f["sha256"]
                    )
                    for f in doc["files"]
                ),
                producer=str(doc["producer"]),
                lineage=doc.get("lineage") or {},
                extra=doc.get("extra") or {},
                create_time=datetime.fromisoformat(doc["create_time"]),
                format_version=version,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(
                message=f"artifact {prefix!r} has an unreadable manifest: {exc}",
                reason="ARTIFACT_MANIFEST_INVALID",
            ) from exc


class ArtifactWriter:
    """Writes the files of one artifact, then commits them with a manifest.

    As a context manager it deletes what it wrote when the block does not commit (an exception,
    or a forgotten ``commit``): best effort, :func:`collect_garbage` covers a crash.
    """

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = validate_key(prefix.rstrip("/"))
        self._files: dict[str, ManifestFile] = {}
        self._written: list[str] = []
        self._manifest: Manifest | None = None
        self._aborted = False
        self._check_not_committed()

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/{MANIFEST_NAME}"

    def add_file(
        self, relpath: str, source: FileSource, *, length: int | None = None
    ) -> ObjectInfo:
        """Upload one file (a local path, bytes, a binary stream or an iterable of chunks)."""
        self._check_open()
        relpath = validate_key(relpath)
        if relpath == MANIFEST_NAME:
            raise InvalidArgument(
                message=f"{MANIFEST_NAME!r} is reserved for the artifact manifest",
                reason="INVALID_OBJECT_KEY",
            )
        if relpath in self._files:
            raise AlreadyExists(
                message=f"artifact {self.prefix!r} already has a file {relpath!r}",
                reason="ARTIFACT_FILE_EXISTS",
            )
        key = f"{self.prefix}/{relpath}"
        self._written.append(key)  # before the upload: a failed put may leave something behind
        if isinstance(source, (str, os.PathLike)):
            info = self.store.put_file(key, source)
        elif isinstance(source, bytes):
            info = self.store.put_bytes(key, source)
        else:
            info = self.store.put(key, source, length=length)
        assert info.sha256 is not None  # put always hashes on the way through
        self._files[relpath] = ManifestFile(relpath, info.size_bytes, info.sha256)
        return info

    def commit(
        self,
        producer: str,
        lineage: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write the manifest (last): from now on readers see the artifact."""
        self._check_open()
        manifest = Manifest(
            prefix=self.prefix,
            files=tuple(sorted(self._files.values(), key=lambda f: f.path)),
            producer=producer,
            lineage=dict(lineage or {}),
            extra=dict(extra or {}),
        )
        try:
            data = manifest.canonical_bytes()
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                message=f"artifact {self.prefix!r}: lineage and extra must be JSON: {exc}",
                reason="ARTIFACT_METADATA_INVALID",
            ) from exc
        self._check_not_committed()  # narrows the window where two writers race
        self._check_files_still_there()
        self.store.put_bytes(self.manifest_key, data, content_type="application/json")
        self._manifest = manifest
        return manifest

    def abort(self) -> None:
        """Delete what this writer uploaded (best effort)."""
        if self._manifest is not None or self._aborted:
            return
        self._aborted = True
        for key in self._written:
            try:
                self.store.delete(key)
            except Exception:
                log.warning("could not delete %r of an aborted artifact", key, exc_info=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._manifest is None and not self._aborted:
            if exc_type is None:
                log.warning("artifact %r left without commit(); deleting its files", self.prefix)
            self.abort()

    def _check_open(self) -> None:
        if self._manifest is not None or self._aborted:
            raise FailedPrecondition(
                message=f"artifact writer for {self.prefix!r} is already "
                + ("committed" if self._manifest is not None else "aborted"),
                reason="ARTIFACT_WRITER_CLOSED",
            )

    def _check_files_still_there(self) -> None:
        # A writer slower than the GC threshold may have lost files to collect_garbage (an
        # upload in progress is invisible to listing): never commit a manifest over holes.
        for f in self._files.values():
            try:
                size = self.store.stat(f"{self.prefix}/{f.path}").size_bytes
            except NotFound:
                size = None
            if size != f.size_bytes:
                raise FailedPrecondition(
                    message=f"artifact {self.prefix!r}: file {f.path!r} vanished or changed "
                    "before commit (was it garbage-collected?)",
                    reason="ARTIFACT_INCOMPLETE",
                )

    def _check_not_committed(self) -> None:
        if self.store.exists(self.manifest_key):
            raise AlreadyExists(
                message=f"artifact {self.prefix!r} is already committed",
                reason="ARTIFACT_ALREADY_COMMITTED",
            )


def read_manifest(store: ObjectStore, prefix: str) -> Manifest:
    """The manifest of a committed artifact; ``NotFound(ARTIFACT_NOT_COMMITTED)`` otherwise."""
    prefix = validate_key(prefix.rstrip("/"))
    try:
        data = store.get_bytes(f"{prefix}/{MANIFEST_NAME}")
    except NotFound as exc:
        raise NotFound(
            message=f"artifact {prefix!r} does not exist or was never committed",
            reason="ARTIFACT_NOT_COMMITTED",
        ) from exc
    return Manifest.from_bytes(prefix, data)


def verify_artifact(store: ObjectStore, manifest: Manifest) -> None:
    """Re-read every file and check its size and sha256 against the manifest.

    Raises ``FailedPrecondition(reason="ARTIFACT_CORRUPT")`` with one violation per bad file
    (missing, wrong size, wrong hash).
    """
    problems: list[FieldViolation] = []
    for f in manifest.files:
        try:
            with store.get(manifest.key(f.path)) as chunks:
                reader = HashingReader(chunks, name=f.path)
                for _ in reader.chunks():
                    pass
        except NotFound:
            problems.append(FieldViolation(f.path, "missing"))
            continue
        if reader.size_bytes != f.size_bytes:
            problems.append(
                FieldViolation(
                    f.path, f"size is {reader.size_bytes} bytes, manifest says {f.size_bytes}"
                )
            )
        elif reader.sha256 != f.sha256:
            problems.append(
                FieldViolation(f.path, f"sha256 is {reader.sha256}, manifest says {f.sha256}")
            )
    if problems:
        shown = "; ".join(f"{p.field}: {p.description}" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise FailedPrecondition(
            message=f"artifact {manifest.prefix!r} is corrupt: {shown}{more}",
            reason="ARTIFACT_CORRUPT",
            violations=tuple(problems),
        )


def collect_garbage(
    store: ObjectStore,
    prefix_root: str,
    older_than_seconds: float,
    *,
    now: float | None = None,
) -> list[str]:
    """Delete unfinished artifacts under ``prefix_root``; returns the prefixes deleted.

    Candidates are the immediate children ``{prefix_root}/{name}/`` (e.g. the ``step-N``
    folders under a job's ``checkpoints``). A candidate is deleted when it holds no
    ``manifest.json`` at any depth and its newest object is older than
    ``older_than_seconds``: a writer still uploading keeps refreshing that age. A root given too
    high up therefore never deletes committed artifacts below it.

    An upload in progress is invisible until it completes, so the threshold must exceed the
    longest time a writer spends on one file (hours, not minutes); a writer that loses files
    anyway fails at ``commit`` (``ARTIFACT_INCOMPLETE``) instead of publishing holes.
    """
    root = validate_prefix(prefix_root.rstrip("/") + "/") if prefix_root else ""
    now = time.time() if now is None else now
    newest: dict[str, float] = {}
    committed: set[str] = set()
    for info in store.list(root):
        name, sep, rest = info.key[len(root) :].partition("/")
        if not sep:
            continue  # a loose object directly under the root is not an artifact
        child = root + name
        if rest == MANIFEST_NAME or rest.endswith("/" + MANIFEST_NAME):
            committed.add(child)
        modified = info.last_modified.timestamp() if info.last_modified else now
        newest[child] = max(newest.get(child, modified), modified)
    deleted = []
    for child in sorted(newest.keys() - committed):
        if now - newest[child] < older_than_seconds:
            continue
        count = store.delete_prefix(child + "/")
        log.info("collected unfinished artifact %r (%d objects)", child, count)
        deleted.append(child)
    return deleted


def _rfc3339(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``, e.g. ``2025-01-02T03:04:05.000006Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""Object store adapter over a local directory (embedded mode, tests).

Keys map to files below the root (``a/b.bin`` -> ``ROOT/a/b.bin``), so an operator can look at
the data with ordinary tools. Writes go to ``ROOT/.danlu-tmp/`` (same filesystem), are fsynced
and then renamed into place, so a reader never sees a partial object. Unlike S3, a key cannot
be both an object and a "directory" of other keys (``a`` and ``a/b``): such a put fails with
``FailedPrecondition(reason="OBJECT_KEY_CONFLICT")``.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from danlu_kit.errors import FailedPrecondition, NotFound
from danlu_kit.objectstore._base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    RESERVED_TOP_LEVEL,
    BaseObjectStore,
    ByteSource,
    ObjectInfo,
    validate_key,
    validate_prefix,
)
from danlu_kit.objectstore._io import ChunkStream, HashingReader, publish_file, write_temp_file

# Temporary files older than this are leftovers of a crashed process.
_STALE_TMP_SECONDS = 24 * 3600


class LocalObjectStore(BaseObjectStore):
    def __init__(self, root: str | os.PathLike[str], *, write_chunk_size: int = 1 << 20) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = self.root / RESERVED_TOP_LEVEL
        self._write_chunk_size = write_chunk_size
        self._sweep_stale_temp_files()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def put(
        self,
        key: str,
        source: ByteSource,
        *,
        length: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,  # not stored: files carry no content type
    ) -> ObjectInfo:
        dest = self._path(key)
        reader = HashingReader(source, expected_length=length, name=key)
        tmp = write_temp_file(self._tmp_dir, reader.chunks(self._write_chunk_size))
        mtime = tmp.stat().st_mtime  # the rename keeps it
        try:
            publish_file(tmp, dest)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise FailedPrecondition(
                message=f"object key {key!r} conflicts with an existing object or key prefix",
                reason="OBJECT_KEY_CONFLICT",
            ) from exc
        return ObjectInfo(
            key=key,
            size_bytes=reader.size_bytes,
            sha256=reader.sha256,
            last_modified=_utc(mtime),
        )

    def get(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkStream:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - the stream closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise _not_found(key) from exc
        return ChunkStream(iter(lambda: f.read(chunk_size), b""), f.close)

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise _not_found(key) from exc
        if not statmod.S_ISREG(st.st_mode):
            raise _not_found(key)
        return _info(key, st)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = validate_prefix(prefix)
        # Walk only the deepest directory the prefix names completely.
        start = self.root.joinpath(*prefix.split("/")[:-1])
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [
                d
                for d in dirnames
                if (rel_dir or d != RESERVED_TOP_LEVEL) and _may_match(rel_dir + d + "/", prefix)
            ]
            for name in filenames:
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:  # deleted while we walked
                    continue
                if statmod.S_ISREG(st.st_mode):
                    found.append(_info(key, st))
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return  # not an object: deleting is idempotent
        self._prune_empty_dirs(path.parent)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _prune_empty_dirs(self, directory: Path) -> None:
        # Empty directories are invisible to S3-style listing; drop them so the tree stays tidy.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            directory = directory.parent

    def _sweep_stale_temp_files(self) -> None:
        if not self._tmp_dir.is_dir():
            return
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in os.scandir(self._tmp_dir):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue


def _may_match(dir_key: str, prefix: str) -> bool:
    """Whether keys below ``dir_key`` (ending in '/') can start with ``prefix``."""
    return dir_key.startswith(prefix) or prefix.startswith(dir_key)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key=key, size_bytes=st.st_size, last_modified=_utc(st.st_mtime))


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _not_found(key: str) -> NotFound:
    return NotFound(message=f"object {key!r} does not exist", reason="OBJECT_NOT_FOUND")

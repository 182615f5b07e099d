"""The object store port: value types, key rules and the conveniences both adapters share.

Adapters implement the five primitives (``put``, ``get``, ``stat``, ``list``, ``delete``); the
rest of the port (``put_file``, ``put_bytes``, ``get_bytes``, ``download_file``, ``exists``,
``delete_prefix``) is written once here on top of them so both adapters behave identically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from danlu_kit.errors import InvalidArgument, NotFound
from danlu_kit.objectstore._io import ChunkStream, HashingReader, publish_file, write_temp_file

DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_CHUNK_SIZE = 1 << 20

# Where the local adapter keeps in-flight writes. Reserved in both adapters so that a key is
# valid in one exactly when it is valid in the other.
RESERVED_TOP_LEVEL = ".danlu-tmp"

_MAX_KEY_BYTES = 1024  # the S3 limit

ByteSource = BinaryIO | Iterable[bytes] | bytes | bytearray | memoryview


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``sha256`` (hex) is known only where the bytes flowed through this process (the result of
    ``put``); ``stat`` and ``list`` leave it ``None``: manifests are the place that records it.
    """

    key: str
    size_bytes: int
    sha256: str | None = None
    etag: str | None = None
    last_modified: datetime | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Flat key -> bytes storage with streaming in both directions and bounded memory."""

    def put(
        self,
        key: str,
        source: ByteSource,
        *,
        length: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        """Store ``source`` under ``key``; readers see the old object or the new one, never a
        mix. With ``length`` given, a source yielding another number of bytes is rejected
        (``InvalidArgument`` reason ``OBJECT_SIZE_MISMATCH``) and nothing is stored."""
        ...

    def put_file(
        self, key: str, path: str | os.PathLike[str], *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo: ...

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo: ...

    def get(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkStream:
        """Open ``key`` for reading (``NotFound`` at once when missing). The result iterates
        chunks of at most ``chunk_size`` bytes; use it in a ``with`` block (or iterate it to the
        end) so the underlying file or connection is released."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory: for small objects such as manifests."""
        ...

    def download_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy ``key`` to ``path`` through a temporary file, so ``path`` is never partial."""
        ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (plain string prefix), sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix``; returns how many."""
        ...


def validate_key(key: str) -> str:
    """Reject keys that could escape a local root or mean different things to the adapters."""
    if not isinstance(key, str) or not key:
        raise _bad_key(key, "must be a non-empty string")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise _bad_key(key, f"is longer than {_MAX_KEY_BYTES} bytes")
    if key.startswith("/") or key.endswith("/"):
        raise _bad_key(key, "must not start or end with '/'")
    _check_segments(key, key.split("/"))
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix may be empty or end in '/' or in a partial segment; complete segments follow
    the key rules."""
    if not isinstance(prefix, str):
        raise _bad_key(prefix, "must be a string")
    if prefix.startswith("/"):
        raise _bad_key(prefix, "must not start with '/'")
    if prefix:
        _check_segments(prefix, prefix.split("/")[:-1])
    return prefix


def _check_segments(key: str, segments: list[str]) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise _bad_key(key, "must not contain empty, '.' or '..' path segments")
    if "\x00" in key:
        raise _bad_key(key, "must not contain NUL")
    if segments and segments[0] == RESERVED_TOP_LEVEL:
        raise _bad_key(key, f"must not start with the reserved {RESERVED_TOP_LEVEL!r}")


def _bad_key(key: object, why: str) -> InvalidArgument:
    return InvalidArgument(message=f"object key {key!r} {why}", reason="INVALID_OBJECT_KEY")


class BaseObjectStore:
    """Conveniences of the port, defined once in terms of the adapter primitives."""

    # The primitives each adapter provides (declared for type checkers).
    def put(
        self,
        key: str,
        source: ByteSource,
        *,
        length: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        raise NotImplementedError

    def get(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkStream:
        raise NotImplementedError

    def stat(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    # Derived operations.
    def put_file(
        self, key: str, path: str | os.PathLike[str], *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        with open(path, "rb") as f:
            return self.put(key, f, length=os.fstat(f.fileno()).st_size, content_type=content_type)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        return self.put(key, io.BytesIO(data), length=len(data), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        with self.get(key) as chunks:
            return b"".join(chunks)

    def download_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        dest = Path(path)
        with self.get(key) as chunks:
            reader = HashingReader(chunks, name=key)
            tmp = write_temp_file(dest.parent, reader.chunks())
        publish_file(tmp, dest)
        return ObjectInfo(key=key, size_bytes=reader.size_bytes, sha256=reader.sha256)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(validate_delete_prefix(prefix))]
        for key in keys:
            self.delete(key)
        return len(keys)


def validate_delete_prefix(prefix: str) -> str:
    # An empty prefix would wipe the whole store: never what a caller means.
    if not prefix:
        raise InvalidArgument(
            message="delete_prefix needs a non-empty prefix", reason="INVALID_OBJECT_KEY"
        )
    return validate_prefix(prefix)

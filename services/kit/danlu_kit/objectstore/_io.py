"""Byte plumbing shared by the adapters: a hashing reader, a closable chunk stream, atomic files.

Everything here works on bounded pieces so no object is ever held whole in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from danlu_kit.errors import InvalidArgument

_BytesLike = bytes | bytearray | memoryview


class HashingReader:
    """A file-like view (``read(n)``) of a file or an iterable of byte chunks that counts and
    sha256-hashes what flows through it.

    ``read(n)`` returns exactly ``n`` bytes until the source runs out: callers such as
    minio's part reader then need one call per part instead of concatenating small pieces.
    With ``expected_length`` set, a source that is shorter or longer raises
    ``InvalidArgument(reason="OBJECT_SIZE_MISMATCH")`` from ``read`` *before* the caller has
    seen the end, so an upload in progress is abandoned rather than committed.
    """

    def __init__(
        self,
        source: BinaryIO | Iterable[bytes] | _BytesLike,
        *,
        expected_length: int | None = None,
        name: str = "object",
    ) -> None:
        if isinstance(source, _BytesLike):
            source = io.BytesIO(source)
        if expected_length is not None and expected_length < 0:
            raise InvalidArgument(
                message=f"length of {name!r} must not be negative", reason="OBJECT_SIZE_MISMATCH"
            )
        self._file: BinaryIO | None = source if hasattr(source, "read") else None  # type: ignore[assignment]
        self._chunks: Iterator[bytes] | None = None if self._file is not None else iter(source)  # type: ignore[arg-type]
        self._pending = memoryview(b"")  # the unread tail of the last oversized chunk
        self._hash = hashlib.sha256()
        self._eof = False
        self._expected = expected_length
        self._name = name
        self.size_bytes = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(self.chunks())
        data = self._fill(size)
        self._account(data)
        return data

    def _fill(self, size: int) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the source."""
        first = self._next_piece(size) if size and not self._eof else b""
        if len(first) == size:
            return first
        if not first:
            self._eof = True
            return first
        # Gather in a BytesIO: its getvalue() hands over the buffer without the extra copy a
        # list + join needs, so a part costs ~1x its size here, not 2x.
        buf = io.BytesIO()
        buf.write(first)
        del first
        while buf.tell() < size:
            piece = self._next_piece(size - buf.tell())
            if not piece:
                self._eof = True
                break
            buf.write(piece)
        return buf.getvalue()

    def finish(self) -> None:
        """Check that the source ends where declared, for consumers that may read nothing at
        all (minio does not read for an empty object)."""
        self.read(0)

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Iterate the rest of the source in pieces of ``size`` bytes."""
        while chunk := self.read(size):
            yield chunk

    def _next_piece(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the source; empty only at its end."""
        if self._file is not None:
            data = self._file.read(limit)
            return data if isinstance(data, bytes) else bytes(data or b"")
        if not self._pending:
            self._pending = self._next_chunk()
        piece, self._pending = bytes(self._pending[:limit]), self._pending[limit:]
        return piece

    def _next_chunk(self) -> memoryview:
        assert self._chunks is not None
        for chunk in self._chunks:
            if not isinstance(chunk, _BytesLike):
                raise TypeError(f"source of {self._name!r} yielded {type(chunk).__name__}")
            if chunk:  # an empty chunk is not the end of an iterable
                return memoryview(chunk).cast("B")
        return memoryview(b"")

    def _account(self, data: bytes) -> None:
        self._hash.update(data)
        self.size_bytes += len(data)
        expected = self._expected
        if expected is None:
            return
        if self.size_bytes > expected or (self._eof and self.size_bytes < expected):
            raise self._mismatch()
        if self.size_bytes == expected and not self._eof:
            # Look one byte ahead so an overlong source fails before the caller finishes.
            if self._next_piece(1):
                raise self._mismatch()
            self._eof = True

    def _mismatch(self) -> InvalidArgument:
        got = "more" if self.size_bytes >= (self._expected or 0) else f"only {self.size_bytes}"
        return InvalidArgument(
            message=f"source of {self._name!r} has {got} bytes, {self._expected} were declared",
            reason="OBJECT_SIZE_MISMATCH",
        )


class ChunkStream(Iterator[bytes]):
    """An iterator of byte chunks that owns a resource (file, HTTP response).

    The resource is released when the iterator is exhausted, on ``close()``, at the end of a
    ``with`` block, or (as a last resort) when the stream is garbage-collected.
    """

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> bytes:
        if self._on_close is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:  # StopIteration included: release as soon as we are done
            self.close()
            raise

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is None:
            return
        try:
            if hasattr(self._chunks, "close"):
                self._chunks.close()
        finally:
            on_close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def write_temp_file(directory: Path, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to a new durable (fsynced) temporary file in ``directory``.

    Put the temporary file on the destination's filesystem so ``publish_file`` is a rename.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish_file(tmp: Path, dest: Path) -> None:
    """Atomically move ``tmp`` to ``dest`` (creating parent directories) and make the rename
    durable. Readers see the old file or the new one, never a partial one."""
    try:
        for attempt in range(3):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the (empty) parent between mkdir and rename.
                if attempt == 2 or not tmp.exists():
                    raise
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

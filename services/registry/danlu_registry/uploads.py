"""Receiving client-streamed uploads into local spool files (bounded memory, digest-checked).

Transport-level checks live here: header first, chunk size, per-file and whole-stream SHA-256,
expected sizes, and a stream that ends early. Content validation is the core's job.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from danlu_kit.errors import FieldViolation, InvalidArgument

MAX_CHUNK_BYTES = 1024 * 1024


def malformed(
    field_path: str, description: str, reason: str = "UPLOAD_MALFORMED"
) -> InvalidArgument:
    return InvalidArgument.from_violations(
        reason, [FieldViolation(field_path, description)], "the upload stream is malformed"
    )


class HashingFile:
    """A spool file that hashes what is written to it."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if len(data) > MAX_CHUNK_BYTES:
            raise malformed("chunk", f"{len(data)} bytes; chunks are at most {MAX_CHUNK_BYTES}")
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> str:
        self._file.close()
        return self._hash.hexdigest()


def check_digest(claimed: str, actual: str, where: str) -> None:
    if claimed.lower() != actual:
        raise malformed(
            where,
            f"SHA-256 {claimed!r} does not match the received bytes ({actual})",
            reason="DIGEST_MISMATCH",
        )


@dataclass
class SpooledDataset:
    header: Any
    path: Path
    sha256: str
    size_bytes: int


async def receive_dataset(requests: AsyncIterator, spool_dir: Path) -> SpooledDataset:
    """Header, chunks, trailer -> a complete local file; the caller deletes ``path``."""
    header = None
    spool: HashingFile | None = None
    try:
        async for message in requests:
            kind = message.WhichOneof("payload")
            if header is None:
                if kind != "header":
                    raise malformed("header", "the first message must be the header")
                header = message.header
                spool = HashingFile(spool_dir / f"upload-{uuid.uuid4().hex}")
            elif kind == "chunk":
                spool.write(message.chunk)
            elif kind == "trailer":
                digest = spool.close()
                check_digest(message.trailer.sha256, digest, "trailer.sha256")
                if header.size_bytes and header.size_bytes != spool.size:
                    raise malformed(
                        "header.size_bytes",
                        f"expected {header.size_bytes} bytes, received {spool.size}",
                    )
                async for _extra in requests:
                    raise malformed("trailer", "no message may follow the trailer")
                return SpooledDataset(header, spool.path, digest, spool.size)
            else:
                raise malformed(kind or "payload", "unexpected message (header was already sent)")
        raise malformed(
            "trailer",
            "the stream ended without a trailer (upload incomplete)",
            reason="UPLOAD_INCOMPLETE",
        )
    except BaseException:
        if spool is not None:
            spool.close()
            spool.path.unlink(missing_ok=True)
        raise


def safe_relative_path(path: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or path.startswith("./"):
        raise malformed("file.path", f"{path!r} must be a relative path without '..'")
    return p.as_posix()


@dataclass
class SpooledModel:
    header: Any
    directory: Path
    file_sha256: dict[str, str] = field(default_factory=dict)


async def receive_model(requests: AsyncIterator, directory: Path) -> SpooledModel:
    """Header, then per file: file header, chunks, file trailer -> files under ``directory``."""
    result: SpooledModel | None = None
    current: tuple[str, int, HashingFile] | None = None
    async for message in requests:
        kind = message.WhichOneof("payload")
        if result is None:
            if kind != "header":
                raise malformed("header", "the first message must be the header")
            result = SpooledModel(message.header, directory)
        elif kind == "file":
            if current is not None:
                raise malformed("file", f"{current[0]!r} was not ended with file_end")
            relpath = safe_relative_path(message.file.path)
            if relpath in result.file_sha256:
                raise malformed("file.path", f"{relpath!r} was sent twice")
            target = directory / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            current = (relpath, message.file.size_bytes, HashingFile(target))
        elif kind == "chunk":
            if current is None:
                raise malformed("chunk", "bytes sent outside a file")
            current[2].write(message.chunk)
        elif kind == "file_end":
            if current is None:
                raise malformed("file_end", "no file is open")
            relpath, expected, spool = current
            digest = spool.close()
            check_digest(message.file_end.sha256, digest, f"file_end.sha256 ({relpath})")
            if expected and expected != spool.size:
                raise malformed(
                    "file.size_bytes",
                    f"{relpath}: expected {expected} bytes, received {spool.size}",
                )
            result.file_sha256[relpath] = digest
            current = None
        else:
            raise malformed(kind or "payload", "unexpected message")
    if result is None:
        raise malformed("header", "empty upload stream")
    if current is not None:
        raise malformed(
            "file_end", f"the stream ended inside {current[0]!r}", reason="UPLOAD_INCOMPLETE"
        )
    if not result.file_sha256:
        raise malformed("file", "the upload contains no files")
    return result

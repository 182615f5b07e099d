"""Object store port (DESIGN §3) with a local-directory adapter and an S3 adapter.

Pick one with :func:`open_object_store`::

    open_object_store("file:///var/lib/danlu/objects")          # or a plain path
    open_object_store("s3://danlu?endpoint=http://127.0.0.1:8333",
                      access_key=..., secret_key=...)
    open_object_store("s3://danlu?endpoint=https://s3.eu-west-1.amazonaws.com&region=eu-west-1",
                      access_key=..., secret_key=...)

Credentials are arguments, never part of the URL, so URLs can be logged.
Multi-file artifacts with a commit marker live in :mod:`danlu_kit.objectstore.artifacts`.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from danlu_kit.errors import InvalidArgument
from danlu_kit.objectstore._base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ByteSource,
    ObjectInfo,
    ObjectStore,
)
from danlu_kit.objectstore._io import ChunkStream
from danlu_kit.objectstore.local import LocalObjectStore
from danlu_kit.objectstore.s3 import S3ObjectStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONTENT_TYPE",
    "ByteSource",
    "ChunkStream",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "open_object_store",
]

_DEFAULT_S3_ENDPOINT = "https://s3.amazonaws.com"
_S3_QUERY_KEYS = {"endpoint", "region"}


def open_object_store(
    url: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> ObjectStore:
    """Open the store a URL names; for S3, create the bucket if it is missing.

    ``file:///abs/dir`` or a plain path: :class:`LocalObjectStore`.
    ``s3://bucket?endpoint=http(s)://host:port[&region=...]``: :class:`S3ObjectStore` (TLS when
    the endpoint is https; ``region`` argument wins over the query; AWS when no endpoint).
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise _bad_url("a file URL must be file:///absolute/path")
        path = unquote(parts.path) if parts.scheme else url
        if not path:
            raise _bad_url("the local object store needs a directory")
        return LocalObjectStore(path)
    if parts.scheme != "s3":
        raise _bad_url(f"unsupported scheme {parts.scheme!r} (use file:// or s3://)")
    # Don't echo the URL itself in errors: someone may have put a secret into it.
    if "@" in parts.netloc:
        raise _bad_url("pass S3 credentials as arguments, not inside the URL")
    if not parts.netloc or parts.path not in ("", "/"):
        raise _bad_url("an S3 URL must be s3://bucket?endpoint=... (no key prefix)")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - _S3_QUERY_KEYS
    if unknown:
        raise _bad_url(f"unknown S3 URL parameters {sorted(unknown)}")
    endpoint = query.get("endpoint", [_DEFAULT_S3_ENDPOINT])[-1]
    store = S3ObjectStore(
        endpoint,
        parts.netloc,
        access_key=access_key,
        secret_key=secret_key,
        region=region or query.get("region", [None])[-1],
    )
    store.ensure_bucket()
    return store


def _bad_url(why: str) -> InvalidArgument:
    return InvalidArgument(message=f"object store URL: {why}", reason="INVALID_OBJECT_STORE_URL")

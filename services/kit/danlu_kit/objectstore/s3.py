"""Object store adapter for S3 (AWS, MinIO, SeaweedFS, Ceph) through the ``minio`` client.

Memory stays bounded: uploads go through minio's multipart ``put_object`` reading one part at a
time (at most about ``part_size * (parallel_uploads + 2)`` bytes in flight), downloads stream
the HTTP response in chunks. The HTTP pool has short connect timeouts and few retries so an
unreachable store turns into ``Unavailable`` within seconds instead of minio's five minutes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import check_bucket_name

from danlu_kit.errors import InvalidArgument, NotFound, Unavailable
from danlu_kit.objectstore._base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BaseObjectStore,
    ByteSource,
    ObjectInfo,
    validate_delete_prefix,
    validate_key,
    validate_prefix,
)
from danlu_kit.objectstore._io import ChunkStream, HashingReader

MIB = 1 << 20
_MIN_PART_SIZE = 5 * MIB  # S3 limits
_MAX_PARTS = 10_000

_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchVersion"})
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
    }
)
_ALREADY_HAVE_BUCKET = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class S3ObjectStore(BaseObjectStore):
    """One bucket of an S3 endpoint.

    ``part_size`` bounds the memory of an upload and, for uploads of unknown length, the largest
    object (``part_size * 10000``: 156 GiB at the default 16 MiB). Uploads of known length pick
    a larger part size where they need it.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        part_size: int = 16 * MIB,
        parallel_uploads: int = 2,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_retries: int = 3,
        cert_check: bool = True,
    ) -> None:
        parts = urlsplit(endpoint)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise InvalidArgument(
                message="S3 endpoint must look like http(s)://host[:port]",
                reason="INVALID_OBJECT_STORE_URL",
            )
        if part_size < _MIN_PART_SIZE:
            raise InvalidArgument(
                message=f"S3 part size must be at least {_MIN_PART_SIZE} bytes",
                reason="INVALID_OBJECT_STORE_URL",
            )
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise InvalidArgument(
                message=f"invalid S3 bucket name {bucket!r}", reason="INVALID_OBJECT_STORE_URL"
            ) from exc
        if "@" in parts.netloc:  # don't echo it: it may hold a secret
            raise InvalidArgument(
                message="pass S3 credentials as arguments, not inside the endpoint URL",
                reason="INVALID_OBJECT_STORE_URL",
            )
        host = parts.netloc
        self.endpoint = f"{parts.scheme}://{host}"
        self.bucket = bucket
        self.region = region
        self._part_size = part_size
        self._parallel_uploads = max(1, parallel_uploads)
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max(10, 2 * self._parallel_uploads),
            cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=max_retries,
                backoff_factor=0.2,
                backoff_max=2.0,
                status_forcelist=(500, 502, 503, 504),
            ),
        )
        self._client = Minio(
            host,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=self._http,
            cert_check=cert_check,
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.endpoint!r}, bucket={self.bucket!r})"

    def close(self) -> None:
        """Drop pooled connections."""
        self._http.clear()

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (concurrent creators are fine)."""
        with self._translate():
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code not in _ALREADY_HAVE_BUCKET:
                    raise

    def put(
        self,
        key: str,
        source: ByteSource,
        *,
        length: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        validate_key(key)
        reader = HashingReader(source, expected_length=length, name=key)
        if length == 0:
            reader.finish()  # minio reads nothing for an empty object
        with self._translate(key):
            result = self._client.put_object(
                self.bucket,
                key,
                reader,  # type: ignore[arg-type]  # duck-typed: minio only calls read(n)
                length=-1 if length is None else length,
                content_type=content_type,
                part_size=self._part_size_for(length),
                num_parallel_uploads=self._parallel_uploads,
            )
        return ObjectInfo(
            key=key,
            size_bytes=reader.size_bytes,
            sha256=reader.sha256,
            etag=_unquote(result.etag),
            last_modified=result.last_modified,
        )

    def get(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkStream:
        validate_key(key)
        with self._translate(key):
            response = self._client.get_object(self.bucket, key)

        def chunks() -> Iterator[bytes]:
            with self._translate(key):
                yield from response.stream(chunk_size)

        def release() -> None:
            # close() first: a half-read connection must not go back to the pool as reusable.
            response.close()
            response.release_conn()

        return ChunkStream(chunks(), release)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._translate(key):
            obj = self._client.stat_object(self.bucket, key)
        return ObjectInfo(
            key=key,
            size_bytes=obj.size or 0,
            etag=_unquote(obj.etag),
            last_modified=obj.last_modified,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        with self._translate():
            found = [
                ObjectInfo(
                    key=obj.object_name or "",
                    size_bytes=obj.size or 0,
                    etag=_unquote(obj.etag),
                    last_modified=obj.last_modified,
                )
                for obj in self._client.list_objects(
                    self.bucket, prefix=prefix or None, recursive=True
                )
                if not obj.is_dir
            ]
        # S3 promises UTF-8 binary order, which is code point order; not every S3 keeps it
        # across "directories", so sort rather than trust.
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            with self._translate(key):
                self._client.remove_object(self.bucket, key)
        except NotFound:
            pass  # S3 deletes are idempotent; some servers still say NoSuchKey

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(validate_delete_prefix(prefix))]
        with self._translate():
            # remove_objects batches 1000 keys per request and yields only the failures.
            errors = list(self._client.remove_objects(self.bucket, map(DeleteObject, keys)))
        if errors:
            first = errors[0]
            raise Unavailable(
                message=f"object store at {self.endpoint} could not delete {len(errors)} of "
                f"{len(keys)} objects under {prefix!r} (first: {first.name!r}: {first.code})",
                reason="OBJECT_STORE_UNAVAILABLE",
            )
        return len(keys)

    def _part_size_for(self, length: int | None) -> int:
        if length is None:
            return self._part_size
        # Keep within S3's 10000 parts, in whole MiB.
        needed = math.ceil(length / _MAX_PARTS / MIB) * MIB
        return max(self._part_size, needed)

    @contextmanager
    def _translate(self, key: str | None = None) -> Iterator[None]:
        """Turn minio/urllib3 failures into the kit's typed errors (no credentials in them)."""
        try:
            yield
        except S3Error as exc:
            raise self._s3_error(exc, key) from exc
        except (
            ServerError,
            InvalidResponseError,
            urllib3.exceptions.HTTPError,
            ConnectionError,
        ) as exc:
            raise Unavailable(
                message=f"object store at {self.endpoint} is unavailable: "
                f"{type(exc).__name__}: {_short(exc)}",
                reason="OBJECT_STORE_UNAVAILABLE",
            ) from exc

    def _s3_error(self, exc: S3Error, key: str | None) -> Exception:
        code = exc.code or "Unknown"
        if code in _MISSING_KEY_CODES and key is not None:
            return NotFound(
                message=f"object {key!r} does not exist in bucket {self.bucket!r}",
                reason="OBJECT_NOT_FOUND",
            )
        if code in _AUTH_CODES:
            return Unavailable(
                message=f"object store at {self.endpoint} refused access to bucket "
                f"{self.bucket!r} ({code}): check its access key and secret key",
                reason="OBJECT_STORE_ACCESS_DENIED",
            )
        if code == "NoSuchBucket":
            return Unavailable(
                message=f"bucket {self.bucket!r} does not exist at {self.endpoint}",
                reason="OBJECT_STORE_UNAVAILABLE",
            )
        return Unavailable(
            message=f"object store at {self.endpoint} failed: {code}: {exc.message}",
            reason="OBJECT_STORE_UNAVAILABLE",
        )


def _unquote(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."

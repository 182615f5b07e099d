"""What only the S3 adapter has: credentials, an endpoint that can go away, bucket setup."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import pytest

from danlu_kit.errors import InvalidArgument, Unavailable
from danlu_kit.objectstore import LocalObjectStore, S3ObjectStore, open_object_store
from tests.fixtures.s3 import SeaweedS3Server, make_s3_store, patterned_chunks

# Generous: the point is "seconds, not minio's default of minutes".
QUICKLY_S = 15.0


def test_wrong_secret_key_is_rejected_quickly(
    s3_server: SeaweedS3Server, s3_store: S3ObjectStore
) -> None:
    wrong = "not-the-secret-" + uuid.uuid4().hex
    store = make_s3_store(s3_server, s3_store.bucket, secret_key=wrong)
    started = time.monotonic()
    for call in (lambda: store.put_bytes("k", b"x"), lambda: store.stat("k"), store.list):
        with pytest.raises(Unavailable) as err:
            list(call() or [])
        assert err.value.reason == "OBJECT_STORE_ACCESS_DENIED"
        assert wrong not in str(err.value) and s3_server.secret_key not in str(err.value)
    assert time.monotonic() - started < QUICKLY_S
    with pytest.raises(Unavailable):
        open_object_store(
            f"s3://{s3_store.bucket}?endpoint={s3_server.endpoint}",
            access_key=s3_server.access_key,
            secret_key=wrong,
        )
    assert not s3_store.exists("k")


def test_stopped_server_is_unavailable_then_recovers(
    s3_server: SeaweedS3Server, s3_store: S3ObjectStore
) -> None:
    store = make_s3_store(s3_server, s3_store.bucket, connect_timeout=1.0, max_retries=1)
    store.put_bytes("before", b"survives a restart")
    s3_server.stop(grace=0)  # as in a crash
    try:
        for call in (
            lambda: store.put_bytes("during", b"x"),
            lambda: store.put("during", iter([b"y" * (6 << 20)])),
            lambda: store.get("before"),
            lambda: store.stat("before"),
            lambda: list(store.list()),
            lambda: store.delete("before"),
        ):
            started = time.monotonic()
            with pytest.raises(Unavailable) as err:
                call()
            assert time.monotonic() - started < QUICKLY_S
            assert err.value.reason == "OBJECT_STORE_UNAVAILABLE"
            assert s3_server.endpoint in err.value.message
            assert s3_server.secret_key not in str(err.value)
    finally:
        s3_server.start()
    assert store.get_bytes("before") == b"survives a restart"
    store.put_bytes("after", b"ok")
    assert [i.key for i in store.list()] == ["after", "before"]


def test_open_object_store_urls(s3_server: SeaweedS3Server, tmp_path: Path) -> None:
    bucket = f"opened-{uuid.uuid4().hex[:8]}"
    store = open_object_store(
        f"s3://{bucket}?endpoint={s3_server.endpoint}&region=us-east-1",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    try:
        assert isinstance(store, S3ObjectStore) and store.bucket == bucket
        assert s3_server.client().bucket_exists(bucket)  # created on open
        store.put_bytes("x", b"1")
        # The production defaults (16 MiB parts, two uploading in parallel), unknown length.
        chunks, expected = patterned_chunks(40 * 1000 * 1000)
        assert store.put("big", chunks).sha256 == expected.hexdigest()
        with store.get("big") as stream:
            assert hashlib.sha256(b"".join(stream)).hexdigest() == expected.hexdigest()
        # Opening again finds the bucket and its content.
        again = open_object_store(
            f"s3://{bucket}?endpoint={s3_server.endpoint}",
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
        )
        assert again.get_bytes("x") == b"1"
    finally:
        s3_server.remove_bucket(bucket)

    local = open_object_store(f"file://{tmp_path}/objs")
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objs"
    assert isinstance(open_object_store(str(tmp_path / "plain")), LocalObjectStore)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "s3://?endpoint=http://127.0.0.1:1",
        "s3://bucket/some/prefix?endpoint=http://127.0.0.1:1",
        "s3://user:pw@bucket?endpoint=http://127.0.0.1:1",
        "s3://bucket?endpoint=http://127.0.0.1:1&typo=1",
        "s3://bucket?endpoint=127.0.0.1:1",
        "s3://bucket?endpoint=http://user:pw@127.0.0.1:1",
        "s3://B_?endpoint=http://127.0.0.1:1",
        "file://host/dir",
    ],
)
def test_bad_urls_are_rejected_without_echoing_them(url: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        open_object_store(url)
    assert err.value.reason == "INVALID_OBJECT_STORE_URL"
    assert "pw" not in err.value.message


def test_large_known_length_upload_is_multipart(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"m" * (12 << 20))  # three 5 MiB parts in the fixture's configuration
    info = s3_store.put_file("big.bin", path)
    assert info.size_bytes == 12 << 20
    assert info.etag and info.etag.endswith("-3")  # S3's multipart ETag: "<md5>-<parts>"
    assert s3_store.stat("big.bin").size_bytes == 12 << 20

"""The object store port: one test body per behaviour, run against both adapters."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from danlu_kit.errors import InvalidArgument, NotFound
from danlu_kit.objectstore import ObjectStore
from tests.fixtures.s3 import patterned_chunks

MIB = 1 << 20
# Well below the ~38 MiB the streaming tests move. The local adapter needs ~2 MiB; the S3
# adapter with the fixture's 5 MiB parts needs ~15 MiB for an upload of unknown length, because
# minio's put_object holds three parts at once (the previous part, the one being read, and its
# copy with the one-byte look-ahead that detects the end of the stream).
MEMORY_BOUND = 20 * MIB


def test_is_an_object_store(object_store: ObjectStore) -> None:
    assert isinstance(object_store, ObjectStore)


def test_put_get_roundtrip_with_sha256(object_store: ObjectStore) -> None:
    data = b"hello object store\n" * 1000
    info = object_store.put_bytes("projects/p/a.txt", data)
    assert (info.key, info.size_bytes) == ("projects/p/a.txt", len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert object_store.get_bytes("projects/p/a.txt") == data

    from_stream = object_store.put("projects/p/b.bin", io.BytesIO(data), length=len(data))
    from_chunks = object_store.put("projects/p/c.bin", iter([data[:7], b"", data[7:]]))
    assert from_stream.sha256 == from_chunks.sha256 == info.sha256
    assert object_store.get_bytes("projects/p/c.bin") == data
    assert object_store.stat("projects/p/c.bin").size_bytes == len(data)


def test_put_replaces_and_empty_objects(object_store: ObjectStore) -> None:
    object_store.put_bytes("k", b"first version")
    object_store.put_bytes("k", b"second")
    assert object_store.get_bytes("k") == b"second"
    empty = object_store.put_bytes("empty", b"")
    assert empty.size_bytes == 0
    assert empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert object_store.get_bytes("empty") == b""
    assert object_store.put("empty2", iter([])).size_bytes == 0
    assert object_store.stat("empty2").size_bytes == 0


def test_put_file_and_download_file(object_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    info = object_store.put_file("files/src.bin", src)
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()

    dest = tmp_path / "out" / "copy.bin"
    got = object_store.download_file("files/src.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert (got.size_bytes, got.sha256) == (info.size_bytes, info.sha256)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp file left


def test_large_streams_use_bounded_memory(object_store: ObjectStore) -> None:
    total = 40 * 1000 * 1000
    chunks, expected = patterned_chunks(total)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        info = object_store.put("big/blob.bin", chunks)  # unknown length
        put_peak = tracemalloc.get_traced_memory()[1]

        tracemalloc.reset_peak()
        got, sizes = hashlib.sha256(), []
        with object_store.get("big/blob.bin", chunk_size=MIB) as stream:
            for chunk in stream:
                got.update(chunk)
                sizes.append(len(chunk))
        get_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (info.size_bytes, info.sha256) == (total, expected.hexdigest())
    assert object_store.stat("big/blob.bin").size_bytes == total
    assert got.hexdigest() == expected.hexdigest()
    assert sum(sizes) == total and max(sizes) <= MIB and len(sizes) >= total // MIB
    assert put_peak < MEMORY_BOUND, f"put peaked at {put_peak / MIB:.1f} MiB"
    assert get_peak < MEMORY_BOUND, f"get peaked at {get_peak / MIB:.1f} MiB"


def test_get_streams_in_chunks_and_releases_early(object_store: ObjectStore) -> None:
    data = b"x" * (3 * MIB + 5)
    object_store.put_bytes("chunked", data)
    assert [len(c) for c in object_store.get("chunked", chunk_size=MIB)] == [MIB, MIB, MIB, 5]
    # Abandoning streams must release them (S3: connections back to the pool).
    for _ in range(25):
        with object_store.get("chunked", chunk_size=1024) as stream:
            assert next(stream) == b"x" * 1024
    stream = object_store.get("chunked")
    stream.close()
    assert list(stream) == []
    assert object_store.get_bytes("chunked") == data


def test_readers_never_see_a_partial_object(object_store: ObjectStore) -> None:
    object_store.put_bytes("atomic", b"old")
    seen: list[bytes | None] = []

    def source() -> Iterator[bytes]:
        for i in range(3):
            # Mid-upload, readers still get the old object.
            seen.append(object_store.get_bytes("atomic"))
            yield bytes([i]) * (2 * MIB)

    object_store.put("atomic", source())
    assert seen == [b"old", b"old", b"old"]
    assert object_store.get_bytes("atomic") == b"\x00" * (2 * MIB) + b"\x01" * (
        2 * MIB
    ) + b"\x02" * (2 * MIB)


@pytest.mark.parametrize(
    ("declared", "source"),
    [(10, b"short"), (3, b"too long"), (0, b"x"), (6 * MIB, b"y" * (6 * MIB + 1))],
    ids=["short", "long", "zero", "long-multipart"],
)
def test_declared_length_is_enforced(
    object_store: ObjectStore, declared: int, source: bytes
) -> None:
    with pytest.raises(InvalidArgument) as err:
        object_store.put("sized", iter([source]), length=declared)
    assert err.value.reason == "OBJECT_SIZE_MISMATCH"
    assert not object_store.exists("sized")


def test_missing_keys_are_not_found(object_store: ObjectStore, tmp_path: Path) -> None:
    for call in (
        lambda: object_store.stat("nope/x"),
        lambda: object_store.get("nope/x"),  # at once, not on first iteration
        lambda: object_store.get_bytes("nope/x"),
        lambda: object_store.download_file("nope/x", tmp_path / "x"),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.reason == "OBJECT_NOT_FOUND"
        assert "nope/x" in err.value.message
    assert not object_store.exists("nope/x")
    assert not (tmp_path / "x").exists()
    object_store.put_bytes("dir/file", b"1")
    assert not object_store.exists("dir")  # a key prefix is not an object


def test_list_is_sorted_and_prefix_based(object_store: ObjectStore) -> None:
    keys = ["a/b/2", "b", "a/c", "ab/x", "a/b/1", "a-d", "a/b/10"]
    for key in keys:
        object_store.put_bytes(key, key.encode())
    listed = list(object_store.list("a/"))
    assert [i.key for i in listed] == ["a/b/1", "a/b/10", "a/b/2", "a/c"]
    assert [i.size_bytes for i in listed] == [5, 6, 5, 3]
    assert all(i.last_modified is not None for i in listed)
    # Plain string prefixes, code point order ('-' < '/' < 'b').
    assert [i.key for i in object_store.list("a")] == [
        "a-d",
        "a/b/1",
        "a/b/10",
        "a/b/2",
        "a/c",
        "ab/x",
    ]
    assert [i.key for i in object_store.list("a/b/1")] == ["a/b/1", "a/b/10"]
    assert [i.key for i in object_store.list()] == sorted(keys)
    assert list(object_store.list("zzz/")) == []


def test_delete_and_delete_prefix(object_store: ObjectStore) -> None:
    for key in ["run/1/a", "run/1/b", "run/10/a", "run/2/a", "other"]:
        object_store.put_bytes(key, b".")
    object_store.delete("run/2/a")
    object_store.delete("run/2/a")  # idempotent
    object_store.delete("never/existed")
    assert not object_store.exists("run/2/a")

    assert object_store.delete_prefix("run/1/") == 2
    assert [i.key for i in object_store.list()] == ["other", "run/10/a"]
    assert object_store.delete_prefix("run/1/") == 0
    with pytest.raises(InvalidArgument):
        object_store.delete_prefix("")  # would wipe the store


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/", "../up", "a/./b", "a/../b", ".danlu-tmp/x"]
)
def test_invalid_keys_are_rejected(object_store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        object_store.put_bytes(key, b"x")
    assert err.value.reason == "INVALID_OBJECT_KEY"

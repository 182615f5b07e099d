"""Atomic multi-file artifacts (DESIGN §3), against both adapters."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from danlu_kit.errors import AlreadyExists, FailedPrecondition, NotFound
from danlu_kit.objectstore import ObjectInfo, ObjectStore
from danlu_kit.objectstore.artifacts import (
    MANIFEST_NAME,
    ArtifactWriter,
    Manifest,
    collect_garbage,
    read_manifest,
    verify_artifact,
)

CKPT = "projects/p/trainingJobs/j/checkpoints"


class RecordingStore:
    """Delegates to a real store and records the order in which keys were written."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.puts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, *args: Any, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put(key, *args, **kwargs)

    def put_file(self, key: str, *args: Any, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put_file(key, *args, **kwargs)

    def put_bytes(self, key: str, *args: Any, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put_bytes(key, *args, **kwargs)


def write_artifact(store: ObjectStore, prefix: str, files: dict[str, bytes]) -> Manifest:
    with ArtifactWriter(store, prefix) as writer:
        for path, data in files.items():
            writer.add_file(path, data)
        return writer.commit(producer="tests", lineage={"source": "unit"})


def test_commit_writes_manifest_last(object_store: ObjectStore, tmp_path: Path) -> None:
    store = RecordingStore(object_store)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 100_000)
    prefix = f"{CKPT}/step-100"

    writer = ArtifactWriter(store, prefix)  # type: ignore[arg-type]
    infos = [
        writer.add_file("model.safetensors", weights),
        writer.add_file("config.json", b'{"layers": 2}'),
        writer.add_file("tokenizer/vocab.txt", io.BytesIO(b"a\nb\n"), length=4),
        writer.add_file("optimizer/state.bin", iter([b"o" * 10, b"p" * 10])),
    ]
    # Files are there, but without a manifest the artifact does not exist for readers.
    assert object_store.exists(f"{prefix}/config.json")
    with pytest.raises(NotFound) as err:
        read_manifest(object_store, prefix)
    assert err.value.reason == "ARTIFACT_NOT_COMMITTED"

    manifest = writer.commit(
        producer="trainer/0.1", lineage={"job": "j", "base": "m@sha256:ab"}, extra={"step": 100}
    )
    assert store.puts[-1] == f"{prefix}/{MANIFEST_NAME}"
    assert len(store.puts) == 5

    expected = {
        "model.safetensors": weights.read_bytes(),
        "config.json": b'{"layers": 2}',
        "tokenizer/vocab.txt": b"a\nb\n",
        "optimizer/state.bin": b"o" * 10 + b"p" * 10,
    }
    assert {f.path: (f.size_bytes, f.sha256) for f in manifest.files} == {
        path: (len(data), hashlib.sha256(data).hexdigest()) for path, data in expected.items()
    }
    assert [i.sha256 for i in infos] == [hashlib.sha256(d).hexdigest() for d in expected.values()]
    assert manifest.total_size_bytes == sum(map(len, expected.values()))

    read = read_manifest(object_store, prefix + "/")
    assert read == manifest
    stored = object_store.get_bytes(f"{prefix}/{MANIFEST_NAME}")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", read.digest)
    assert read.digest == "sha256:" + hashlib.sha256(stored).hexdigest()
    doc = json.loads(stored)
    assert doc["format_version"] == 1 and doc["producer"] == "trainer/0.1"
    assert doc["lineage"] == {"job": "j", "base": "m@sha256:ab"} and doc["extra"] == {"step": 100}
    assert doc["create_time"].endswith("Z")
    verify_artifact(object_store, read)


def test_a_committed_artifact_is_not_overwritten(object_store: ObjectStore) -> None:
    prefix = f"{CKPT}/step-1"
    write_artifact(object_store, prefix, {"a": b"1"})
    with pytest.raises(AlreadyExists) as err:
        ArtifactWriter(object_store, prefix)
    assert err.value.reason == "ARTIFACT_ALREADY_COMMITTED"

    writer = ArtifactWriter(object_store, f"{CKPT}/step-2")
    writer.add_file("a", b"1")
    with pytest.raises(AlreadyExists):
        writer.add_file("a", b"2")
    writer.commit(producer="tests")
    with pytest.raises(FailedPrecondition):
        writer.add_file("b", b"late")


def test_verify_artifact_names_the_bad_files(object_store: ObjectStore) -> None:
    prefix = f"{CKPT}/step-7"
    manifest = write_artifact(
        object_store, prefix, {"good.bin": b"fine", "weights.bin": b"AAAA", "gone.bin": b"x"}
    )
    verify_artifact(object_store, manifest)

    object_store.put_bytes(f"{prefix}/weights.bin", b"AAAB")  # same size, other bytes
    object_store.delete(f"{prefix}/gone.bin")
    with pytest.raises(FailedPrecondition) as err:
        verify_artifact(object_store, read_manifest(object_store, prefix))
    assert err.value.reason == "ARTIFACT_CORRUPT"
    assert {v.field for v in err.value.violations} == {"weights.bin", "gone.bin"}
    assert "weights.bin: sha256 is" in err.value.message
    assert "gone.bin: missing" in err.value.message

    object_store.put_bytes(f"{prefix}/weights.bin", b"AAAAA")
    object_store.put_bytes(f"{prefix}/gone.bin", b"x")
    with pytest.raises(FailedPrecondition, match=r"weights\.bin: size is 5 bytes, manifest says 4"):
        verify_artifact(object_store, manifest)


def test_writer_that_fails_leaves_nothing(object_store: ObjectStore) -> None:
    prefix = f"{CKPT}/step-9"

    def failing_source() -> Iterator[bytes]:
        yield b"partial data"
        raise RuntimeError("trainer crashed mid-upload")

    with pytest.raises(RuntimeError), ArtifactWriter(object_store, prefix) as writer:
        writer.add_file("a.bin", b"a" * 1000)
        writer.add_file("b/c.bin", b"c")
        writer.add_file("d.bin", failing_source())
    assert list(object_store.list(prefix + "/")) == []

    with ArtifactWriter(object_store, prefix) as writer:  # forgot to commit
        writer.add_file("a.bin", b"a")
    assert list(object_store.list(prefix + "/")) == []


def test_collect_garbage_removes_only_old_uncommitted_prefixes(object_store: ObjectStore) -> None:
    write_artifact(object_store, f"{CKPT}/step-1", {"w.bin": b"1", "sub/x": b"2"})
    for key in (f"{CKPT}/step-2/w.bin", f"{CKPT}/step-2/sub/x", f"{CKPT}/step-3/w.bin"):
        object_store.put_bytes(key, b"orphan")
    object_store.put_bytes(f"{CKPT}/loose.txt", b"not an artifact")
    object_store.put_bytes("projects/p/elsewhere/w.bin", b"outside the root")

    # Young leftovers may be writes in progress: kept.
    assert collect_garbage(object_store, CKPT, older_than_seconds=3600) == []
    later = time.time() + 7200
    assert collect_garbage(object_store, CKPT + "/", older_than_seconds=3600, now=later) == [
        f"{CKPT}/step-2",
        f"{CKPT}/step-3",
    ]
    assert [i.key for i in object_store.list("projects/")] == [
        "projects/p/elsewhere/w.bin",
        f"{CKPT}/loose.txt",
        f"{CKPT}/step-1/manifest.json",
        f"{CKPT}/step-1/sub/x",
        f"{CKPT}/step-1/w.bin",
    ]
    # A root given too high up never touches committed artifacts below it.
    assert collect_garbage(object_store, "projects/p", older_than_seconds=0, now=later) == [
        "projects/p/elsewhere"
    ]
    verify_artifact(object_store, read_manifest(object_store, f"{CKPT}/step-1"))


def test_manifest_bytes_are_canonical() -> None:
    manifest = Manifest(prefix="x", files=(), producer="p", lineage={"b": 1, "a": [1, 2]})
    data = manifest.canonical_bytes()
    again = Manifest.from_bytes("x", data)
    assert again == manifest and again.digest == manifest.digest
    pretty = json.dumps(json.loads(data), indent=2).encode()
    assert Manifest.from_bytes("x", pretty).digest == manifest.digest

    with pytest.raises(FailedPrecondition) as err:
        Manifest.from_bytes("x", b"{not json")
    assert err.value.reason == "ARTIFACT_MANIFEST_INVALID"
    newer = json.loads(data) | {"format_version": 99}
    with pytest.raises(FailedPrecondition) as err:
        Manifest.from_bytes("x", json.dumps(newer).encode())
    assert err.value.reason == "ARTIFACT_MANIFEST_UNSUPPORTED"


def test_commit_refuses_when_files_vanished(object_store: ObjectStore) -> None:
    prefix = f"{CKPT}/step-5"
    writer = ArtifactWriter(object_store, prefix)
    writer.add_file("a.bin", b"a")
    writer.add_file("b.bin", b"b")
    object_store.delete(f"{prefix}/b.bin")  # e.g. collected while this writer was slow
    with pytest.raises(FailedPrecondition) as err:
        writer.commit(producer="tests")
    assert err.value.reason == "ARTIFACT_INCOMPLETE" and "b.bin" in err.value.message
    assert not object_store.exists(f"{prefix}/{MANIFEST_NAME}")

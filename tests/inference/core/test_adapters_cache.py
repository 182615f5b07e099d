"""The digest-keyed artifact cache, LRU of loaded adapters and the serving-contract checks."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from danlu_inference.core.adapters_cache import (
    ArtifactCache,
    LoadedAdapter,
    LoadedAdapters,
    adapter_id,
    check_adapter,
    check_rank,
)
from danlu_inference.core.artifacts import ArtifactInfo, ServingContract
from danlu_inference.core.engine import AdapterRef
from danlu_kit.errors import Aborted, FailedPrecondition, InvalidArgument


class FakeSource:
    def __init__(self):
        self.revisions: dict[str, tuple[str, bytes]] = {}
        self.downloads = 0

    def get(self, name):
        digest, _ = self.revisions[name]
        return ArtifactInfo(name=name, kind="adapter", digest=digest)

    def download(self, name, dest: Path):
        self.downloads += 1
        digest, payload = self.revisions[name]
        (dest / "adapter_model.safetensors").write_bytes(payload)
        (dest / "adapter_config.json").write_text(json.dumps({"r": 8}))
        return ArtifactInfo(name=name, kind="adapter", digest=digest)


def test_cache_is_keyed_by_digest_and_downloads_once(tmp_path):
    source = FakeSource()
    source.revisions["m"] = ("sha256:" + "a" * 64, b"v1")
    cache = ArtifactCache(tmp_path, source, max_bytes=10**9)
    info = source.get("m")
    threads = [threading.Thread(target=cache.fetch, args=(info,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.downloads == 1
    assert (cache.fetch(info) / "adapter_model.safetensors").read_bytes() == b"v1"
    source.revisions["m"] = ("sha256:" + "b" * 64, b"v2")  # re-published under the same name
    path = cache.fetch(source.get("m"))
    assert path != cache.path_for(info.digest)
    assert (path / "adapter_model.safetensors").read_bytes() == b"v2"
    assert adapter_id(info.digest) != adapter_id(source.get("m").digest)


def test_a_revision_replaced_during_download_is_refused(tmp_path):
    source = FakeSource()
    source.revisions["m"] = ("sha256:" + "a" * 64, b"v1")
    stale = source.get("m")
    source.revisions["m"] = ("sha256:" + "b" * 64, b"v2")
    cache = ArtifactCache(tmp_path, source, max_bytes=10**9)
    with pytest.raises(Aborted):
        cache.fetch(stale)
    assert not any(tmp_path.iterdir()), "nothing half-written is left behind"


def test_cache_evicts_least_recently_used_unpinned(tmp_path):
    source = FakeSource()
    cache = ArtifactCache(tmp_path, source, max_bytes=10**9)
    infos = []
    for i, name in enumerate("abc"):
        source.revisions[name] = (f"sha256:{name * 64}", bytes(100))
        infos.append(source.get(name))
        cache.fetch(infos[-1])
        (cache.path_for(infos[-1].digest) / ".danlu-complete").touch()
        os.utime(cache.path_for(infos[-1].digest) / ".danlu-complete", (i, i))
    cache.pin(infos[0].digest)
    cache.max_bytes = 400  # each revision is ~180 bytes: one has to go
    removed = cache.evict()
    assert removed == ["b" * 64]
    assert cache.cached(infos[0].digest) and cache.cached(infos[2].digest)


def _entry(name: str, in_use: int = 0) -> LoadedAdapter:
    return LoadedAdapter(name, "sha256:" + name, AdapterRef(name, Path(".")), in_use=in_use)


def test_loaded_adapters_lru_never_evicts_one_in_use():
    loaded = LoadedAdapters(capacity=2)
    for name, busy in (("a", 1), ("b", 0), ("c", 0)):
        loaded.add(_entry(name, busy))
    assert [e.name for e in loaded.victims()] == ["b"]
    loaded.touch(loaded.get("b", "sha256:b"))
    assert [e.name for e in loaded.victims()] == ["c"]


def test_contract_checks():
    base = "sha256:" + "1" * 64
    ok = ArtifactInfo("projects/p/models/ad", "adapter", "d", contract=ServingContract(base))
    check_adapter(
        ok, deployment_model="projects/p/models/b", deployment_digest=base, field="adapter"
    )
    other = ArtifactInfo(
        "projects/p/models/ad", "adapter", "d", contract=ServingContract("sha256:" + "2" * 64)
    )
    with pytest.raises(FailedPrecondition) as info:
        check_adapter(other, deployment_model="m", deployment_digest=base, field="adapter")
    assert info.value.reason == "BASE_MODEL_MISMATCH"
    lineage_only = ArtifactInfo("n", "adapter", "d", parent_model="projects/p/models/x")
    with pytest.raises(FailedPrecondition):
        check_adapter(
            lineage_only,
            deployment_model="projects/p/models/b",
            deployment_digest=base,
            field="adapter",
        )
    with pytest.raises(InvalidArgument) as info:
        check_adapter(
            ArtifactInfo("n", "base", "d"),
            deployment_model="m",
            deployment_digest=base,
            field="adapter",
        )
    assert info.value.reason == "MODEL_NOT_ADAPTER"


def test_rank_check(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q": 32}}))
    info = ArtifactInfo("n", "adapter", "d")
    assert check_rank(info, tmp_path, 64, "adapter") == 32
    with pytest.raises(InvalidArgument) as err:
        check_rank(info, tmp_path, 16, "adapter")
    assert err.value.reason == "ADAPTER_RANK_TOO_LARGE"

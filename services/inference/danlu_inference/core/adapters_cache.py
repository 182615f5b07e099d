"""Artifacts on local disk keyed by digest, and the adapters loaded on a deployment (LRU).

- :class:`ArtifactCache`: ``<root>/<sha256 hex>/`` holds one registered revision. A revision is
  downloaded into a temporary directory and renamed into place when complete, so a directory
  under its digest is always whole. Because the key is the digest, re-publishing an adapter
  under the same name gives a new key: stale weights are never served. Directories beyond the
  size budget are removed least recently used first (never one in use).
- :class:`LoadedAdapters`: which adapters an engine has loaded, by name, with the digest each
  was loaded at; at most ``capacity`` stay loaded, the least recently used idle one goes first.
- :func:`check_adapter`: the serving-contract checks (kind, base model, rank).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from danlu_inference.core.artifacts import ArtifactInfo, ModelSource, digest_hex
from danlu_inference.core.engine import AdapterRef
from danlu_kit.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".danlu-complete"


class ArtifactCache:
    def __init__(self, root: Path, source: ModelSource, max_bytes: int):
        self.root = root
        self.source = source
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pinned: dict[str, int] = {}

    def path_for(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def cached(self, digest: str) -> Path | None:
        path = self.path_for(digest)
        marker = path / COMPLETE_MARKER
        if marker.exists():
            marker.touch()  # last use, for eviction
            return path
        return None

    def pin(self, digest: str) -> None:
        """Keep a revision on disk while an engine uses it."""
        with self._guard:
            self._pinned[digest] = self._pinned.get(digest, 0) + 1

    def unpin(self, digest: str) -> None:
        with self._guard:
            n = self._pinned.get(digest, 0) - 1
            if n <= 0:
                self._pinned.pop(digest, None)
            else:
                self._pinned[digest] = n

    def fetch(self, info: ArtifactInfo) -> Path:
        """The local directory of revision ``info.digest`` (downloaded on first use; blocking)."""
        if path := self.cached(info.digest):
            return path
        with self._guard:
            lock = self._locks.setdefault(info.digest, threading.Lock())
        with lock:  # one download per digest; concurrent callers wait for it
            if path := self.cached(info.digest):
                return path
            partial = Path(tempfile.mkdtemp(dir=self.root, prefix=".partial-"))
            try:
                fetched = self.source.download(info.name, partial)
                if fetched.digest != info.digest:
                    # Re-published while we resolved it: the caller resolves again.
                    raise Aborted(
                        f"{info.name} changed while it was being fetched; retry",
                        reason="ARTIFACT_CHANGED",
                    )
                (partial / COMPLETE_MARKER).write_text(info.digest)
                target = self.path_for(info.digest)
                shutil.rmtree(target, ignore_errors=True)
                partial.rename(target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        log.info("artifact cached", extra={"model": info.name, "digest": info.digest})
        self.evict()
        return self.path_for(info.digest)

    def evict(self) -> list[str]:
        """Remove least recently used, unpinned revisions until the cache fits its budget."""
        entries = []
        for path in self.root.iterdir():
            marker = path / COMPLETE_MARKER
            if path.is_dir() and marker.exists():
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                entries.append((marker.stat().st_mtime, path, size))
        total = sum(size for _, _, size in entries)
        removed = []
        with self._guard:
            pinned = {digest_hex(d) for d in self._pinned}
        for _, path, size in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if path.name in pinned:
                continue
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path.name)
        return removed


def adapter_id(digest: str) -> str:
    """The engine-side id of an adapter revision: a new digest is a new adapter."""
    return "a-" + digest_hex(digest)[:24]


def adapter_rank(path: Path) -> int:
    """The highest LoRA rank in an adapter directory (``r`` and any ``rank_pattern``)."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return 0
    ranks = [int(config.get("r") or 0)]
    ranks += [int(v) for v in (config.get("rank_pattern") or {}).values()]
    return max(ranks)


def check_adapter(
    adapter: ArtifactInfo, *, deployment_model: str, deployment_digest: str, field: str
) -> None:
    """Refuse what is not an adapter, or an adapter whose serving contract names another base."""
    if adapter.kind != "adapter":
        raise InvalidArgument.from_violations(
            "MODEL_NOT_ADAPTER",
            [FieldViolation(field, f"{adapter.name} is a {adapter.kind} model, not an adapter")],
        )
    base_digest = adapter.contract.base_model_digest
    if base_digest and base_digest != deployment_digest:
        raise FailedPrecondition(
            f"{adapter.name} was trained on base {base_digest}, but the deployment serves "
            f"{deployment_model} at {deployment_digest}",
            reason="BASE_MODEL_MISMATCH",
            metadata={"adapter_base_digest": base_digest, "model_digest": deployment_digest},
        )
    if not base_digest and adapter.parent_model and adapter.parent_model != deployment_model:
        raise FailedPrecondition(
            f"{adapter.name} derives from {adapter.parent_model}, but the deployment serves "
            f"{deployment_model}",
            reason="BASE_MODEL_MISMATCH",
            metadata={"adapter_parent_model": adapter.parent_model},
        )


def check_rank(adapter: ArtifactInfo, path: Path, max_rank: int, field: str) -> int:
    rank = adapter_rank(path)
    if max_rank and rank > max_rank:
        raise InvalidArgument.from_violations(
            "ADAPTER_RANK_TOO_LARGE",
            [
                FieldViolation(
                    field,
                    f"{adapter.name} has LoRA rank {rank}, above the deployment's "
                    f"max_lora_rank {max_rank}",
                )
            ],
        )
    return rank


@dataclass
class LoadedAdapter:
    name: str  # projects/{p}/models/{m}
    digest: str
    ref: AdapterRef
    last_used: datetime = field(default_factory=lambda: datetime.now(UTC))
    in_use: int = 0


class LoadedAdapters:
    """The adapters one engine has loaded (asyncio side; not thread-safe on purpose)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._by_name: OrderedDict[str, LoadedAdapter] = OrderedDict()

    def get(self, name: str, digest: str) -> LoadedAdapter | None:
        entry = self._by_name.get(name)
        if entry is None or entry.digest != digest:
            return None
        return entry

    def stale(self, name: str, digest: str) -> LoadedAdapter | None:
        """The entry for ``name`` when it holds another revision than ``digest``."""
        entry = self._by_name.get(name)
        return entry if entry is not None and entry.digest != digest else None

    def add(self, entry: LoadedAdapter) -> None:
        self._by_name[entry.name] = entry
        self._by_name.move_to_end(entry.name)

    def pop(self, name: str) -> LoadedAdapter | None:
        return self._by_name.pop(name, None)

    def touch(self, entry: LoadedAdapter) -> None:
        entry.last_used = datetime.now(UTC)
        if entry.name in self._by_name:
            self._by_name.move_to_end(entry.name)

    def victims(self) -> list[LoadedAdapter]:
        """Idle adapters to unload, least recently used first, so that at most ``capacity``
        stay loaded (adapters serving a request are never unloaded under it)."""
        excess = len(self._by_name) - self.capacity
        out = []
        for entry in list(self._by_name.values()):
            if excess <= 0:
                break
            if entry.in_use == 0:
                out.append(entry)
                excess -= 1
        return out

    def entries(self) -> list[LoadedAdapter]:
        return list(self._by_name.values())

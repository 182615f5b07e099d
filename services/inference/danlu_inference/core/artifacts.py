"""Registered models and adapters as the inference core sees them, and the port that resolves
and downloads them (implemented over the registry's public gRPC API, never its tables)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServingContract:
    base_model_digest: str = ""
    tokenizer_digest: str = ""
    chat_template: str = ""
    stop_words: tuple[str, ...] = ()
    generation_config_json: str = ""
    dtype: str = ""

    def generation_defaults(self) -> dict:
        if not self.generation_config_json:
            return {}
        try:
            value = json.loads(self.generation_config_json)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ArtifactInfo:
    """One registered model revision: ``name`` is ``projects/{p}/models/{m}``."""

    name: str
    kind: str  # base | adapter | merged | full
    digest: str
    max_context_length: int = 0
    parent_model: str = ""
    contract: ServingContract = field(default_factory=ServingContract)


class ModelSource(Protocol):
    """Resolves names to their current revision and downloads a revision (blocking calls)."""

    def get(self, name: str) -> ArtifactInfo:
        """Raises NotFound (reason MODEL_NOT_FOUND) when there is no such model."""

    def download(self, name: str, dest: Path) -> ArtifactInfo:
        """Download the current revision's files into ``dest``; returns the revision fetched."""


def digest_hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def info_to_dict(info: ArtifactInfo) -> dict:
    c = info.contract
    return {
        "name": info.name,
        "kind": info.kind,
        "digest": info.digest,
        "max_context_length": info.max_context_length,
        "parent_model": info.parent_model,
        "contract": {
            "base_model_digest": c.base_model_digest,
            "tokenizer_digest": c.tokenizer_digest,
            "chat_template": c.chat_template,
            "stop_words": list(c.stop_words),
            "generation_config_json": c.generation_config_json,
            "dtype": c.dtype,
        },
    }


def info_from_dict(d: dict) -> ArtifactInfo:
    c = dict(d.get("contract") or {})
    c["stop_words"] = tuple(c.get("stop_words") or ())
    return ArtifactInfo(
        name=d["name"],
        kind=d.get("kind", "base"),
        digest=d.get("digest", ""),
        max_context_length=int(d.get("max_context_length") or 0),
        parent_model=d.get("parent_model", ""),
        contract=ServingContract(**c),
    )

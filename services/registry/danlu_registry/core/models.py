"""Model use cases: register a model directory (verified), read, list, download, delete.

Registration loads config and tokenizer with transformers before anything is committed, so a
registered model is one the training and inference services can open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from danlu_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from danlu_kit.objectstore import ObjectStore
from danlu_kit.objectstore.artifacts import ArtifactWriter
from danlu_registry.core.records import ModelFileRecord, ModelRecord, StoredObject

if TYPE_CHECKING:
    from danlu_registry.adapters.db import RegistryRepository

log = logging.getLogger(__name__)

KINDS = ("base", "adapter", "merged", "full")
# Files that define a tokenizer; their digests form the tokenizer digest.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class ReceivedModel:
    """A model upload whose files are complete and digest-checked in a local directory."""

    project: str
    model_id: str
    directory: Path
    file_sha256: dict[str, str]
    kind: str = ""
    description: str = ""
    lineage: dict = field(default_factory=dict)
    contract: dict = field(default_factory=dict)
    replace: bool = False
    request_id: str = ""


@dataclass(frozen=True)
class ModelFacts:
    """What registration learns by loading the directory."""

    kind: str
    model_type: str = ""
    architecture: str = ""
    max_context_length: int = 0
    has_chat_template: bool = False


def model_prefix(project: str, model_id: str) -> str:
    return f"projects/{project}/models/{model_id}/"


def _invalid(path: str, description: str) -> InvalidArgument:
    return InvalidArgument.from_violations(
        "MODEL_INVALID", [FieldViolation(path, description)], "the model directory is not usable"
    )


def inspect_model_directory(directory: Path, kind: str) -> ModelFacts:
    """Load config/tokenizer (or the adapter config) and check the weights' headers."""
    files = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    is_adapter = "adapter_config.json" in files
    kind = kind or ("adapter" if is_adapter else "base")
    if kind not in KINDS:
        raise _invalid("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    weights = sorted(f for f in files if f.endswith(".safetensors"))
    if kind == "adapter":
        if not is_adapter:
            raise _invalid("adapter_config.json", "an adapter needs adapter_config.json")
        try:
            adapter_config = json.loads((directory / "adapter_config.json").read_text())
        except ValueError as exc:
            raise _invalid("adapter_config.json", f"not valid JSON: {exc}") from None
        if "adapter_model.safetensors" not in files:
            raise _invalid(
                "adapter_model.safetensors", "missing (adapters are stored as safetensors)"
            )
        _check_safetensors(directory, ["adapter_model.safetensors"])
        facts = ModelFacts(
            kind="adapter", model_type=str(adapter_config.get("peft_type", "")).lower()
        )
    else:
        if "config.json" not in files:
            raise _invalid("config.json", "missing")
        if not weights:
            raise _invalid("*.safetensors", "no safetensors weights found (.bin is not accepted)")
        _check_safetensors(directory, weights)
        _check_index(directory, files, weights)
        from transformers import AutoConfig  # heavy import, only where needed

        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
        except Exception as exc:
            raise _invalid("config.json", f"transformers cannot load it: {exc}") from None
        facts = ModelFacts(
            kind=kind,
            model_type=getattr(config, "model_type", "") or "",
            architecture=(getattr(config, "architectures", None) or [""])[0],
            max_context_length=int(getattr(config, "max_position_embeddings", 0) or 0),
        )
    if any(f in files for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except Exception as exc:
            raise _invalid("tokenizer", f"transformers cannot load it: {exc}") from None
        facts = ModelFacts(**{**vars(facts), "has_chat_template": bool(tokenizer.chat_template)})
    elif kind != "adapter":
        raise _invalid("tokenizer.json", "a complete model needs its tokenizer files")
    return facts


def _check_safetensors(directory: Path, names: list[str]) -> None:
    from safetensors import safe_open

    for name in names:
        try:
            with safe_open(directory / name, framework="numpy") as handle:
                handle.keys()
        except Exception as exc:
            raise _invalid(name, f"not a readable safetensors file: {exc}") from None


def _check_index(directory: Path, files: set[str], weights: list[str]) -> None:
    if "model.safetensors.index.json" not in files:
        if len(weights) > 1:
            raise _invalid("model.safetensors.index.json", "several shards need an index")
        return
    try:
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
    except (ValueError, KeyError, AttributeError) as exc:
        raise _invalid("model.safetensors.index.json", f"not a valid index: {exc}") from None
    if missing := sorted(shards - files):
        raise _invalid(
            "model.safetensors.index.json", f"names missing shard(s): {', '.join(missing)}"
        )


def tokenizer_digest(file_sha256: dict[str, str]) -> str:
    parts = [
        f"{name}:{file_sha256[name]}" for name in sorted(file_sha256) if name in TOKENIZER_FILES
    ]
    if not parts:
        return ""
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Models:
    def __init__(self, repo: RegistryRepository, store: ObjectStore):
        self.repo = repo
        self.store = store

    def register(self, upload: ReceivedModel) -> ModelRecord:
        existing = self.repo.get_model(upload.project, upload.model_id)
        if existing is not None and upload.request_id and existing.request_id == upload.request_id:
            return existing  # a retried upload
        if existing is not None and not upload.replace:
            raise AlreadyExists(
                f"{existing.name} already exists; pass replace to upload a new revision",
                reason="MODEL_EXISTS",
            )
        facts = inspect_model_directory(upload.directory, upload.kind)
        revision_id = uuid.uuid4().hex[:12]
        prefix = f"{model_prefix(upload.project, upload.model_id)}revisions/{revision_id}/"
        name = f"projects/{upload.project}/models/{upload.model_id}"
        with ArtifactWriter(self.store, prefix) as writer:
            stored = []
            for relpath in sorted(upload.file_sha256):
                info = writer.add_file(relpath, upload.directory / relpath)
                stored.append(
                    ModelFileRecord(
                        relpath, StoredObject(info.key, info.sha256 or "", info.size_bytes)
                    )
                )
            manifest = writer.commit(
                producer="registry",
                lineage=upload.lineage,
                extra={"model": name, "kind": facts.kind, "contract": upload.contract},
            )
        record = ModelRecord(
            project=upload.project,
            model_id=upload.model_id,
            kind=facts.kind,
            description=upload.description,
            digest=manifest.digest,
            revision_id=revision_id,
            files=stored,
            size_bytes=sum(f.object.size_bytes for f in stored),
            model_type=facts.model_type,
            architecture=facts.architecture,
            max_context_length=facts.max_context_length,
            has_chat_template=facts.has_chat_template,
            tokenizer_digest=tokenizer_digest(upload.file_sha256),
            lineage=upload.lineage,
            contract=upload.contract,
            request_id=upload.request_id,
        )
        try:
            saved = self.repo.put_model(
                record, expected_revision=existing.revision_id if existing else None
            )
        except Exception:
            self.store.delete_prefix(prefix)
            raise
        if existing is not None:
            # The old revision is unreachable now; consumers cache by digest, not by name.
            self.store.delete_prefix(
                f"{model_prefix(upload.project, upload.model_id)}revisions/{existing.revision_id}/"
            )
        log.info("model registered", extra={"model": name, "digest": saved.digest})
        return saved

    def get(self, project: str, model_id: str) -> ModelRecord:
        record = self.repo.get_model(project, model_id)
        if record is None:
            raise NotFound(
                f"projects/{project}/models/{model_id} not found", reason="MODEL_NOT_FOUND"
            )
        return record

    def open_file(self, record: ModelRecord, path: str) -> Iterator[bytes]:
        for f in record.files:
            if f.path == path:
                return self.store.get(f.object.key)
        raise NotFound(f"{record.name} has no file {path!r}", reason="MODEL_FILE_NOT_FOUND")

    def delete(self, project: str, model_id: str) -> None:
        record = self.get(project, model_id)
        if record.reference_count:
            raise FailedPrecondition(
                f"{record.name} is referenced by {record.reference_count} resource(s)",
                reason="RESOURCE_IN_USE",
            )
        self.repo.delete_model(project, model_id)
        self.store.delete_prefix(model_prefix(project, model_id))

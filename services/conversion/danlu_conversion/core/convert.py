"""Training checkpoint -> Hugging Face artifact (PEFT adapter, or complete model).

A checkpoint is read **through its manifest** (``manifest.json``, the commit marker the worker
writes last): only the files a conversion needs are fetched (never the optimizer state or the
DeepSpeed shards), each verified against the manifest's SHA-256 on the way through. DeepSpeed
checkpoints need no separate consolidation: the worker saves the Hugging Face copy of every
checkpoint itself (ZeRO-3 gathers the 16-bit weights on save, ZeRO-1/2 hold them whole), so
plain and ZeRO checkpoints convert the same way; a checkpoint lacking that copy is refused.

* ``peft_adapter`` checkpoints become ``adapter_model.safetensors`` + ``adapter_config.json``
  (floating tensors cast to the requested dtype) that transformers, peft and vLLM load unchanged.
* ``full_model`` checkpoints become a complete model directory: ``config.json`` (``torch_dtype``
  set), ``generation_config.json``, the tokenizer files (from the base model) and safetensors
  shards of at most ``max_shard_size`` + index, streamed tensor by tensor as the merge does.

The serving contract (base model digest, chat template, generation config, dtype) and the
lineage (training job, dataset versions, checkpoint, base model) come from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from danlu_kit.errors import Cancelled, FailedPrecondition, InvalidArgument
from danlu_kit.objectstore import ObjectStore
from danlu_kit.objectstore.artifacts import Manifest, read_manifest

from .merge import CONFIG_DTYPE, resolve_dtype
from .tensorfiles import (
    CorruptShard,
    OutputTensor,
    TensorEntry,
    model_entries,
    parse_size,
    read_header,
    read_rows,
    row_chunks,
    write_model_shards,
)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
)
_MODEL_SIDE_FILES = ("config.json", "generation_config.json")


@dataclass
class ConvertResult:
    directory: Path
    kind: str  # "adapter" | "full"
    files: list[str]
    contract: dict[str, Any]
    lineage: dict[str, Any]
    step: int
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- fetch


def fetch_checkpoint(store: ObjectStore, prefix: str, dest: Path) -> Manifest:
    """Download what a conversion needs of the checkpoint at ``prefix`` into ``dest``.

    Only a committed checkpoint (one with a manifest) is read; every file is verified against
    the manifest's SHA-256 and size, so a corrupt object fails here with DATA_LOSS.
    """
    prefix = prefix.rstrip("/")
    manifest = read_manifest(store, prefix)
    wanted = [f for f in manifest.files if _needed(f.path)]
    if not wanted:
        raise FailedPrecondition(
            message=f"checkpoint {prefix!r} holds no Hugging Face weights to convert",
            reason="CHECKPOINT_INVALID",
        )
    dest.mkdir(parents=True, exist_ok=True)
    for f in wanted:
        target = dest / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with target.open("wb") as out:
            for chunk in store.get(manifest.key(f.path)):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if digest.hexdigest() != f.sha256 or size != f.size_bytes:
            raise CorruptShard(
                message=f"checkpoint file {f.path} does not match its manifest "
                f"(sha256 or size differs): the stored object is corrupt",
                reason="CHECKPOINT_CORRUPT",
            )
    (dest / "manifest.json").write_bytes(manifest.canonical_bytes())
    return manifest


def _needed(path: str) -> bool:
    if "/" in path:  # deepspeed/…: engine shards and optimizer state, not needed
        return False
    return (
        path in ADAPTER_FILES
        or path in _MODEL_SIDE_FILES
        or path in TOKENIZER_FILES
        or (path.startswith("model") and ".safetensors" in path)
    )


# --------------------------------------------------------------------------- convert


def convert_checkpoint(
    checkpoint_dir: Path,
    out_dir: Path,
    *,
    manifest: Manifest | None = None,
    dtype: str = "fp16",
    max_shard_size: str | int = "2GB",
    tokenizer_dir: Path | None = None,
    checkpoint_name: str = "",
    chunk_elements: int = 16 * 1024 * 1024,
    cancelled: Callable[[], bool] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ConvertResult:
    """Convert a fetched checkpoint directory into ``out_dir`` (via ``out_dir.partial``)."""
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    out_dtype = resolve_dtype(dtype)
    limit = parse_size(max_shard_size)
    if manifest is None:
        manifest = Manifest.from_bytes("", (checkpoint_dir / "manifest.json").read_bytes())
    extra = dict(manifest.extra)
    fmt = extra.get("format") or (
        "peft_adapter" if (checkpoint_dir / "adapter_config.json").is_file() else "full_model"
    )
    if out_dir.exists():
        raise FailedPrecondition(message=f"{out_dir} already exists", reason="OUTPUT_EXISTS")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    notes: list[str] = []
    if extra.get("deepspeed_stage"):
        notes.append(
            f"DeepSpeed ZeRO-{extra['deepspeed_stage']} checkpoint: converted from the "
            "consolidated 16-bit Hugging Face copy the worker saved with it"
        )
    try:
        if fmt == "peft_adapter":
            kind = "adapter"
            _convert_adapter(
                checkpoint_dir, partial, out_dtype, extra, chunk_elements, cancelled, progress
            )
        elif fmt == "full_model":
            kind = "full"
            _convert_full(
                checkpoint_dir,
                partial,
                out_dtype,
                limit,
                tokenizer_dir,
                chunk_elements,
                cancelled,
                progress,
            )
        else:
            raise FailedPrecondition(
                message=f"checkpoint format {fmt!r} cannot be converted",
                reason="CHECKPOINT_INVALID",
            )
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    generation = out_dir / "generation_config.json"
    if not generation.is_file() and tokenizer_dir is not None:
        generation = Path(tokenizer_dir) / "generation_config.json"
    contract = {
        "base_model_digest": extra.get("base_model_digest", ""),
        "chat_template": extra.get("chat_template", ""),
        "stop_words": list(extra.get("stop_words", [])),
        "generation_config_json": generation.read_text() if generation.is_file() else "",
        "dtype": CONFIG_DTYPE[out_dtype],
    }
    if tokenizer_dir is not None:
        contract["tokenizer_digest"] = tokenizer_digest(Path(tokenizer_dir))
    lineage = {
        "dataset_versions": list(manifest.lineage.get("dataset_versions", [])),
        "training_job": manifest.lineage.get("training_job", extra.get("training_job", "")),
        "checkpoint": checkpoint_name,
        "parent_model": manifest.lineage.get("parent_model", extra.get("base_model", "")),
    }
    return ConvertResult(
        directory=out_dir,
        kind=kind,
        files=sorted(p.name for p in out_dir.iterdir()),
        contract=contract,
        lineage=lineage,
        step=int(extra.get("step", 0)),
        notes=notes,
    )


def tokenizer_digest(directory: Path) -> str:
    """As the registry computes it: sha256 over ``name:sha256`` lines of the tokenizer files."""
    parts = []
    for name in sorted(TOKENIZER_FILES):
        path = directory / name
        if path.is_file():
            parts.append(f"{name}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else ""


def _cast_outputs(
    entries: list[TensorEntry], out_dtype: torch.dtype, chunk_elements: int
) -> list[OutputTensor]:
    def output(entry: TensorEntry) -> OutputTensor:
        dtype = out_dtype if entry.dtype.is_floating_point else entry.dtype

        def produce() -> Iterator[torch.Tensor]:
            for begin, end in row_chunks(entry.shape, chunk_elements):
                yield read_rows(entry, begin, end).to(dtype)

        return OutputTensor(entry.name, dtype, entry.shape, produce)

    return [output(e) for e in entries]


def _progress_hook(
    total: int,
    cancelled: Callable[[], bool] | None,
    progress: Callable[[int, int, str], None] | None,
) -> Callable[[OutputTensor], None]:
    done = 0

    def on_tensor(t: OutputTensor) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, t.name)
        if cancelled is not None and cancelled():
            raise Cancelled(message="the conversion was cancelled", reason="CANCELLED")

    return on_tensor


def _convert_adapter(
    src: Path,
    dest: Path,
    out_dtype: torch.dtype,
    extra: dict[str, Any],
    chunk_elements: int,
    cancelled: Callable[[], bool] | None,
    progress: Callable[[int, int, str], None] | None,
) -> None:
    for name in ADAPTER_FILES:
        if not (src / name).is_file():
            raise FailedPrecondition(
                message=f"the adapter checkpoint has no {name}", reason="CHECKPOINT_INVALID"
            )
    try:
        config = json.loads((src / "adapter_config.json").read_text())
    except ValueError as exc:
        raise InvalidArgument(
            message=f"adapter_config.json is unreadable: {exc}", reason="CHECKPOINT_INVALID"
        ) from exc
    if extra.get("base_model"):
        # The worker trained on a local cache path; name the registered base instead.
        config["base_model_name_or_path"] = extra["base_model"]
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    entries, _ = read_header(src / "adapter_model.safetensors")
    outputs = _cast_outputs(entries, out_dtype, chunk_elements)
    write_model_shards(
        dest,
        outputs,
        max_shard_size=2**62,  # one file: peft and vLLM load adapter_model.safetensors only
        prefix="adapter_model",
        on_tensor=_progress_hook(len(outputs), cancelled, progress),
    )


def _convert_full(
    src: Path,
    dest: Path,
    out_dtype: torch.dtype,
    limit: int,
    tokenizer_dir: Path | None,
    chunk_elements: int,
    cancelled: Callable[[], bool] | None,
    progress: Callable[[int, int, str], None] | None,
) -> None:
    try:
        config = json.loads((src / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            message=f"the full-model checkpoint's config.json is missing or unreadable: {exc}",
            reason="CHECKPOINT_INVALID",
        ) from exc
    outputs = _cast_outputs(model_entries(src), out_dtype, chunk_elements)
    write_model_shards(
        dest,
        outputs,
        max_shard_size=limit,
        on_tensor=_progress_hook(len(outputs), cancelled, progress),
    )
    config["torch_dtype"] = CONFIG_DTYPE[out_dtype]
    if "dtype" in config:
        config["dtype"] = CONFIG_DTYPE[out_dtype]
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    sources = [src] + ([Path(tokenizer_dir)] if tokenizer_dir is not None else [])
    for name in ("generation_config.json", *TOKENIZER_FILES):
        for directory in sources:
            if (directory / name).is_file():
                shutil.copy2(directory / name, dest / name)
                break

"""The two use cases end to end: fetch inputs, convert or merge, register the result.

The registry is reached through a small port (the SDK's ``RegistryClient`` satisfies it), the
checkpoint through the object-store port; both run in a scratch directory that is removed
afterwards. The registry publishes atomically (manifest last), so a failure at any point before
``push_model`` returns leaves no model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from danlu_kit.errors import FailedPrecondition, InvalidArgument
from danlu_kit.objectstore import ObjectStore

from .convert import ConvertResult, convert_checkpoint, fetch_checkpoint
from .merge import CONFIG_DTYPE, MergeResult, merge_adapter, resolve_dtype
from .precision import DEFAULT_MAX_MODEL_BYTES, PrecisionReport, precision_report

Progress = Callable[[int, int, str], None]


class Registry(Protocol):
    """What conversion needs of the registry (``danlu_client.client.RegistryClient``)."""

    def get_model(self, name: str) -> Any: ...

    def download_model(self, name: str, dest: str | Path) -> Path: ...

    def push_model(
        self,
        directory: str | Path,
        name: str,
        *,
        kind: str = "auto",
        description: str = "",
        replace: bool = False,
        lineage: dict | None = None,
        contract: dict | None = None,
        request_id: str = "",
    ) -> Any: ...


@dataclass
class Outcome:
    model: Any  # the registered model (registry proto)
    notes: list[str] = field(default_factory=list)
    precision: PrecisionReport | None = None


def convert_and_register(
    registry: Registry,
    store: ObjectStore,
    *,
    checkpoint: str,
    model_id: str,
    dtype: str = "fp16",
    max_shard_size: str | int = "2GB",
    job: str = "",
    workdir: Path | None = None,
    cancelled: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Checkpoint (any committed step) -> registered adapter (``kind=adapter``) or full model."""
    resolve_dtype(dtype)
    with _scratch(workdir) as scratch:
        manifest = fetch_checkpoint(store, checkpoint, scratch / "checkpoint")
        base_name = manifest.extra.get("base_model") or manifest.lineage.get("parent_model", "")
        tokenizer_dir = None
        base = None
        if base_name:
            base = registry.get_model(base_name)
            if manifest.extra.get("format") == "full_model":
                tokenizer_dir = registry.download_model(base_name, scratch / "base")
        result: ConvertResult = convert_checkpoint(
            scratch / "checkpoint",
            scratch / "out",
            manifest=manifest,
            dtype=dtype,
            max_shard_size=max_shard_size,
            tokenizer_dir=tokenizer_dir,
            checkpoint_name=checkpoint,
            cancelled=cancelled,
            progress=progress,
        )
        contract = dict(result.contract)
        if base is not None and base.tokenizer_digest:
            contract["tokenizer_digest"] = base.tokenizer_digest
        lineage = {**result.lineage, "conversion_job": job}
        model = registry.push_model(
            result.directory,
            model_id,
            kind=result.kind,
            description=f"converted from {checkpoint} (step {result.step})",
            lineage=_clean(lineage),
            contract=_clean(contract),
        )
        return Outcome(model=model, notes=result.notes)


def merge_and_register(
    registry: Registry,
    *,
    adapter: str,
    model_id: str,
    base: str = "",
    dtype: str = "fp16",
    max_shard_size: str | int = "2GB",
    device: str = "cpu",
    precision: bool = True,
    precision_max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    prompts: list[str] | None = None,
    job: str = "",
    workdir: Path | None = None,
    cancelled: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Adapter + its base -> registered merged model (``kind=merged``) with a precision report.

    The adapter's recorded base digest is compared with the base's before anything is
    downloaded; tensor shapes are compared before any weight is read.
    """
    resolve_dtype(dtype)
    adapter_model = registry.get_model(adapter)
    base = base or adapter_model.lineage.parent_model
    if not base:
        raise InvalidArgument(
            message=f"{adapter_model.name} does not name its base model; pass the base",
            reason="BASE_MODEL_REQUIRED",
        )
    base_model = registry.get_model(base)
    expected = adapter_model.contract.base_model_digest
    if expected and expected != base_model.digest:
        raise FailedPrecondition(
            message=(
                f"{adapter_model.name} was trained on a base with digest {expected[:19]}…, "
                f"not on {base_model.name} ({base_model.digest[:19]}…)"
            ),
            reason="BASE_MODEL_MISMATCH",
            metadata={"expected": expected, "actual": base_model.digest},
        )
    with _scratch(workdir) as scratch:
        adapter_dir = registry.download_model(adapter_model.name, scratch / "adapter")
        base_dir = registry.download_model(base_model.name, scratch / "base")
        result: MergeResult = merge_adapter(
            base_dir,
            adapter_dir,
            scratch / "merged",
            dtype=dtype,
            max_shard_size=max_shard_size,
            device=device,
            base_digest=base_model.digest,
            adapter_base_digest=expected,
            cancelled=cancelled,
            progress=progress,
        )
        report = None
        if precision:
            report = precision_report(
                base_dir,
                adapter_dir,
                result.directory,
                prompts=prompts or (),
                max_model_bytes=precision_max_bytes,
            )
            (result.directory / "precision_report.json").write_text(
                json.dumps(report.to_json(), indent=2) + "\n"
            )
        generation = result.directory / "generation_config.json"
        c = adapter_model.contract
        contract = {
            "base_model_digest": base_model.digest,
            "tokenizer_digest": base_model.tokenizer_digest,
            "chat_template": c.chat_template,
            "stop_words": list(c.stop_words),
            "generation_config_json": generation.read_text() if generation.is_file() else "",
            "dtype": CONFIG_DTYPE[resolve_dtype(dtype)],
        }
        lin = adapter_model.lineage
        lineage = {
            "dataset_versions": list(lin.dataset_versions),
            "training_job": lin.training_job,
            "checkpoint": lin.checkpoint,
            "parent_model": base_model.name,
            "adapter_model": adapter_model.name,
            "conversion_job": job,
        }
        model = registry.push_model(
            result.directory,
            model_id,
            kind="merged",
            description=f"{adapter_model.name} merged into {base_model.name}",
            lineage=_clean(lineage),
            contract=_clean(contract),
        )
        return Outcome(model=model, notes=result.notes, precision=report)


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in ("", None, [])}


class _scratch:
    def __init__(self, parent: Path | None) -> None:
        self.parent = parent

    def __enter__(self) -> Path:
        if self.parent is not None:
            Path(self.parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="danlu-conv-", dir=self.parent))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

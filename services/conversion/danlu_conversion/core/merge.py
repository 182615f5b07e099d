"""Adapter + base -> merged model, streamed tensor by tensor with bounded memory.

What stays resident: the adapter (a few hundred MB at most) and one chunk of rows of one base
tensor (``chunk_elements``, 16 M elements = 64 MB in fp32 by default). Base shards are never
mapped whole and output shards are never assembled in memory: their headers are planned from the
base shards' headers, then tensors are streamed into them (see :mod:`.tensorfiles`). A 70B merge
therefore needs a few GB of RAM, not 140.

For every base weight a LoRA module targets, ``W' = W + scale * B @ A`` is computed in fp32 and
cast to the requested dtype (fp16 by default; fp32 only when asked). ``scale`` is
``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA), with peft's ``rank_pattern`` /
``alpha_pattern`` overrides. Embedding LoRA (``lora_embedding_A/B``), ``fan_in_fan_out`` and
``modules_to_save`` replacements are handled as peft does. DoRA and LoRA biases are refused.

Tied embeddings: when the base ties ``lm_head`` to ``embed_tokens`` and the adapter changes
either, the merged model is **untied** explicitly (``tie_word_embeddings: false`` and an explicit
``lm_head.weight``) so that it computes what base + adapter computes. (peft's
``merge_and_unload`` writes the delta into the shared tensor, which changes the other end of the
tie; we don't.) The result says so in ``notes``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from danlu_kit.errors import Cancelled, FailedPrecondition, InvalidArgument

from .tensorfiles import (
    OutputTensor,
    TensorEntry,
    model_entries,
    parse_size,
    read_rows,
    row_chunks,
    write_model_shards,
)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CONFIG_DTYPE = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
# Files of a model directory that the merge rewrites instead of copying.
_WEIGHT_FILE = re.compile(r"^(model.*\.safetensors(\.index\.json)?|pytorch_model.*\.bin.*)$")
_SKIP_FILES = {"manifest.json", "config.json"}
_PEFT_PREFIX = "base_model.model."
LM_HEAD = "lm_head.weight"


@dataclass(frozen=True)
class LoraModule:
    """One LoRA pair, keyed by the base weight it changes."""

    target: str  # base tensor name, e.g. model.layers.0.self_attn.q_proj.weight
    a: torch.Tensor
    b: torch.Tensor
    scale: float
    embedding: bool = False
    fan_in_fan_out: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the base weight this delta applies to."""
        if self.embedding:  # lora_embedding_A: (r, num_embeddings), B: (dim, r)
            return (self.a.shape[1], self.b.shape[0])
        out, inp = self.b.shape[0], self.a.shape[1]
        return (inp, out) if self.fan_in_fan_out else (out, inp)

    def delta_rows(self, begin: int, end: int, device: torch.device) -> torch.Tensor:
        """Rows ``begin:end`` of ``scale * delta`` in fp32."""
        a = self.a.to(device=device, dtype=torch.float32)
        b = self.b.to(device=device, dtype=torch.float32)
        if self.embedding:  # delta = (B @ A).T -> rows index A's columns
            return (a[:, begin:end].T @ b.T) * self.scale
        if self.fan_in_fan_out:  # delta = (B @ A).T -> rows index A's columns
            return (a[:, begin:end].T @ b.T) * self.scale
        return (b[begin:end] @ a) * self.scale


@dataclass
class Adapter:
    """A PEFT LoRA adapter directory, loaded whole (adapters are small)."""

    config: dict
    modules: dict[str, LoraModule]
    replacements: dict[str, torch.Tensor]  # modules_to_save: base name -> full tensor

    @property
    def targets(self) -> set[str]:
        return set(self.modules) | set(self.replacements)


def load_adapter(directory: Path) -> Adapter:
    """Read ``adapter_config.json`` + ``adapter_model.safetensors`` and pair the LoRA tensors."""
    directory = Path(directory)
    try:
        config = json.loads((directory / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(
            message=f"the adapter's adapter_config.json is missing or unreadable: {exc}",
            reason="ADAPTER_INVALID",
        ) from exc
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise FailedPrecondition(
            message=f"only LoRA adapters can be merged, not {config.get('peft_type')}",
            reason="ADAPTER_UNSUPPORTED",
        )
    if config.get("use_dora"):
        raise FailedPrecondition(
            message="DoRA adapters are not supported by the streaming merge",
            reason="ADAPTER_UNSUPPORTED",
        )
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        raise InvalidArgument(
            message="the adapter has no adapter_model.safetensors", reason="ADAPTER_INVALID"
        )
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise InvalidArgument(
            message=f"adapter_model.safetensors is unreadable: {exc}", reason="ADAPTER_INVALID"
        ) from exc

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    replacements: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix(_PEFT_PREFIX)
        for suffix, part in (
            (".lora_A.weight", "A"),
            (".lora_B.weight", "B"),
            (".lora_embedding_A", "eA"),
            (".lora_embedding_B", "eB"),
        ):
            if name.endswith(suffix):
                pairs.setdefault(name.removesuffix(suffix), {})[part] = value
                break
        else:
            if ".lora_" in name:
                raise FailedPrecondition(
                    message=f"adapter tensor {key!r} is not supported by the merge "
                    "(LoRA biases, DoRA magnitudes)",
                    reason="ADAPTER_UNSUPPORTED",
                )
            # modules_to_save, saved under the base name; and with save_embedding_layers, the
            # (possibly resized) base embedding as ``<module>.base_layer.weight``: peft loads both
            # in place of the base tensor, so they replace it here too.
            replacements[name.replace(".base_layer.", ".")] = value

    r, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    modules: dict[str, LoraModule] = {}
    for module, parts in pairs.items():
        mr = int(_pattern_value(config.get("rank_pattern") or {}, module, r))
        ma = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
        scale = ma / math.sqrt(mr) if config.get("use_rslora") else ma / mr
        embedding = "eA" in parts or "eB" in parts
        a, b = (parts.get("eA"), parts.get("eB")) if embedding else (parts.get("A"), parts.get("B"))
        if a is None or b is None:
            raise InvalidArgument(
                message=f"adapter module {module!r} lacks its lora_A or lora_B tensor",
                reason="ADAPTER_INVALID",
            )
        modules[f"{module}.weight"] = LoraModule(
            target=f"{module}.weight",
            a=a,
            b=b,
            scale=scale,
            embedding=embedding,
            fan_in_fan_out=bool(config.get("fan_in_fan_out")) and not embedding,
        )
    return Adapter(config=config, modules=modules, replacements=replacements)


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    # peft matches a pattern key against the end of the module's dotted name.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


# --------------------------------------------------------------------------- compatibility


def check_compatible(
    adapter: Adapter,
    entries: list[TensorEntry],
    *,
    tied: bool,
    base_digest: str = "",
    adapter_base_digest: str = "",
) -> None:
    """Refuse (FAILED_PRECONDITION, before any work) an adapter made for another base."""
    if base_digest and adapter_base_digest and base_digest != adapter_base_digest:
        raise FailedPrecondition(
            message=(
                f"the adapter was trained on base {adapter_base_digest[:19]}…, "
                f"not on this base ({base_digest[:19]}…)"
            ),
            reason="BASE_MODEL_MISMATCH",
            metadata={"expected": adapter_base_digest, "actual": base_digest},
        )
    shapes = {e.name: e.shape for e in entries}
    if tied and LM_HEAD not in shapes and "model.embed_tokens.weight" in shapes:
        shapes[LM_HEAD] = shapes["model.embed_tokens.weight"]
    problems = []
    for name, module in adapter.modules.items():
        if name not in shapes:
            problems.append(f"{name}: not in the base model")
        elif module.shape != shapes[name]:
            problems.append(f"{name}: adapter delta {module.shape} vs base {shapes[name]}")
    for name, tensor in adapter.replacements.items():
        if name not in shapes:
            problems.append(f"{name}: not in the base model")
        elif tuple(tensor.shape) != shapes[name]:
            problems.append(f"{name}: adapter {tuple(tensor.shape)} vs base {shapes[name]}")
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise FailedPrecondition(
            message="the adapter does not fit this base model: " + "; ".join(problems[:3]) + more,
            reason="BASE_MODEL_MISMATCH",
        )


# --------------------------------------------------------------------------- merge


@dataclass
class MergeResult:
    directory: Path
    files: list[str]
    dtype: str
    tensors: int
    merged_tensors: int
    total_bytes: int
    untied: bool = False
    notes: list[str] = field(default_factory=list)


Progress = Callable[[int, int, str], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(message="--device cuda but no CUDA device", reason="NO_CUDA")
    if device not in ("cpu", "cuda"):
        raise InvalidArgument(
            message=f"device {device!r} is not cpu, cuda or auto", reason="DEVICE_INVALID"
        )
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InvalidArgument(
            message=f"dtype {dtype!r} is not one of fp16, bf16, fp32", reason="DTYPE_INVALID"
        ) from None


def merge_adapter(
    base_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    *,
    dtype: str = "fp16",
    max_shard_size: str | int = "2GB",
    device: str = "cpu",
    base_digest: str = "",
    adapter_base_digest: str = "",
    chunk_elements: int = 16 * 1024 * 1024,
    cancelled: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Merge the LoRA adapter in ``adapter_dir`` into the base in ``base_dir``.

    Writes into ``out_dir`` (which must not exist) through a sibling ``.partial`` directory that
    is renamed into place when complete: a failure or cancellation leaves nothing at ``out_dir``.
    """
    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    out_dtype = resolve_dtype(dtype)
    limit = parse_size(max_shard_size)
    dev = resolve_device(device)
    config = _read_config(base_dir)
    adapter = load_adapter(adapter_dir)
    entries = model_entries(base_dir)
    by_name = {e.name: e for e in entries}
    tied = bool(config.get("tie_word_embeddings", True))
    check_compatible(
        adapter,
        entries,
        tied=tied,
        base_digest=base_digest,
        adapter_base_digest=adapter_base_digest,
    )

    notes: list[str] = []
    embed = "model.embed_tokens.weight"
    untie = tied and bool(adapter.targets & {embed, LM_HEAD}) and embed in by_name
    outputs: list[OutputTensor] = []
    for entry in entries:
        outputs.append(_output(entry, entry.name, adapter, out_dtype, dev, chunk_elements))
    if untie:
        notes.append(
            "the base ties lm_head to embed_tokens and the adapter changes "
            f"{' and '.join(sorted(adapter.targets & {embed, LM_HEAD}))}: the merged model is "
            "untied (explicit lm_head.weight, tie_word_embeddings=false) so that it computes "
            "what base + adapter computes"
        )
        source = by_name.get(LM_HEAD, by_name[embed])
        outputs = [o for o in outputs if o.name != LM_HEAD]
        outputs.append(_output(source, LM_HEAD, adapter, out_dtype, dev, chunk_elements))
    merged = sum(1 for o in outputs if o.name in adapter.targets)

    partial = out_dir.with_name(out_dir.name + ".partial")
    if out_dir.exists():
        raise FailedPrecondition(message=f"{out_dir} already exists", reason="OUTPUT_EXISTS")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    done = 0

    def on_tensor(t: OutputTensor) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(outputs), t.name)
        if cancelled is not None and cancelled():
            raise Cancelled(message="the merge was cancelled", reason="CANCELLED")

    try:
        write_model_shards(partial, outputs, max_shard_size=limit, on_tensor=on_tensor)
        _copy_side_files(base_dir, partial)
        config["torch_dtype"] = CONFIG_DTYPE[out_dtype]
        if "dtype" in config:
            config["dtype"] = CONFIG_DTYPE[out_dtype]
        if untie:
            config["tie_word_embeddings"] = False
            for sub in ("text_config",):
                if isinstance(config.get(sub), dict):
                    config[sub]["tie_word_embeddings"] = False
        (partial / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return MergeResult(
        directory=out_dir,
        files=sorted(p.name for p in out_dir.iterdir()),
        dtype=dtype,
        tensors=len(outputs),
        merged_tensors=merged,
        total_bytes=sum(o.nbytes for o in outputs),
        untied=untie,
        notes=notes,
    )


def _output(
    entry: TensorEntry,
    name: str,
    adapter: Adapter,
    out_dtype: torch.dtype,
    device: torch.device,
    chunk_elements: int,
) -> OutputTensor:
    floating = entry.dtype.is_floating_point
    dtype = out_dtype if floating else entry.dtype
    module = adapter.modules.get(name)
    replacement = adapter.replacements.get(name)

    def produce() -> Iterator[torch.Tensor]:
        for begin, end in row_chunks(entry.shape, chunk_elements):
            if replacement is not None:
                rows = replacement[begin:end]
            else:
                rows = read_rows(entry, begin, end)
            if module is None:
                yield rows.to(dtype)
            else:
                merged = rows.to(device=device, dtype=torch.float32)
                merged += module.delta_rows(begin, end, device)
                yield merged.to(dtype).cpu()

    return OutputTensor(name=name, dtype=dtype, shape=entry.shape, produce=produce)


def _read_config(base_dir: Path) -> dict:
    try:
        return json.loads((base_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(
            message=f"the base model's config.json is missing or unreadable: {exc}",
            reason="MODEL_INVALID",
        ) from exc


def _copy_side_files(source: Path, dest: Path) -> None:
    """Tokenizer, generation config, chat template…: everything that is not weights."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if (
            not path.is_file()
            or rel.name.startswith(".")
            or _WEIGHT_FILE.match(rel.name)
            or str(rel) in _SKIP_FILES
        ):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)

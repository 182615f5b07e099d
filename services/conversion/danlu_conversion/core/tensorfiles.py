"""Safetensors read and written one tensor at a time, so memory stays bounded.

``safetensors.safe_open`` maps a whole shard; touching every tensor of a 4 GB shard puts 4 GB of
file pages into the process's resident set, and ``save_file`` serialises a whole shard in memory
(twice). For a merge that must fit a 70B model into a few GB we instead:

* read a shard's header once (8-byte little-endian length + JSON) and then each tensor's bytes
  with a plain ``seek``/``read`` into a fresh buffer (one tensor resident at a time);
* plan the output shards from the headers (names, dtypes, shapes are known before any data is
  read), write each output shard's header first and then stream the tensors into it.

The format is the documented one (https://github.com/huggingface/safetensors#format): the
header is padded with spaces to a multiple of 8 bytes, offsets are relative to the data section,
tensors are little-endian and C-contiguous.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from danlu_kit.errors import DanluError, InvalidArgument

# safetensors dtype code <-> torch dtype (what transformers checkpoints use).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
CODES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CorruptShard(DanluError):
    """A weight file is truncated, malformed, or does not match its recorded digest."""

    code_name = "DATA_LOSS"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its shard file, dtype, shape and byte range in the file."""

    name: str
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[list[TensorEntry], dict[str, str]]:
    """The tensors of one safetensors file (in file order) and its ``__metadata__``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise CorruptShard(
            message=f"{path.name}: not a readable safetensors file ({exc})", reason="SHARD_CORRUPT"
        ) from exc
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + n
    entries = []
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptShard(
                message=f"{path.name}: bad header entry for {name!r}", reason="SHARD_CORRUPT"
            ) from exc
        expected = math.prod(shape) * _itemsize(dtype)
        if end - begin != expected or base + end > size:
            raise CorruptShard(
                message=(
                    f"{path.name}: tensor {name!r} ({expected} bytes) runs past the end of the "
                    f"{size}-byte file: the shard is truncated or corrupt"
                ),
                reason="SHARD_CORRUPT",
            )
        entries.append(TensorEntry(name, path, dtype, shape, base + begin, base + end))
    entries.sort(key=lambda e: e.start)
    return entries, metadata


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """Read one tensor into its own (writable) buffer."""
    buf = bytearray(entry.nbytes)
    with entry.path.open("rb") as f:
        f.seek(entry.start)
        got = f.readinto(buf)
    if got != entry.nbytes:
        raise CorruptShard(
            message=f"{entry.path.name}: tensor {entry.name!r} is truncated", reason="SHARD_CORRUPT"
        )
    if not buf:
        return torch.empty(entry.shape, dtype=entry.dtype)
    return torch.frombuffer(buf, dtype=entry.dtype).reshape(entry.shape)


def model_files(directory: Path) -> list[Path]:
    """The weight files of a Hugging Face model directory (through its index when sharded)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise CorruptShard(
                message=f"{index.name} is unreadable: {exc}", reason="SHARD_CORRUPT"
            ) from exc
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise CorruptShard(
                message=f"shard(s) named by {index.name} are missing: {', '.join(missing)}",
                reason="SHARD_MISSING",
            )
        return [directory / f for f in files]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        raise InvalidArgument(
            message=f"{directory.name}: no model*.safetensors weights found", reason="MODEL_INVALID"
        )
    return files


def model_entries(directory: Path) -> list[TensorEntry]:
    """Every tensor of a model directory, shard by shard, in file order."""
    entries: list[TensorEntry] = []
    seen: set[str] = set()
    for path in model_files(directory):
        for entry in read_header(path)[0]:
            if entry.name in seen:
                raise CorruptShard(
                    message=f"tensor {entry.name!r} appears in two shards", reason="SHARD_CORRUPT"
                )
            seen.add(entry.name)
            entries.append(entry)
    return entries


def parse_size(text: str | int) -> int:
    """``"2GB"``, ``"500MB"``, ``"1GiB"`` or a byte count (decimal units, as transformers)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", text, flags=re.IGNORECASE)
    if not m:
        raise InvalidArgument(
            message=f"max shard size {text!r} is not a size such as 2GB or 500MB",
            reason="SHARD_SIZE_INVALID",
        )
    number, unit = float(m.group(1)), m.group(2).upper()
    base = 1024 if "I" in unit else 1000
    power = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[:1] if unit[:1] != "B" else ""]
    size = int(number * base**power)
    if size <= 0:
        raise InvalidArgument(
            message="max shard size must be positive", reason="SHARD_SIZE_INVALID"
        )
    return size


# --------------------------------------------------------------------------- streaming writer


@dataclass(frozen=True)
class OutputTensor:
    """One tensor to write: its name, dtype and shape, and how to produce its values."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    # Yields the tensor's values as consecutive row chunks of dimension 0 (or the whole tensor).
    produce: Callable[[], Iterable[torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)


def plan_shards(tensors: Iterable[OutputTensor], max_shard_size: int) -> list[list[OutputTensor]]:
    """Greedy packing in order, as transformers does; a tensor larger than the limit goes alone."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return [s for s in shards if s]


def write_model_shards(
    directory: Path,
    tensors: list[OutputTensor],
    *,
    max_shard_size: int,
    prefix: str = "model",
    on_tensor: Callable[[OutputTensor], None] | None = None,
) -> list[str]:
    """Write ``tensors`` as ``{prefix}-0000i-of-0000n.safetensors`` + index (or one file).

    Each tensor's ``produce`` is called once, just before its bytes are written; nothing else is
    held. Returns the file names written (index last).
    """
    shards = plan_shards(tensors, max_shard_size)
    n = len(shards)
    names = (
        [f"{prefix}.safetensors"]
        if n == 1
        else [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards, strict=True):
        _write_shard(directory / name, shard, on_tensor)
        weight_map.update({t.name: name for t in shard})
    if n > 1:
        total = sum(t.nbytes for t in tensors)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
        names.append(f"{prefix}.safetensors.index.json")
    return names


def _write_shard(
    path: Path, shard: list[OutputTensor], on_tensor: Callable[[OutputTensor], None] | None
) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in shard:
        header[t.name] = {
            "dtype": CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in shard:
            written = 0
            for chunk in t.produce():
                if chunk.dtype != t.dtype:
                    raise AssertionError(f"{t.name}: produced {chunk.dtype}, planned {t.dtype}")
                data = _bytes_of(chunk)
                f.write(data)
                written += len(data)
                del chunk, data
            if written != t.nbytes:
                raise AssertionError(f"{t.name}: produced {written} bytes, planned {t.nbytes}")
            if on_tensor is not None:
                on_tensor(t)


def read_rows(entry: TensorEntry, begin: int, end: int) -> torch.Tensor:
    """Rows ``begin:end`` of a tensor's first dimension (contiguous bytes in the file)."""
    if len(entry.shape) == 0:
        return read_tensor(entry)
    row = math.prod(entry.shape[1:]) * _itemsize(entry.dtype)
    buf = bytearray((end - begin) * row)
    with entry.path.open("rb") as f:
        f.seek(entry.start + begin * row)
        got = f.readinto(buf)
    if got != len(buf):
        raise CorruptShard(
            message=f"{entry.path.name}: tensor {entry.name!r} is truncated", reason="SHARD_CORRUPT"
        )
    if not buf:
        return torch.empty((end - begin, *entry.shape[1:]), dtype=entry.dtype)
    return torch.frombuffer(buf, dtype=entry.dtype).reshape(end - begin, *entry.shape[1:])


def row_chunks(shape: tuple[int, ...], max_elements: int) -> Iterator[tuple[int, int]]:
    """``(begin, end)`` row ranges of at most ``max_elements`` elements each (at least one row)."""
    if not shape:
        yield 0, 1
        return
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, max_elements // per_row)
    for begin in range(0, shape[0], step):
        yield begin, min(shape[0], begin + step)


def _bytes_of(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()

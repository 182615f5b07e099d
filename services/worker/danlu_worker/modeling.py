"""Base model files, device, precision and model loading (transformers, bitsandbytes).

The base model's files come from the object store into ``{cache}/models/{digest}/`` and are
checked against their SHA-256s; a directory is used only once its ``.complete`` marker is
written, so a worker killed mid-download never trains on a partial model.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from danlu.training.v1 import training_job_pb2 as tj
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.errors import FailedPrecondition, InvalidArgument
from danlu_kit.objectstore import ObjectStore

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from danlu_worker.spec import QuantSettings

log = logging.getLogger(__name__)

_COMPLETE = ".complete"


def fetch_model(
    store: ObjectStore, artifact: wpb.ModelArtifact, cache_dir: Path, *, cached_only: bool = False
) -> Path | None:
    """The base model directory in the local cache, every file verified (``cached_only``:
    None unless it is already complete)."""
    if not artifact.files:
        raise FailedPrecondition(
            message=f"model {artifact.model!r} has no files", reason="MODEL_NOT_READY"
        )
    digest = artifact.digest.removeprefix("sha256:") or _digest_of_files(artifact)
    directory = cache_dir / "models" / digest
    if (directory / _COMPLETE).is_file():
        return directory
    if cached_only:
        return None
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted download
    for f in artifact.files:
        relative = Path(f.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidArgument(
                message=f"model file path {f.path!r} escapes the model directory",
                reason="MODEL_FILE_PATH_INVALID",
            )
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        info = store.download_file(f.object.key, target)
        if f.object.sha256 and info.sha256 != f.object.sha256:
            raise FailedPrecondition(
                message=f"model file {f.path!r} has sha256 {info.sha256}, expected "
                f"{f.object.sha256}",
                reason="MODEL_DIGEST_MISMATCH",
            )
    (directory / _COMPLETE).write_text(artifact.digest)
    return directory


def _digest_of_files(artifact: wpb.ModelArtifact) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(artifact.files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.object.sha256}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Numerics:
    """Where and in which precision the run computes."""

    device: torch.device
    precision: str  # "bf16" | "fp16" | "fp32"

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)

    @property
    def autocast(self) -> bool:
        return self.precision != "fp32"


def resolve_numerics(precision: int, *, local_rank: int = 0) -> Numerics:
    """CUDA device of this local rank (else CPU); precision per the spec's defaults: BF16
    where the GPU supports it, FP16 on older GPUs, FP32 on CPU (where mixed precision would
    only be slower)."""
    if not torch.cuda.is_available():
        if precision not in (tj.PRECISION_UNSPECIFIED, tj.PRECISION_FP32):
            log.warning("no GPU: training in float32 instead of %s", tj.Precision.Name(precision))
        return Numerics(torch.device("cpu"), "fp32")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    bf16_ok = torch.cuda.is_bf16_supported()
    if precision == tj.PRECISION_FP32:
        return Numerics(device, "fp32")
    if precision == tj.PRECISION_FP16 or (precision == tj.PRECISION_BF16 and not bf16_ok):
        return Numerics(device, "fp16")
    if precision == tj.PRECISION_BF16 or bf16_ok:
        return Numerics(device, "bf16")
    return Numerics(device, "fp16")


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding carries neither loss nor attention
    return tokenizer


def load_causal_lm(
    model_dir: Path,
    numerics: Numerics,
    *,
    dtype: torch.dtype,
    attention: str = "sdpa",
    quant: QuantSettings | None = None,
    on_device: bool = True,
) -> PreTrainedModel:
    """``AutoModelForCausalLM`` in ``dtype`` with transformers' ``attention`` implementation;
    with ``quant``, its linear layers in 4 bits (bitsandbytes). ``on_device=False`` leaves
    placement to DeepSpeed."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attention}
    if quant is not None:
        kwargs["quantization_config"] = quantization_config(quant, numerics)
        kwargs["device_map"] = {"": numerics.device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if on_device and quant is None:
        model.to(numerics.device)
    model.config.use_cache = False  # training; generation turns it on explicitly
    return model


def quantization_config(quant: QuantSettings, numerics: Numerics) -> Any:
    from transformers import BitsAndBytesConfig

    compute = {
        tj.PRECISION_BF16: torch.bfloat16,
        tj.PRECISION_FP16: torch.float16,
        tj.PRECISION_FP32: torch.float32,
    }.get(quant.compute_precision, numerics.compute_dtype)
    if numerics.device.type == "cpu":
        compute = torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def prepare_quantized(
    model: PreTrainedModel,
    numerics: Numerics,
    *,
    gradient_checkpointing: bool,
    gradient_checkpointing_kwargs: dict[str, Any],
) -> PreTrainedModel:
    """A 4-bit base ready for adapters. peft's ``prepare_model_for_kbit_training`` also
    upcasts every 16-bit weight (norms, embeddings, the head) to FP32, which FP16 needs for
    stability but which makes a BF16 run compute its 152k-wide head in FP32 on every token:
    in BF16 only the freezing and checkpointing parts are done."""
    if numerics.precision != "bf16":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs,
        )
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )
        model.enable_input_require_grads()  # checkpointed blocks need an input that has grad
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts; 4-bit weights count as their logical size and
    ZeRO-3 partitioned parameters by their full shape."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable

"""Fused GPU kernels for training: which ones a run uses, and patching them in.

The worker's setting ``DANLU_WORKER_KERNELS`` picks one of:

``liger``    Liger kernels (Triton): RMSNorm, SwiGLU and rotary embeddings, plus the fused
             linear + cross-entropy that computes the loss chunk by chunk so the
             ``tokens x vocabulary`` FP32 logits tensor never exists (9 GiB at micro-batch 8,
             2,048 tokens and a 152k vocabulary); and LoRA's ``base + B(A(x)) * scale``
             without extra passes over every layer's output and input gradient
             (:class:`LoraLinear`: one matmul over concatenations for projections wider
             than their input, adds in matmul epilogues for the others).
``compile``  ``torch.compile`` of each decoder layer (inductor fuses the norms, activations
             and casts), the fused LoRA add and Liger's fused linear + cross-entropy.
``none``     the model as transformers builds it.
``auto``     (default) ``compile`` for BF16 runs on a CUDA GPU without DeepSpeed, for the
             model types liger-kernel knows (mainstream decoder LMs; its fused loss
             included): it beat ``liger`` in the same call by 5% (LoRA 1.5B), 20% (QLoRA
             1.5B) and 27% (full 0.5B) on an H100, for 15-50 s of compiling at the start of
             a job. Under DeepSpeed (not measured compiled) and for FP16, ``liger`` for
             those model types; ``none`` elsewhere (CPU training, unknown architectures).

``DANLU_WORKER_ATTENTION`` picks transformers' attention implementation: ``auto`` (default:
flash-attention 2 on a GPU where ``flash_attn`` is installed, else FlexAttention for 16-bit
runs on a GPU — its block mask skips the blocks between packed samples, which SDPA's dense
mask computes: +19% tokens/s for LoRA 1.5B on an H100 — and PyTorch SDPA on CPU),
``sdpa``, ``flex_attention``, ``flash_attention_2`` or ``eager``. All of them honour packed
rows (positions restarting per sample, no cross-sample attention; see ``data``). With
FlexAttention the worker builds the block mask itself from the position ids
(:func:`block_mask_for_packed_rows`); left to transformers, its packed-row detection makes
the host wait for the GPU once per micro-batch (3-4.6 ms of idle GPU each time on an H200).

None of them changes what is learned: ``tests/worker/test_kernels.py`` compares each with the
reference model (losses and gradients within tolerance). ``benchmarks/train_throughput.py``
measures them against each other and against Hugging Face's Trainer.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch

from danlu_kit.errors import FailedPrecondition
from danlu_worker.settings import ATTENTION_IMPLEMENTATIONS, KERNEL_MODES

log = logging.getLogger(__name__)


# Liger's fused linear + cross-entropy keeps each chunk's logits near the size of its input
# (chunk_mem_const=1: 64 chunks of 256 tokens for 16k tokens and a 152k vocabulary); 8 times
# that (8 chunks of 2,048 tokens, 0.6 GiB of BF16 logits) ran the loss 13% faster on an H200
# (benchmarks/fused_loss_chunks.py): fewer, larger matmuls and fewer launches.
FUSED_LOSS_CHUNK_BUDGET = 8


@dataclass(frozen=True)
class KernelPlan:
    """What a run patches into its model."""

    attention: str = "sdpa"  # transformers' attn_implementation
    liger_layers: bool = False  # Liger RMSNorm, SwiGLU, RoPE
    fused_loss: bool = False  # Liger fused linear + cross-entropy
    fused_lora: bool = False  # LoRA without extra passes over outputs: LoraLinear, lora_addmm
    compile_layers: bool = False  # torch.compile per decoder layer
    packed_block_mask: bool = False  # FlexAttention's mask for packed rows built here

    def attention_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``inputs`` for the model call, with the packed rows' block mask when the plan
        builds it (rows with an attention mask are padded, not packed: transformers' mask)."""
        if not self.packed_block_mask or "position_ids" not in inputs or "attention_mask" in inputs:
            return inputs
        return {**inputs, "attention_mask": block_mask_for_packed_rows(inputs["position_ids"])}

    def describe(self) -> str:
        parts = [f"{self.attention} attention"] + [
            name
            for on, name in (
                (self.liger_layers, "Liger RMSNorm/SwiGLU/RoPE"),
                (self.fused_loss, "fused linear+cross-entropy"),
                (self.fused_lora, "fused LoRA add"),
                (self.compile_layers, "compiled decoder layers"),
                (self.packed_block_mask, "packed-row block mask"),
            )
            if on
        ]
        return ", ".join(parts)

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """Arguments for the model call that reach the loss: Liger's fused loss with a
        larger chunk budget (see :data:`FUSED_LOSS_CHUNK_BUDGET`)."""
        return {"chunk_mem_const": FUSED_LOSS_CHUNK_BUDGET} if self.fused_loss else {}

    @property
    def fused(self) -> bool:
        return self.liger_layers or self.fused_loss or self.fused_lora or self.compile_layers


def liger_supports(model_type: str) -> bool:
    """liger-kernel is importable (it needs Triton) and patches ``model_type``."""
    if importlib.util.find_spec("liger_kernel") is None:
        return False
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception as exc:  # Triton missing or incompatible: fall back, say why
        log.warning("liger-kernel is installed but does not import: %s", exc)
        return False
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def plan_attention(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """transformers' ``attn_implementation`` for ``requested`` (``auto`` or a name)."""
    flash = importlib.util.find_spec("flash_attn") is not None
    on_gpu_16bit = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    if requested == "auto":
        if not on_gpu_16bit:
            return "sdpa"
        return "flash_attention_2" if flash else "flex_attention"
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise FailedPrecondition(
            message=f"unknown attention implementation {requested!r}; expected one of "
            f"{', '.join(ATTENTION_IMPLEMENTATIONS)}",
            reason="KERNELS_UNAVAILABLE",
        )
    if requested == "flash_attention_2" and not (flash and on_gpu_16bit):
        raise FailedPrecondition(
            message="flash_attention_2 needs the flash_attn package and a 16-bit run on a GPU",
            reason="KERNELS_UNAVAILABLE",
        )
    return requested


def plan_kernels(
    mode: str,
    *,
    model_type: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    attention: str = "auto",
    zero3: bool = False,
    deepspeed: bool = False,
    windowed_layers: bool = False,
) -> KernelPlan:
    """The plan for ``mode`` (one of :data:`KERNEL_MODES`). An explicit ``liger`` or
    ``compile`` that cannot apply fails before training (FAILED_PRECONDITION) rather than
    silently running slower; ``auto`` picks ``compile``, ``liger`` or ``none`` (see the
    module's docstring; ``deepspeed``: the run uses DeepSpeed). Under ZeRO-3 the fused loss and
    the fused LoRA are left out: they read weights outside their modules' forward (the head's,
    the adapters' and the base layer's), where ZeRO-3 has not gathered them.

    With FlexAttention the worker builds the packed rows' block mask, unless the model has
    ``windowed_layers`` (sliding-window or other non-full attention, see
    :func:`has_windowed_layers`): a ready mask would replace their windowed masks too."""
    if mode not in KERNEL_MODES:
        raise FailedPrecondition(
            message=f"unknown kernel mode {mode!r}; expected one of {', '.join(KERNEL_MODES)}",
            reason="KERNELS_UNAVAILABLE",
        )
    attn = plan_attention(attention, device, dtype)
    block_mask = attn == "flex_attention" and not windowed_layers
    on_gpu = device.type == "cuda"
    liger = on_gpu and liger_supports(model_type)
    fused_loss = liger and not zero3
    fused_lora = not zero3
    if mode == "auto" and liger and dtype == torch.bfloat16 and not deepspeed:
        mode = "compile"  # measured fastest there (see the module's docstring)
    if mode == "auto":
        return KernelPlan(
            attention=attn,
            packed_block_mask=block_mask,
            liger_layers=liger,
            fused_loss=fused_loss,
            fused_lora=on_gpu and fused_lora,
        )
    if mode == "none":
        return KernelPlan(attention=attn, packed_block_mask=block_mask)
    if mode == "liger":
        if not liger:
            raise FailedPrecondition(
                message=f"Liger kernels need a CUDA GPU, liger-kernel and a supported model "
                f"type (this run: {device.type}, model type {model_type!r})",
                reason="KERNELS_UNAVAILABLE",
            )
        return KernelPlan(
            attention=attn,
            packed_block_mask=block_mask,
            liger_layers=True,
            fused_loss=fused_loss,
            fused_lora=fused_lora,
        )
    return KernelPlan(  # compile
        attention=attn,
        packed_block_mask=block_mask,
        fused_loss=fused_loss,
        fused_lora=fused_lora,
        compile_layers=True,
    )


def has_windowed_layers(config: Any) -> bool:
    """The model has attention layers other than full causal ones (sliding-window, chunked,
    linear), whose masks transformers must build. Multimodal configs (Gemma 3, Llama 4)
    keep them in their text config."""
    return any(_windowed(c) for c in (config, config.get_text_config(decoder=True)))


def _windowed(config: Any) -> bool:
    """Per ``layer_types`` where the config lists them, else by a ``sliding_window`` it uses."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return any(kind != "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is not None and getattr(
        config, "use_sliding_window", True
    )


def block_mask_for_packed_rows(position_ids: torch.Tensor) -> Any:
    """FlexAttention's ``BlockMask`` for packed rows: causal attention within each sample.

    A sample starts where its position is 0 (``data.collate`` restarts positions per sample,
    padding included), so a running count of zeros numbers the samples. Built on the
    device from tensors already there: nothing waits for the GPU (transformers' own
    detection tests ``.all()`` in Python, which does)."""
    samples = (position_ids == 0).cumsum(-1)

    def same_sample_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (q >= kv) & (samples[b, q] == samples[b, kv])

    rows, length = position_ids.shape
    return _compiled_create_block_mask()(
        same_sample_causal, B=rows, H=None, Q_LEN=length, KV_LEN=length, device=position_ids.device
    )


@functools.cache
def _compiled_create_block_mask() -> Any:
    """``create_block_mask`` compiled, as transformers builds its masks (its ``_compile=True``
    is this, deprecated): the mask is evaluated block by block, never as a
    rows x length x length tensor."""
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


def patch_model(model: Any, plan: KernelPlan) -> None:
    """Swap Liger's kernels into a loaded transformers model (before adapters are added:
    peft then wraps the patched linear layers as usual)."""
    if not (plan.liger_layers or plan.fused_loss):
        return
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    layers = plan.liger_layers
    _apply_liger_kernel_to_instance(
        model,
        rope=layers,
        rms_norm=layers,
        swiglu=layers,
        cross_entropy=False,
        fused_linear_cross_entropy=plan.fused_loss,
    )


def finish_model(model: torch.nn.Module, plan: KernelPlan) -> None:
    """What applies once the adapters are in: the fused LoRA add, then compiling each decoder
    layer in place (regional compilation: one graph reused by every layer, seconds to compile
    instead of minutes for the whole model). Evaluation runs eager (see :func:`eager`):
    generation's growing key/value cache would recompile at every length."""
    if plan.fused_lora:
        fuse_lora(model)
    if plan.compile_layers:
        for layer in decoder_layers(model):
            layer.compile()


def fuse_lora(model: torch.nn.Module) -> int:
    """Give every peft LoRA linear layer the fused forward (:class:`LoraLinear` or
    :func:`lora_addmm`, see :func:`_fused_lora_forward`); returns how many."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), torch.nn.Linear):
            module.forward = MethodType(_fused_lora_forward, module)
            count += 1
    return count


def _fused_lora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """peft's LoRA forward for the plain case (one active adapter, not merged, no DoRA or
    other variant, no per-request adapters); anything else goes to peft's own forward.

    A frozen ``nn.Linear`` base (bias frozen too) with no active dropout, all in one dtype
    (the BF16 runs), takes :class:`LoraLinear`, which also fuses the backward. Others (4-bit
    bases, dropout, FP32 adapters under autocast) take :func:`lora_addmm`."""
    active = self.active_adapters
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or len(active) != 1
        or active[0] not in self.lora_A
        or active[0] in self.lora_variant
        or self.lora_B[active[0]].bias is not None  # peft's lora_bias
    ):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    scale = self.scaling[name]
    base = self.base_layer
    dropout = self.lora_dropout[name]
    if (
        type(base) is torch.nn.Linear
        and not base.weight.requires_grad
        and (base.bias is None or not base.bias.requires_grad)
        and not (self.training and getattr(dropout, "p", 0.0) > 0)
        and x.dtype == base.weight.dtype == a.dtype == b.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        return LoraLinear.apply(x, base.weight, base.bias, a, b, scale)
    return lora_addmm(self, x, name)


def lora_addmm(self: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    """Adapter ``name`` of a peft LoRA layer as ``addmm(base(x), A(x), B^T, alpha=scale)``:
    the scale-and-add in the forward matmul's epilogue; autograd does the backward."""
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    scale = self.scaling[name]
    result = self.base_layer(x)
    hidden = torch.nn.functional.linear(self.lora_dropout[name](x.to(a.dtype)), a)
    if result.dtype != b.dtype or torch.compiler.is_compiling():
        # FP32 adapters on an FP16 base under autocast; or a compiled graph, where inductor
        # fuses this add (an ``addmm`` there adds a copy of ``result``, see LoraLinear)
        return result + (torch.nn.functional.linear(hidden, b) * scale).to(result.dtype)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        hidden.reshape(-1, hidden.shape[-1]),
        b.t(),
        alpha=scale,
    )
    return out.view(result.shape)


class LoraLinear(torch.autograd.Function):
    """``y = x W^T + bias + scale * (x A^T) B^T`` with a frozen ``W``, forward and backward
    each with one pass over the output.

    Through autograd the adapter's output ``scale * h B^T`` (``h = x A^T``) and, backwards,
    ``dy W`` and ``dh A`` would each be full-size tensors summed by separate kernels. Here:

    - A projection wider than its input plus the rank (``gate_proj``, ``up_proj``) runs as
      one matmul over the concatenations ``[x | scale * h]`` and ``[W | B]``: the adapter
      rides along as ``r`` extra input columns, so its full-width output never exists, and
      backwards one matmul ``dy [W | B]`` gives ``dy W`` and ``dy B`` with one read of
      ``dy``. Concatenating costs copies of the input and the weight, each smaller than
      the output they save.
    - Others (``q_proj``, ``down_proj``...) add the adapter in the matmul's epilogue
      (``addmm``), forward and backward.

    Inside a compiled graph the adds are plain adds instead, which inductor fuses with
    their neighbours (an in-place write there becomes a copy).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        hidden = x2 @ a.t()  # (tokens, r)
        # The concatenations are not saved: the backward needs x and h apart.
        ctx.save_for_backward(x2, weight, a, b, hidden)
        ctx.scale = scale
        ctx.input_shape = x.shape
        ctx.wide = lora_as_one_matmul(weight, a, tokens=x2.shape[0])
        compiling = torch.compiler.is_compiling()
        if ctx.wide:
            inputs = torch.cat([x2, hidden * scale], dim=1)  # (tokens, in + r)
            weights = torch.cat([weight, b], dim=1)
            if compiling:
                return torch.nn.functional.linear(inputs.view(*x.shape[:-1], -1), weights, bias)
            return _linear_into_new(inputs, weights, bias, x.shape)
        if compiling:
            return (
                torch.nn.functional.linear(x, weight, bias)
                + (hidden @ b.t()).view(*x.shape[:-1], -1) * scale
            )
        out = _linear_into_new(x2, weight, bias, x.shape)
        out.view(-1, weight.shape[0]).addmm_(hidden, b.t(), alpha=scale)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight, a, b, hidden = ctx.saved_tensors
        dy = grad_out.reshape(-1, grad_out.shape[-1])
        needs_x, needs_a, needs_b = (ctx.needs_input_grad[i] for i in (0, 3, 4))
        base_grad = d_hidden = None
        if needs_x and ctx.wide:
            features = weight.shape[1]
            both = dy @ torch.cat([weight, b], dim=1)  # [dy W | dy B], one read of dy
            base_grad, d_hidden = both[:, :features], both[:, features:] * ctx.scale
        elif needs_x or needs_a:
            d_hidden = (dy @ b) * ctx.scale  # (tokens, r)
        grad_x = grad_a = grad_b = None
        if needs_x:
            if torch.compiler.is_compiling():  # functional there, as in the forward
                grad_x = (dy @ weight if base_grad is None else base_grad) + d_hidden @ a
            elif base_grad is None:
                grad_x = (dy @ weight).addmm_(d_hidden, a)
            else:
                grad_x = torch.addmm(base_grad, d_hidden, a)
            grad_x = grad_x.view(ctx.input_shape)
        if needs_a:
            grad_a = d_hidden.t() @ x2
        if needs_b:
            grad_b = (dy.t() @ hidden) * ctx.scale
        return grad_x, None, None, grad_a, grad_b, None


def _linear_into_new(
    x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, input_shape: torch.Size
) -> torch.Tensor:
    """``x2 W^T + bias`` written into a fresh tensor of the layer's output shape. Written
    through a 2-D view and the fresh tensor returned: a Function's output that is a view (as
    ``linear``'s 3-D result with a bias is) could never be modified in place later."""
    out = x2.new_empty(*input_shape[:-1], weight.shape[0])
    out2 = out.view(-1, weight.shape[0])
    if bias is None:
        torch.mm(x2, weight.t(), out=out2)
    else:
        torch.addmm(bias, x2, weight.t(), out=out2)
    return out


def lora_as_one_matmul(weight: torch.Tensor, a: torch.Tensor, *, tokens: int) -> bool:
    """:class:`LoraLinear` runs this projection as one matmul over concatenations: the
    adapter's output it no longer writes and reads (``tokens x out``) is larger than the
    copies it makes instead, of the input (``tokens x (in + r)``) and of the weight
    (``out x (in + r)``); and ``in + r`` keeps the matmul's rows 16-byte aligned. Training's
    thousands of tokens per call qualify, generation's one token per step does not."""
    out_features, in_features = weight.shape
    width = in_features + a.shape[0]
    return out_features > width and tokens > width and width % 8 == 0


def eager() -> Any:
    """Run compiled modules eagerly inside the block (evaluation answers, validation)."""
    return torch.compiler.set_stance("force_eager")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a (peft-wrapped) causal LM: the largest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise FailedPrecondition(
            message="the model has no decoder layer list to compile", reason="KERNELS_UNAVAILABLE"
        )
    return list(max(lists, key=len))

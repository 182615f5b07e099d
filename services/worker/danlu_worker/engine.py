"""The optimizer step machinery both loops share: AdamW + schedule, and one small interface
over plain PyTorch (optionally DDP) and DeepSpeed ZeRO.

A loop calls, per micro-batch, :meth:`Engine.forward` (returns the loss, already normalised
by the number of loss tokens of the whole optimizer step, so the accumulated gradient is the
mean over every loss token of the step, whatever the micro-batch sizes) and
:meth:`Engine.backward`; then once per step :meth:`Engine.optimizer_step` (clip, update,
schedule, zero the gradients; returns the gradient norm before clipping).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from danlu_worker.data import Batch, to_device
from danlu_worker.kernels import KernelPlan
from danlu_worker.modeling import Numerics
from danlu_worker.settings import DistributedEnv, ensure_rendezvous_env
from danlu_worker.spec import RunConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- optimizer, schedule


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups as Hugging Face's Trainer does: no decay on biases
    and normalisation weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if weight_decay and (name.endswith(".bias") or "norm" in name.lower() or p.ndim < 2):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    groups: list[dict[str, Any]], cfg: RunConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """AdamW; ``fused``: the CUDA kernel that updates every tensor in one launch (the
    default for-each implementation launches several per parameter group)."""
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=cfg.adam_betas,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


class MasterWeights:
    """FP32 master copies of a model's 16-bit trainable parameters.

    The model computes in BF16 end to end (no autocast, no per-call weight casts) while the
    optimizer updates FP32 copies, so updates far smaller than BF16's resolution still add
    up (pure-BF16 AdamW rounds a 2e-5 step on a weight of 0.02 away). After backward the
    16-bit gradients move to the masters; after the update the masters are copied back.
    """

    FILE = "master_weights.pt"

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.masters = [nn.Parameter(p.detach().float().clone()) for p in params]
        self._by_id = {id(p): m for p, m in zip(params, self.masters, strict=True)}

    @staticmethod
    def needed(params: list[nn.Parameter]) -> bool:
        return any(p.dtype in (torch.bfloat16, torch.float16) for p in params)

    def groups(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``groups`` with each parameter replaced by its master copy."""
        return [{**g, "params": [self._by_id[id(p)] for p in g["params"]]} for g in groups]

    @torch.no_grad()
    def gradients_to_masters(self) -> None:
        """One multi-tensor cast-and-copy for all gradients (one launch, not one per
        parameter: a LoRA 1.5B run has 392 adapter matrices)."""
        sources, targets = [], []
        for p, m in zip(self.params, self.masters, strict=True):
            if p.grad is None:
                m.grad = None
                continue
            if m.grad is None:
                m.grad = torch.empty_like(m)
            sources.append(p.grad)
            targets.append(m.grad)
            p.grad = None
        if sources:
            torch._foreach_copy_(targets, sources)

    @torch.no_grad()
    def masters_to_model(self) -> None:
        torch._foreach_copy_(self.params, self.masters)

    def save(self, directory: Path) -> None:
        torch.save([m.detach() for m in self.masters], directory / self.FILE)

    @torch.no_grad()
    def load(self, directory: Path) -> None:
        path = directory / self.FILE
        if not path.is_file():  # a checkpoint from FP32 training: start from the weights
            for p, m in zip(self.params, self.masters, strict=True):
                m.copy_(p.float())
            return
        saved = torch.load(path, map_location=self.masters[0].device, weights_only=True)
        torch._foreach_copy_(self.masters, saved)
        self.masters_to_model()


def scheduler_factory(
    cfg: RunConfig, total_steps: int
) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]:
    """transformers' cosine / linear / constant schedule with linear warm-up."""
    from transformers import get_scheduler

    warmup = round(cfg.warmup_ratio * total_steps)

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return get_scheduler(
            cfg.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
        )

    return make


# --------------------------------------------------------------------------- distributed helpers


def init_distributed(dist_env: DistributedEnv, numerics: Numerics, *, deepspeed: bool) -> None:
    """Join the torchrun world (NCCL on GPUs, gloo on CPU); DeepSpeed always needs a process
    group, so a single DeepSpeed process forms a world of one."""
    if dist.is_initialized() or not (deepspeed or dist_env.is_distributed):
        return
    ensure_rendezvous_env()
    backend = "nccl" if numerics.device.type == "cuda" else "gloo"
    if deepspeed:
        import deepspeed as ds

        if numerics.device.type == "cpu" and dist_env.world_size == 1:
            # DeepSpeed's CPU shared-memory collectives only help several processes on one
            # host; skip compiling them (a minute of g++) for a world of one.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        ds.init_distributed(dist_backend=backend)
    else:
        dist.init_process_group(backend=backend)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. rank 0 saw a cancel)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# --------------------------------------------------------------------------- engines


class Engine:
    """What a loop needs from the optimizer machinery."""

    module: nn.Module  # the (peft / full) model, unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    kernels: KernelPlan  # what the model call adds: the packed rows' block mask, loss options

    def forward(self, batch: Batch, num_items: torch.Tensor) -> torch.Tensor:
        """Loss of the micro-batch: its summed token losses over ``num_items`` (the step's loss
        tokens on this rank's share of the world)."""
        raise NotImplementedError

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        raise NotImplementedError

    def optimizer_step(self) -> torch.Tensor | float:
        """Apply the update; returns the gradient norm before clipping (a tensor may still
        be in flight on the device: reading it is the caller's choice of when to wait)."""
        raise NotImplementedError

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_state(self, directory: Path, *, step: int) -> None:
        raise NotImplementedError

    def load_state(self, directory: Path, *, step: int) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def gathered_parameters(self) -> Iterator[None]:
        """Full parameters visible (ZeRO-3 gathers them) while saving weights."""
        yield


def _loss(
    model: nn.Module,
    batch: Batch,
    num_items: torch.Tensor,
    device: torch.device,
    kernels: KernelPlan,
):
    labels = to_device(batch.shift_labels, device)
    # ``labels`` only switches the model's loss on; ``shift_labels`` are the targets already
    # shifted per packed sample (see data.py). ``use_cache=False`` keeps the packed-sequence
    # detection of transformers' masking on where the plan leaves the mask to transformers.
    out = model(
        **kernels.attention_inputs(batch.model_inputs(device)),
        labels=labels,
        shift_labels=labels,
        num_items_in_batch=num_items,
        use_cache=False,
        **kernels.loss_kwargs,
    )
    return out.loss


class TorchEngine(Engine):
    """Plain PyTorch, DDP over several ranks. A model loaded in BF16 trains with FP32
    :class:`MasterWeights` and no autocast; FP32 weights under BF16/FP16 use autocast (with
    loss scaling for FP16)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        numerics: Numerics,
        *,
        total_steps: int,
        dist_env: DistributedEnv,
        kernels: KernelPlan = KernelPlan(),
    ) -> None:
        self.module = model
        self.kernels = kernels
        self.numerics = numerics
        self.max_grad_norm = cfg.max_grad_norm
        groups = parameter_groups(model, cfg.weight_decay)
        trainable = [p for g in groups for p in g["params"]]
        self.masters = MasterWeights(trainable) if MasterWeights.needed(trainable) else None
        if self.masters is not None:
            groups = self.masters.groups(groups)
        self.autocast = numerics.autocast and self.masters is None
        self.optimizer = build_optimizer(groups, cfg, fused=numerics.device.type == "cuda")
        self.scheduler = scheduler_factory(cfg, total_steps)(self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda", enabled=numerics.precision == "fp16")
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._model: nn.Module = model
        if dist_env.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [numerics.device.index] if numerics.device.type == "cuda" else None
            self._model = DistributedDataParallel(model, device_ids=device_ids)

    def forward(self, batch: Batch, num_items: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.numerics.device.type,
            dtype=self.numerics.compute_dtype,
            enabled=self.autocast,
        ):
            return _loss(self._model, batch, num_items, self.numerics.device, self.kernels)

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        sync = contextlib.nullcontext()
        if not boundary and hasattr(self._model, "no_sync"):
            sync = self._model.no_sync()  # DDP: all-reduce once per optimizer step
        with sync:
            self.scaler.scale(loss).backward()

    def optimizer_step(self) -> torch.Tensor | float:
        if self.masters is not None:
            self.masters.gradients_to_masters()
        self.scaler.unscale_(self.optimizer)
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self._params, limit)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.masters is not None:
            self.masters.masters_to_model()
        return norm

    def save_state(self, directory: Path, *, step: int) -> None:
        if self.masters is not None:
            self.masters.save(directory)
        torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), directory / "scheduler.pt")
        if self.scaler.is_enabled():
            torch.save(self.scaler.state_dict(), directory / "scaler.pt")

    def load_state(self, directory: Path, *, step: int) -> None:
        load = {"map_location": self.numerics.device, "weights_only": True}
        if self.masters is not None:
            self.masters.load(directory)
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", **load))
        self.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", **load))
        if self.scaler.is_enabled() and (directory / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(directory / "scaler.pt", **load))


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-1/2/3 (+offload) with a config generated from the spec."""

    STATE_DIR = "deepspeed"

    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        numerics: Numerics,
        *,
        total_steps: int,
        ds_config: dict[str, Any],
        exclude_frozen: bool,
        kernels: KernelPlan = KernelPlan(),
    ) -> None:
        import deepspeed

        self.kernels = kernels

        groups = parameter_groups(model, cfg.weight_decay)
        # With offload the config names DeepSpeed's own (CPU) AdamW; otherwise ours.
        optimizer = None if "optimizer" in ds_config else build_optimizer(groups, cfg)
        engine, ds_optimizer, _, scheduler = deepspeed.initialize(
            model=model,
            model_parameters=groups,
            optimizer=optimizer,
            lr_scheduler=scheduler_factory(cfg, total_steps),
            config=ds_config,
        )
        self.engine = engine
        self.module = engine.module
        self.optimizer = ds_optimizer
        self.scheduler = scheduler
        self.numerics = numerics
        self.zero_stage = int(ds_config["zero_optimization"]["stage"])
        self.exclude_frozen = exclude_frozen

    def forward(self, batch: Batch, num_items: torch.Tensor) -> torch.Tensor:
        return _loss(self.engine, batch, num_items, self.engine.device, self.kernels)

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        # The loss is already normalised over the whole step: no extra 1/GAS scaling.
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # applies the update only at the boundary

    def optimizer_step(self) -> torch.Tensor | float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    @property
    def learning_rate(self) -> float:
        return float(self.engine.get_lr()[0])

    def save_state(self, directory: Path, *, step: int) -> None:
        # Every rank writes its shards; ``exclude_frozen`` keeps a LoRA checkpoint small.
        self.engine.save_checkpoint(
            str(directory / self.STATE_DIR),
            tag=f"step-{step}",
            exclude_frozen_parameters=self.exclude_frozen,
        )

    def load_state(self, directory: Path, *, step: int) -> None:
        path, _ = self.engine.load_checkpoint(
            str(directory / self.STATE_DIR),
            tag=f"step-{step}",
            load_module_strict=not self.exclude_frozen,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state for step {step} under {directory}")

    @contextlib.contextmanager
    def gathered_parameters(self) -> Iterator[None]:
        if self.zero_stage != 3:
            yield
            return
        import deepspeed

        # LoRA saves only the adapter: gather just the trainable parameters.
        params = [p for p in self.module.parameters() if p.requires_grad or not self.exclude_frozen]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield

    def consolidated_state_dict(self) -> dict[str, torch.Tensor] | None:
        """ZeRO-3: the full 16-bit weights on rank 0 (None elsewhere); others: the module's."""
        if self.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return self.module.state_dict()


def hf_deepspeed_config(ds_config: dict[str, Any]) -> Any:
    """ZeRO-3 must be known to transformers *before* ``from_pretrained`` so the weights load
    straight into partitions; keep the returned object alive for the whole run."""
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)

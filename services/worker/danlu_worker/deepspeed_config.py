"""The DeepSpeed JSON config, generated from the spec (users never write one).

Batch sizes, gradient clipping and precision come from ``optimization``; the ZeRO stage and
offload from ``deepspeed``. The optimizer is the worker's own ``torch.optim.AdamW`` (passed to
``deepspeed.initialize``) except with offload, where DeepSpeed's ``AdamW`` (its CPU Adam, the
fast one for optimizer states in host memory) is configured here with the spec's
hyper-parameters. ZeRO-3 gathers 16-bit weights when saving, so a checkpoint always has a
loadable model next to the sharded state.
"""

from __future__ import annotations

from typing import Any

from danlu_worker.spec import RunConfig

# Never print DeepSpeed's own progress lines: the worker reports metrics itself.
_NEVER = 2**62


def deepspeed_config(cfg: RunConfig, *, world_size: int, precision: str) -> dict[str, Any]:
    """The config for ``cfg.deepspeed`` (which must be set) on ``world_size`` processes."""
    assert cfg.deepspeed is not None
    stage, offload = cfg.deepspeed.stage, cfg.deepspeed.offload
    zero: dict[str, Any] = {
        "stage": stage,
        "contiguous_gradients": True,
        "overlap_comm": world_size > 1,
        "reduce_bucket_size": 5e8,
        "allgather_bucket_size": 5e8,
    }
    if stage == 3:
        zero.update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                "stage3_prefetch_bucket_size": 5e8,
                "stage3_param_persistence_threshold": 1e6,
                "stage3_max_live_parameters": 1e9,
                "stage3_max_reuse_distance": 1e9,
            }
        )
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {
            "enabled": precision == "fp16",
            "loss_scale": 0,  # dynamic
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        # The worker's AdamW is not on DeepSpeed's tested list, but ZeRO shards any torch
        # optimizer correctly.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
    if offload:
        config["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": cfg.learning_rate,
                "betas": list(cfg.adam_betas),
                "eps": 1e-8,
                "weight_decay": cfg.weight_decay,
            },
        }
    return config

"""Full fine-tuning (SFT or continued pre-training): every weight is trained.

Without DeepSpeed, in BF16 the model computes in BF16 and the engine updates FP32 master
copies of every weight (``engine.MasterWeights``: mixed precision without autocast's casts);
in FP16 the weights stay FP32 under autocast; on CPU everything is FP32. With DeepSpeed the
module is 16-bit and ZeRO keeps the FP32 master weights and optimizer states sharded (ZeRO-3
also shards the weights, loaded straight into partitions). Fused kernels
(``danlu_worker.kernels``) are patched in after loading. The loop:

    setup -> DeepSpeed config -> model (+ kernels) -> engine -> resume
    -> for each optimizer step: micro-batches (forward, backward) -> update -> metrics
       -> every N steps: evaluation answers, validation loss, checkpoint

Checkpoints hold the model as ``save_pretrained`` writes it (ZeRO-3: the gathered 16-bit
weights), so every checkpoint converts to a Hugging Face model without DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from danlu_worker.checkpoints import load_rng_state
from danlu_worker.deepspeed_config import deepspeed_config
from danlu_worker.engine import (
    DeepSpeedEngine,
    hf_deepspeed_config,
)
from danlu_worker.kernels import finish_model, patch_model
from danlu_worker.loops._shared import (
    RunContext,
    batch_stream,
    kernel_plan,
    make_engine,
    resume_position,
    setup_run,
    train_steps,
)
from danlu_worker.modeling import count_parameters, load_causal_lm


def train(run: RunContext) -> None:
    cfg = run.cfg
    assert cfg.method == "full", "full_sft trains every weight"
    is_main = run.dist.is_main

    # 1. Seeds, device, process group, tokenizer, chat template, tokenised and packed data.
    setup = setup_run(run)
    numerics = setup.numerics

    # 2. DeepSpeed's config is generated from the spec; ZeRO-3 must be announced to
    #    transformers before the weights load so they load straight into partitions.
    ds_config = None
    if cfg.deepspeed is not None:
        ds_config = deepspeed_config(
            cfg, world_size=run.dist.world_size, precision=numerics.precision
        )
    zero3 = ds_config is not None and ds_config["zero_optimization"]["stage"] == 3
    keep_alive = hf_deepspeed_config(ds_config) if zero3 else None  # noqa: F841

    # 3. The model: 16-bit under DeepSpeed and in BF16 (FP32 masters live in the optimizer
    #    or the engine), FP32 under FP16 autocast and on CPU. Resuming without DeepSpeed
    #    loads the checkpoint's weights instead of the base's.
    resume_weights = run.resume_dir if (run.resume_dir and ds_config is None) else None
    sixteen_bit = ds_config is not None or numerics.precision == "bf16"
    dtype = numerics.compute_dtype if sixteen_bit else torch.float32
    kernels = kernel_plan(run, setup, dtype=dtype, deepspeed=ds_config is not None, zero3=zero3)
    model = load_causal_lm(
        resume_weights or run.model_dir,
        numerics,
        dtype=dtype,
        attention=kernels.attention,
        on_device=ds_config is None,
    )
    patch_model(model, kernels)
    finish_model(model, kernels)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    total_params, _ = count_parameters(model)
    run.log(
        f"full fine-tuning of {total_params:,} parameters; {numerics.precision} on "
        f"{numerics.device}"
        + (f"; DeepSpeed ZeRO-{cfg.deepspeed.stage}" if cfg.deepspeed else "")
        + f"; {kernels.describe()}"
    )

    # 4. AdamW, the LR schedule and the engine that steps them (plain PyTorch or DeepSpeed).
    engine = make_engine(run, setup, model, ds_config, exclude_frozen=False, kernels=kernels)

    # 5. Resume: optimizer, schedule (and, under DeepSpeed, weights), data position, RNG.
    step, position = resume_position(run, setup)
    if run.resume_dir is not None:
        engine.load_state(run.resume_dir, step=step)
        load_rng_state(run.resume_dir, rank=run.dist.rank, world_size=run.dist.world_size)
        run.log(f"resumed from step {step} (epoch {position.epoch}, batch {position.index})")
    stream = batch_stream(run, setup, position)

    def write_model(directory: Path) -> None:
        # ZeRO-3 gathers the full 16-bit weights onto rank 0 (a collective: every rank calls).
        state = engine.consolidated_state_dict() if isinstance(engine, DeepSpeedEngine) else None
        if is_main:
            engine.module.save_pretrained(
                directory, state_dict=state, safe_serialization=True, max_shard_size="5GB"
            )

    # 6. Train.
    train_steps(
        run,
        setup,
        engine,
        stream,
        step=step,
        total_params=total_params,
        lora=False,
        zero3=zero3,
        weights_format="full_model",
        write_weights=write_model,
    )

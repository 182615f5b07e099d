"""LoRA and QLoRA training (SFT or continued pre-training) with peft.

The base model stays frozen: in 16 bits on a GPU (FP32 on CPU), or in 4 bits for QLoRA
(bitsandbytes NF4/FP4, optional double quantisation). peft adds the adapters. In BF16 the
whole model computes in BF16, adapters included, and the engine keeps FP32 master copies of
the adapters (``engine.MasterWeights``): no autocast, no FP32 LoRA matmuls, no FP32 norms or
head for QLoRA, yet updates accumulate in FP32. In FP16 the adapters stay FP32 under
autocast; on CPU everything is FP32. Fused kernels (``danlu_worker.kernels``) are patched
into the base before the adapters are added and compiled after. The loop:

    setup -> DeepSpeed config -> base model (+ kernels) -> adapters -> engine -> resume
    -> for each optimizer step: micro-batches (forward, backward) -> update -> metrics
       -> every N steps: evaluation answers, validation loss, checkpoint

A cancel is honoured at every micro-batch boundary (never during a checkpoint publish).
"""

from __future__ import annotations

from pathlib import Path

import torch

from danlu_worker.checkpoints import load_rng_state
from danlu_worker.deepspeed_config import deepspeed_config
from danlu_worker.engine import (
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
from danlu_worker.modeling import count_parameters, load_causal_lm, prepare_quantized

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def train(run: RunContext) -> None:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    cfg = run.cfg
    assert cfg.lora is not None, "peft_sft trains LoRA or QLoRA"
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

    # 3. The frozen base model.
    kernels = kernel_plan(
        run, setup, dtype=numerics.compute_dtype, deepspeed=ds_config is not None, zero3=zero3
    )
    model = load_causal_lm(
        run.model_dir,
        numerics,
        dtype=numerics.compute_dtype,
        attention=kernels.attention,
        quant=cfg.quant,
        on_device=ds_config is None,
    )
    patch_model(model, kernels)
    checkpointing = {"use_reentrant": False}
    if cfg.quant is not None:
        model = prepare_quantized(
            model,
            numerics,
            gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)

    # 4. The adapters.
    lora = cfg.lora
    targets = lora.target_modules
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules="all-linear" if targets == ("all-linear",) else list(targets),
            task_type="CAUSAL_LM",
        ),
    )
    if numerics.precision == "bf16":
        for p in model.parameters():
            if p.requires_grad:  # peft made them FP32; the engine keeps FP32 masters
                p.data = p.data.to(torch.bfloat16)
    finish_model(model, kernels)
    total_params, trainable_params = count_parameters(model)
    run.log(
        f"{cfg.method}: r={lora.r} alpha={lora.alpha} dropout={lora.dropout} "
        f"targets={','.join(targets)}; {trainable_params:,} of {total_params:,} parameters "
        f"trainable; {numerics.precision} on {numerics.device}"
        + (f"; DeepSpeed ZeRO-{cfg.deepspeed.stage}" if cfg.deepspeed else "")
        + f"; {kernels.describe()}"
    )

    # 5. AdamW, the LR schedule and the engine that steps them (plain PyTorch or DeepSpeed).
    engine = make_engine(run, setup, model, ds_config, exclude_frozen=True, kernels=kernels)

    # 6. Resume: adapter, optimizer, schedule, data position and random streams.
    step, position = resume_position(run, setup)
    if run.resume_dir is not None:
        if ds_config is None:
            set_peft_model_state_dict(model, load_file(run.resume_dir / ADAPTER_WEIGHTS))
        engine.load_state(run.resume_dir, step=step)
        load_rng_state(run.resume_dir, rank=run.dist.rank, world_size=run.dist.world_size)
        run.log(f"resumed from step {step} (epoch {position.epoch}, batch {position.index})")
    stream = batch_stream(run, setup, position)

    def write_adapter(directory: Path) -> None:
        with engine.gathered_parameters():  # ZeRO-3: the full adapter tensors
            if is_main:
                engine.module.save_pretrained(directory, safe_serialization=True)
                (directory / "README.md").unlink(missing_ok=True)  # peft's model card stub

    # 7. Train.
    train_steps(
        run,
        setup,
        engine,
        stream,
        step=step,
        total_params=total_params,
        lora=True,
        zero3=zero3,
        weights_format="peft_adapter",
        write_weights=write_adapter,
    )

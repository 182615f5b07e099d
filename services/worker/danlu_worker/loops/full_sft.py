"""Full fine-tuning (SFT or continued pre-training): every weight is trained.

Without DeepSpeed the weights stay in FP32 and the matmuls run under BF16/FP16 autocast (true
mixed precision; memory-hungry, so large models use a ZeRO stage). With DeepSpeed the module
is 16-bit and ZeRO keeps the FP32 master weights and optimizer states sharded (ZeRO-3 also
shards the weights, loaded straight into partitions). The loop:

    setup -> DeepSpeed config -> model -> engine -> resume
    -> for each optimizer step: micro-batches (forward, backward) -> update -> metrics
       -> every N steps: evaluation answers, validation loss, checkpoint

Checkpoints hold the model as ``save_pretrained`` writes it (ZeRO-3: the gathered 16-bit
weights), so every checkpoint converts to a Hugging Face model without DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from danlu_worker.checkpoints import CheckpointRecord, load_rng_state
from danlu_worker.deepspeed_config import deepspeed_config
from danlu_worker.engine import (
    DeepSpeedEngine,
    Engine,
    TorchEngine,
    all_reduce_mean,
    hf_deepspeed_config,
)
from danlu_worker.loops._shared import (
    CheckpointPublisher,
    RunContext,
    batch_stream,
    evaluate,
    raise_if_cancelled,
    resume_position,
    setup_run,
    step_batches,
)
from danlu_worker.metrics import ThroughputMeter
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

    # 3. The model: FP32 master weights without DeepSpeed (autocast does the 16-bit math),
    #    16-bit under DeepSpeed (which keeps FP32 masters in the optimizer). Resuming without
    #    DeepSpeed loads the checkpoint's weights instead of the base's.
    resume_weights = run.resume_dir if (run.resume_dir and ds_config is None) else None
    model = load_causal_lm(
        resume_weights or run.model_dir,
        numerics,
        dtype=numerics.compute_dtype if ds_config is not None else torch.float32,
        on_device=ds_config is None,
    )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    total_params, _ = count_parameters(model)
    run.log(
        f"full fine-tuning of {total_params:,} parameters; {numerics.precision} on "
        f"{numerics.device}" + (f"; DeepSpeed ZeRO-{cfg.deepspeed.stage}" if cfg.deepspeed else "")
    )

    # 4. AdamW, the LR schedule and the engine that steps them (plain PyTorch or DeepSpeed).
    engine: Engine
    if ds_config is not None:
        engine = DeepSpeedEngine(
            model,
            cfg,
            numerics,
            total_steps=setup.total_steps,
            ds_config=ds_config,
            exclude_frozen=False,
        )
    else:
        engine = TorchEngine(model, cfg, numerics, total_steps=setup.total_steps, dist_env=run.dist)

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

    publisher = CheckpointPublisher(run, setup, format="full_model")
    meter = ThroughputMeter(
        total_steps=setup.total_steps,
        parameters=total_params,
        lora=False,
        device=numerics.device,
        world_size=run.dist.world_size,
    )
    metrics_every = max(1, setup.total_steps // 1000)
    losses: list[float] = []  # since the previous checkpoint
    engine.module.train()

    # 6. Train.
    while step < setup.total_steps:
        raise_if_cancelled(run, setup)
        batches, num_items, tokens = step_batches(run, setup, stream)
        learning_rate = engine.learning_rate  # the rate this step uses
        step_loss = torch.zeros((), device=numerics.device)
        for i, batch in enumerate(batches):
            if i:
                raise_if_cancelled(run, setup)
            loss = engine.forward(batch, num_items)
            engine.backward(loss, boundary=i == len(batches) - 1)
            step_loss += loss.detach().float()
        grad_norm = engine.optimizer_step()
        step += 1
        loss_value = float(all_reduce_mean(step_loss))
        losses.append(loss_value)
        metrics = meter.step_done(
            step=step,
            epoch=stream.epochs_done,
            loss=loss_value,
            learning_rate=learning_rate,
            grad_norm=grad_norm,
            tokens=tokens,
        )

        last = step == setup.total_steps
        checkpoint_due = step % cfg.checkpoint_every_n_steps == 0 or last
        answers_due = last or (
            step % cfg.eval_every_n_steps == 0 if cfg.eval_every_n_steps else checkpoint_due
        )
        answers, validation = [], None
        if checkpoint_due or answers_due:
            raise_if_cancelled(run, setup)  # a cancelled run commits nothing more
            answers, validation = evaluate(
                run,
                setup,
                engine.module,
                step=step,
                answers_due=answers_due,
                validation_due=checkpoint_due,
                zero3=zero3,
            )
            if validation is not None:
                metrics.validation_loss = validation
        if is_main and (step % metrics_every == 0 or checkpoint_due or last):
            run.reporter.metrics(metrics)
        if checkpoint_due:
            record = CheckpointRecord(
                step=step,
                epoch=stream.epochs_done,
                train_loss=sum(losses) / len(losses),
                validation_loss=validation,
                answers=answers,
            )
            publisher.publish(
                record=record, position=stream.position, engine=engine, write_weights=write_model
            )
            losses.clear()
        if checkpoint_due or answers_due:
            meter.restart_clock()

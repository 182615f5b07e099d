"""The pieces both training loops use, so each loop file reads top to bottom without them.

- :class:`RunContext`: what the runner hands a loop (assignment, effective config, store,
  reporter, local directories, resume point).
- :func:`setup_run`: seed, device/precision, process group, tokenizer + chat template, data.
- :func:`kernel_plan`: the run's attention implementation and fused kernels.
- :func:`step_batches`: the micro-batches of one optimizer step and their loss-token count.
- :class:`StepScalars`: a step's loss, gradient norm and token count, read without a wait.
- :func:`collected_between_steps`: Python's garbage collector kept out of the steps.
- :func:`evaluate`: evaluation prompts and validation loss at a step.
- :class:`CheckpointPublisher`: write a checkpoint locally (weights by the loop, state by the
  engine, RNG and trainer state here), publish it, commit it, apply the keep policy locally.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from danlu.training.v1 import checkpoint_pb2, training_job_pb2
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.chat_templates import TOKENIZER_TEMPLATE, get_chat_template, resolve_chat_template
from danlu_kit.errors import Cancelled, FailedPrecondition
from danlu_kit.objectstore import ObjectStore
from danlu_kit.objectstore.artifacts import Manifest
from danlu_worker import reporter as rep
from danlu_worker.checkpoints import (
    CheckpointRecord,
    RetryPolicy,
    publish_checkpoint,
    read_trainer_state,
    remove_local_copies,
    save_rng_state,
    step_name,
    write_trainer_state,
)
from danlu_worker.data import (
    Batch,
    BatchStream,
    DataPosition,
    PreparedData,
    collate,
    prepare_data,
    to_device,
)
from danlu_worker.engine import (
    Engine,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    init_distributed,
)
from danlu_worker.evaluation import answer_prompts, validation_loss
from danlu_worker.kernels import KernelPlan, eager, has_windowed_layers, plan_kernels
from danlu_worker.metrics import ThroughputMeter
from danlu_worker.modeling import Numerics, load_tokenizer, resolve_numerics
from danlu_worker.settings import DistributedEnv
from danlu_worker.spec import RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    assignment: wpb.WorkerAssignment
    cfg: RunConfig
    store: ObjectStore
    reporter: rep.Reporter
    model_dir: Path  # the base model's files
    run_dir: Path  # local checkpoint copies of this job
    cache_dir: Path
    attempt: int
    dist: DistributedEnv
    resume_dir: Path | None = None  # the downloaded checkpoint to resume from
    resume_manifest: Manifest | None = None
    checkpoint_retry: RetryPolicy = field(default_factory=RetryPolicy)
    kernels: str = "auto"  # see danlu_worker.kernels
    attention: str = "auto"

    @property
    def job_name(self) -> str:
        return self.assignment.checkpoint_prefix.rstrip("/").removesuffix("/checkpoints")

    def log(self, message: str, level: int = rep.INFO) -> None:
        log.log(logging.WARNING if level >= rep.WARNING else logging.INFO, "%s", message)
        if self.dist.is_main:
            self.reporter.log(level, message)


@dataclass
class Setup:
    tokenizer: PreTrainedTokenizerBase
    chat_template: str | None
    chat_template_name: str
    stop_words: tuple[str, ...]
    data: PreparedData
    numerics: Numerics
    total_steps: int

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def setup_run(run: RunContext) -> Setup:
    """Everything before the model: seeds, device, process group, tokenizer, data, length."""
    cfg = run.cfg
    seed_everything(cfg.seed)
    numerics = resolve_numerics(cfg.precision, local_rank=run.dist.local_rank)
    init_distributed(run.dist, numerics, deepspeed=cfg.deepspeed is not None)
    tokenizer = load_tokenizer(run.model_dir)
    try:
        template, template_name = resolve_chat_template(tokenizer, cfg.chat_template or None)
    except FailedPrecondition:
        if cfg.task != "pretrain":
            raise
        template, template_name = None, ""
    stop_words = (
        ()
        if template_name in ("", TOKENIZER_TEMPLATE)
        else (get_chat_template(template_name).stop_words)
    )
    data = prepare_data(
        run.assignment, cfg, tokenizer, template, store=run.store, cache_dir=run.cache_dir
    )
    micro_batches_per_epoch = math.ceil(len(data.train.rows) / cfg.micro_batch_size)
    per_step = cfg.gradient_accumulation_steps * run.dist.world_size
    total_steps = cfg.max_steps or math.ceil((cfg.epochs or 1) * micro_batches_per_epoch / per_step)
    train = data.train
    run.log(
        f"data: {len(train.samples)} {data.task} samples ({train.num_tokens} tokens, "
        f"{train.truncated} truncated, {train.dropped} without loss tokens) in "
        f"{len(train.rows)} rows of at most {cfg.max_length} tokens"
        + (
            f" (packed, {train.num_tokens / (len(train.rows) * cfg.max_length):.1%} of their "
            "tokens real)"
            if cfg.packing
            else ""
        )
        + (f"; {len(data.validation.samples)} validation samples" if data.validation else "")
        + f"; {total_steps} optimizer steps"
    )
    return Setup(
        tokenizer=tokenizer,
        chat_template=template,
        chat_template_name=template_name,
        stop_words=tuple(stop_words),
        data=data,
        numerics=numerics,
        total_steps=total_steps,
    )


def kernel_plan(
    run: RunContext, setup: Setup, *, dtype: torch.dtype, deepspeed: bool, zero3: bool
) -> KernelPlan:
    """The run's attention implementation and fused kernels, for the base model's type."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(run.model_dir)
    return plan_kernels(
        run.kernels,
        model_type=config.model_type,
        device=setup.numerics.device,
        dtype=dtype,
        attention=run.attention,
        deepspeed=deepspeed,
        zero3=zero3,
        windowed_layers=has_windowed_layers(config),
    )


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and every GPU) RNGs, as transformers' ``set_seed`` does
    (importing that pulls in the whole Trainer stack, seconds of start-up)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def batch_stream(run: RunContext, setup: Setup, position: DataPosition) -> BatchStream:
    return BatchStream(
        len(setup.data.train.rows),
        run.cfg.micro_batch_size,
        seed=run.cfg.seed,
        shuffle=run.cfg.shuffle,
        rank=run.dist.rank,
        world_size=run.dist.world_size,
        position=position,
    )


def resume_position(run: RunContext, setup: Setup) -> tuple[int, DataPosition]:
    """(step, data position) to continue from: (0, start) without a checkpoint."""
    if run.resume_dir is None:
        return 0, DataPosition()
    state = read_trainer_state(run.resume_dir)
    if state.get("total_steps") != setup.total_steps:
        run.log(
            f"the checkpoint was written for {state.get('total_steps')} steps, this run has "
            f"{setup.total_steps}",
            rep.WARNING,
        )
    if run.resume_manifest and run.resume_manifest.extra.get("spec_digest") != run.cfg.spec_digest:
        run.log("the checkpoint was written by a different spec", rep.WARNING)
    return int(state["step"]), DataPosition.from_json(state["data_position"])


@dataclass
class StepData:
    """One optimizer step's micro-batches on this rank, taken from the stream."""

    batches: list[Batch]
    num_items: torch.Tensor  # the normaliser of their losses, on the device
    tokens: torch.Tensor  # real tokens of the step over all ranks (read once the step ran)
    position: DataPosition  # the stream's position after this step
    epochs_done: float  # likewise, in (fractional) epochs


def step_batches(
    run: RunContext, setup: Setup, stream: BatchStream, *, fixed_shape: bool = False
) -> StepData:
    """The micro-batches of one optimizer step on this rank, the normaliser of their losses
    (loss tokens of the step over all ranks, divided by the world size: DDP and DeepSpeed
    average gradients over ranks) and the real tokens of the step over all ranks.
    ``fixed_shape`` (compiled layers, packed rows): every micro-batch is ``micro_batch_size``
    rows of ``max_length`` tokens (see :func:`data.collate`).

    Nothing here waits for the GPU: on a GPU the batches are pinned and every copy is
    asynchronous, so the next step can be collated while the GPU runs the current one."""
    data = setup.data.train
    device = setup.numerics.device
    pin = device.type == "cuda"
    cfg = run.cfg
    shape = (cfg.micro_batch_size, cfg.max_length) if fixed_shape and cfg.packing else None
    batches = []
    for _ in range(cfg.gradient_accumulation_steps):
        batch = collate(
            data.samples,
            [data.rows[i] for i in stream.next_rows()],
            pad_token_id=setup.pad_token_id,
            packed=cfg.packing,
            shape=shape,
        )
        batches.append(batch.pinned() if pin else batch)
    counts = torch.tensor(
        [sum(b.num_loss_tokens for b in batches), sum(b.num_tokens for b in batches)],
        dtype=torch.float64,
    )
    counts = all_reduce_sum(to_device(counts.pin_memory() if pin else counts, device))
    return StepData(
        batches=batches,
        num_items=(counts[0] / run.dist.world_size).clamp(min=1).to(torch.float32),
        tokens=counts[1],
        position=stream.position,
        epochs_done=stream.epochs_done,
    )


class StepScalars:
    """Numbers a step left on the device (loss, gradient norm, tokens), copied to the host
    without waiting for them. ``float()`` or ``.item()`` right after the update would block
    the host until the GPU finished the step, and the GPU would then idle while the host
    launches the next step's first kernels; the loop reads these one step later, when the
    copy is long done (see :func:`train_steps`)."""

    def __init__(self, *values: torch.Tensor | float) -> None:
        self._values = [float(v) if not isinstance(v, torch.Tensor) else v for v in values]
        tensors = [v.detach().reshape(()).double() for v in values if isinstance(v, torch.Tensor)]
        self._host = torch.stack(tensors).to("cpu", non_blocking=True) if tensors else None
        self._copied: torch.cuda.Event | None = None
        if self._host is not None and tensors[0].is_cuda:
            self._copied = torch.cuda.Event()
            self._copied.record()

    def values(self) -> list[float]:
        if self._copied is not None:
            self._copied.synchronize()
        host = iter(self._host.tolist() if self._host is not None else [])
        return [next(host) if isinstance(v, torch.Tensor) else v for v in self._values]


@dataclass
class FinishedStep:
    """An optimizer step whose metrics are not read yet."""

    step: int
    epoch: float
    learning_rate: float
    scalars: StepScalars  # loss, gradient norm, real tokens


# How often the loop collects Python's garbage itself (see collected_between_steps).
GC_EVERY_STEPS = 50


@contextlib.contextmanager
def collected_between_steps() -> Iterator[Callable[..., None]]:
    """Python's cyclic garbage collector out of the step loop's way, as torchtitan and
    Megatron do: a collection may start at any allocation and walks the objects of its
    generations (the oldest one: the model's modules, the tokenised data, every imported
    library), holding the host while the GPU runs dry of queued kernels. Inside the block the
    objects alive at its start are frozen out of collections, automatic collection is off,
    and the yielded function collects everything newer every :data:`GC_EVERY_STEPS` steps,
    when the host is ahead of the GPU, and whenever the loop says the host waited for the
    GPU anyway (``settled``: after evaluation and checkpoints, whose generation and saving
    leave garbage of their own)."""
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()

    def collect(step: int, *, settled: bool = False) -> None:
        if settled or step % GC_EVERY_STEPS == 0:
            gc.collect()

    try:
        yield collect
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def raise_if_cancelled(run: RunContext, setup: Setup) -> None:
    """Stop at a step boundary when the user cancelled (rank 0 learns it; all ranks stop)."""
    flag = run.dist.is_main and run.reporter.cancel_requested
    if any_rank(flag, setup.numerics.device):
        raise Cancelled(message="cancelled by the user", reason="CANCELLED_BY_USER")


def evaluate(
    run: RunContext,
    setup: Setup,
    model: torch.nn.Module,
    *,
    step: int,
    answers_due: bool,
    validation_due: bool,
    zero3: bool,
) -> tuple[list[checkpoint_pb2.EvaluationAnswer], float | None]:
    """Evaluation answers (when due and configured) and validation loss (when due and there is
    validation data); reported as events by rank 0."""
    cfg = run.cfg
    answers: list[checkpoint_pb2.EvaluationAnswer] = []
    if answers_due and cfg.eval_prompts and setup.chat_template is not None:
        # ZeRO-3 shards every weight: all ranks must take part in each forward pass.
        if zero3 or run.dist.is_main:
            answers = answer_prompts(
                model,
                setup.tokenizer,
                cfg.eval_prompts,
                chat_template=setup.chat_template,
                system=cfg.eval_system,
                max_new_tokens=cfg.eval_max_new_tokens,
                stop_words=setup.stop_words,
                device=setup.numerics.device,
                synced_gpus=zero3 and run.dist.is_distributed,
            )
        barrier()
        if run.dist.is_main:
            run.reporter.evaluation(step, answers)
    loss = None
    if validation_due and setup.data.validation is not None:
        loss = validation_loss(
            model,
            setup.data.validation,
            micro_batch_size=cfg.micro_batch_size,
            pad_token_id=setup.pad_token_id,
            packed=cfg.packing,
            device=setup.numerics.device,
            autocast_dtype=setup.numerics.compute_dtype if setup.numerics.autocast else None,
        )
    return answers, loss


class CheckpointPublisher:
    """Writes ``{run_dir}/step-{n}/``, publishes it and commits it with the control plane."""

    def __init__(self, run: RunContext, setup: Setup, *, format: str) -> None:
        self.run = run
        self.setup = setup
        cfg = run.cfg
        assignment = run.assignment
        self.extra: dict[str, Any] = {
            "method": cfg.method,
            "format": format,
            "deepspeed_stage": cfg.deepspeed.stage if cfg.deepspeed else 0,
            "spec_digest": cfg.spec_digest,
            "seed": cfg.seed,
            "base_model": assignment.base_model.model,
            "base_model_digest": assignment.base_model.digest,
            "chat_template": setup.chat_template or "",
            "chat_template_name": setup.chat_template_name,
            "training_job": run.job_name,
            "attempt": run.attempt,
        }
        self.lineage = {
            "training_job": run.job_name,
            "dataset_versions": setup.data.dataset_versions,
            "parent_model": assignment.base_model.model,
        }

    def publish(
        self,
        *,
        record: CheckpointRecord,
        position: DataPosition,
        engine: Engine,
        write_weights: Callable[[Path], None],
    ) -> None:
        """All ranks call this (ZeRO shards and gathers are collective)."""
        run = self.run
        directory = run.run_dir / step_name(record.step)
        if run.dist.is_main:
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
        barrier()
        write_weights(directory)  # the loop saves on rank 0 (after any collective gather)
        if run.dist.is_main or run.cfg.deepspeed is not None:
            engine.save_state(directory, step=record.step)
        save_rng_state(directory, rank=run.dist.rank, world_size=run.dist.world_size)
        if run.dist.is_main:
            write_trainer_state(
                directory,
                {
                    "step": record.step,
                    "epoch": record.epoch,
                    "data_position": position.to_json(),
                    "total_steps": self.setup.total_steps,
                    "seed": run.cfg.seed,
                    "world_size": run.dist.world_size,
                },
            )
        barrier()
        if run.dist.is_main:
            checkpoint = publish_checkpoint(
                run.store,
                checkpoint_prefix=run.assignment.checkpoint_prefix,
                directory=directory,
                record=record,
                extra={**self.extra, "data_position": position.to_json()},
                lineage=self.lineage,
                retry=run.checkpoint_retry,
            )
            deleted = run.reporter.commit_checkpoint(checkpoint)
            remove_local_copies(run.run_dir, deleted)
            run.log(
                f"checkpoint {step_name(record.step)} committed ({checkpoint.size_bytes} bytes)"
                + (f"; keep policy deleted {', '.join(deleted)}" if deleted else "")
            )
        barrier()


def train_steps(
    run: RunContext,
    setup: Setup,
    engine: Engine,
    stream: BatchStream,
    *,
    step: int,
    total_params: int,
    lora: bool,
    zero3: bool,
    weights_format: str,
    write_weights: Callable[[Path], None],
) -> None:
    """The optimizer-step loop every method shares: micro-batches -> update -> metrics ->
    every N steps evaluation answers, validation loss and a checkpoint. The method's file
    decides what the weights are (``write_weights``) and how the engine was built."""
    cfg = run.cfg
    numerics = setup.numerics
    is_main = run.dist.is_main
    publisher = CheckpointPublisher(run, setup, format=weights_format)
    meter = ThroughputMeter(
        total_steps=setup.total_steps,
        parameters=total_params,
        lora=lora,
        device=numerics.device,
        world_size=run.dist.world_size,
    )
    metrics_every = max(1, setup.total_steps // 1000)
    # Compiled layers would recompile for every new micro-batch shape (18 s of idle GPU at
    # an epoch's short last micro-batch on an H100): keep one shape.
    fixed_shape = engine.kernels.compile_layers
    losses: list[float] = []  # since the previous checkpoint
    engine.module.train()

    def settle(done: FinishedStep) -> training_job_pb2.TrainingMetrics:
        loss, grad_norm, tokens = done.scalars.values()
        losses.append(loss)
        return meter.step_done(
            step=done.step,
            epoch=done.epoch,
            loss=loss,
            learning_rate=done.learning_rate,
            grad_norm=grad_norm,
            tokens=int(tokens),
        )

    def report(metrics: training_job_pb2.TrainingMetrics, *, due: bool = False) -> None:
        if is_main and (due or metrics.step % metrics_every == 0):
            run.reporter.metrics(metrics)

    upcoming: StepData | None = None  # collated during the previous step
    unsettled: FinishedStep | None = None  # the previous step, its numbers still in flight
    with collected_between_steps() as collect_garbage:
        while step < setup.total_steps:
            raise_if_cancelled(run, setup)
            current = upcoming or step_batches(run, setup, stream, fixed_shape=fixed_shape)
            learning_rate = engine.learning_rate  # the rate this step uses
            step_loss = torch.zeros((), device=numerics.device)
            for i, batch in enumerate(current.batches):
                if i:
                    raise_if_cancelled(run, setup)
                loss = engine.forward(batch, current.num_items)
                engine.backward(loss, boundary=i == len(current.batches) - 1)
                step_loss += loss.detach().float()
            if unsettled is not None:  # its numbers arrived while this step was queued
                report(settle(unsettled))
                unsettled = None
            # Collate the next step while the GPU still works through this one's backward.
            # (DeepSpeed's backward applies the update itself, so there the collation follows it.)
            upcoming = (
                step_batches(run, setup, stream, fixed_shape=fixed_shape)
                if step + 1 < setup.total_steps
                else None
            )
            grad_norm = engine.optimizer_step()
            step += 1
            collect_garbage(step)  # the GPU has the whole step queued
            done = FinishedStep(
                step=step,
                epoch=current.epochs_done,
                learning_rate=learning_rate,
                scalars=StepScalars(all_reduce_mean(step_loss), grad_norm, current.tokens),
            )

            last = step == setup.total_steps
            checkpoint_due = step % cfg.checkpoint_every_n_steps == 0 or last
            answers_due = last or (
                step % cfg.eval_every_n_steps == 0 if cfg.eval_every_n_steps else checkpoint_due
            )
            if not (checkpoint_due or answers_due):
                unsettled = done  # read during the next step: no wait for the GPU here
                continue
            metrics = settle(done)
            raise_if_cancelled(run, setup)  # a cancelled run commits nothing more
            with eager():  # compiled layers would recompile at every generated length
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
            report(metrics, due=checkpoint_due or last)
            if checkpoint_due:
                record = CheckpointRecord(
                    step=step,
                    epoch=current.epochs_done,
                    train_loss=sum(losses) / len(losses),
                    validation_loss=validation,
                    answers=answers,
                )
                publisher.publish(
                    record=record,
                    position=current.position,
                    engine=engine,
                    write_weights=write_weights,
                )
                losses.clear()
            collect_garbage(step, settled=True)
            meter.restart_clock()


def make_engine(
    run: RunContext,
    setup: Setup,
    model,
    ds_config: dict | None,
    *,
    exclude_frozen: bool,
    kernels: KernelPlan,
) -> Engine:
    """AdamW, the LR schedule and what steps them: DeepSpeed when the spec asks for a ZeRO
    stage, plain PyTorch otherwise (``exclude_frozen``: only trainable weights, as for LoRA)."""
    from danlu_worker.engine import DeepSpeedEngine, TorchEngine

    if ds_config is not None:
        return DeepSpeedEngine(
            model,
            run.cfg,
            setup.numerics,
            total_steps=setup.total_steps,
            ds_config=ds_config,
            exclude_frozen=exclude_frozen,
            kernels=kernels,
        )
    return TorchEngine(
        model,
        run.cfg,
        setup.numerics,
        total_steps=setup.total_steps,
        dist_env=run.dist,
        kernels=kernels,
    )

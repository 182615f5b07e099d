"""Checkpoints: written locally, published atomically, downloaded again to resume.

Layout of ``{assignment.checkpoint_prefix}step-{n}/`` (``manifest.json`` last, the commit
marker written by :class:`~danlu_kit.objectstore.artifacts.ArtifactWriter`):

=============================================  ==============================================
``adapter_model.safetensors``,                 LoRA / QLoRA: the adapter, as peft's
``adapter_config.json``                        ``save_pretrained`` writes it (loadable with
                                               ``PeftModel.from_pretrained`` on the base)
``model*.safetensors`` (+ index),              full fine-tuning: the model, as
``config.json``, ``generation_config.json``    ``save_pretrained`` writes it
``optimizer.pt``, ``scheduler.pt``             optimizer and LR schedule state (plain PyTorch)
``scaler.pt``                                  FP16 loss scaler (plain PyTorch, FP16 only)
``deepspeed/step-{n}/…``, ``deepspeed/latest``  DeepSpeed runs: the engine's
                                               ``save_checkpoint`` (ZeRO shards, optimizer,
                                               schedule) instead of the two ``.pt`` above
``rng_state.pt`` (``rng_state_{rank}.pt``)     torch (+CUDA), numpy and Python RNG states
``trainer_state.json``                         step, epoch, data position, seed, total steps
=============================================  ==============================================

The manifest's ``extra`` holds: ``step``, ``epoch``, ``train_loss``, ``validation_loss`` (or
null), ``answers`` (``[{prompt, answer}]``), ``method`` (``lora``/``qlora``/``full``),
``deepspeed_stage`` (0 without DeepSpeed), ``format`` (``peft_adapter``/``full_model``),
``data_position`` (``{epoch, index}``), ``spec_digest``, ``base_model``, ``base_model_digest``,
``chat_template`` (the Jinja template trained with) and ``chat_template_name``. ``lineage``
names the training job, the dataset versions and the base model.

Publishing retries object-store failures (``Unavailable``, connection errors) a bounded number
of times with exponential backoff; every try starts a fresh writer, and a failed try deletes
what it uploaded, so a half-written checkpoint is never committed.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from danlu.common.v1 import common_pb2
from danlu.training.v1 import checkpoint_pb2
from danlu_kit.errors import AlreadyExists, FailedPrecondition, Unavailable
from danlu_kit.objectstore import ObjectStore
from danlu_kit.objectstore.artifacts import ArtifactWriter, Manifest, read_manifest

log = logging.getLogger(__name__)

PRODUCER = "danlu-worker/0.1.0"
TRAINER_STATE = "trainer_state.json"
_RETRYABLE = (Unavailable, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0


@dataclass
class CheckpointRecord:
    """What the checkpoint says about the run at its step."""

    step: int
    epoch: float
    train_loss: float
    validation_loss: float | None
    answers: list[checkpoint_pb2.EvaluationAnswer] = field(default_factory=list)

    def to_extra(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "validation_loss": self.validation_loss,
            "answers": [{"prompt": a.prompt, "answer": a.answer} for a in self.answers],
        }


def step_name(step: int) -> str:
    return f"step-{step}"


# --------------------------------------------------------------------------- local state files


def rng_file(rank: int, world_size: int) -> str:
    return "rng_state.pt" if world_size == 1 else f"rng_state_{rank}.pt"


def save_rng_state(directory: Path, *, rank: int = 0, world_size: int = 1) -> None:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, directory / rng_file(rank, world_size))


def load_rng_state(directory: Path, *, rank: int = 0, world_size: int = 1) -> None:
    path = directory / rng_file(rank, world_size)
    if not path.is_file():
        log.warning("checkpoint has no %s: random streams start afresh", path.name)
        return
    # Python's and numpy's states are tuples of plain objects: not loadable weights-only.
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_trainer_state(directory: Path, state: Mapping[str, Any]) -> None:
    (directory / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True))


def read_trainer_state(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / TRAINER_STATE).read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            message=f"the checkpoint's {TRAINER_STATE} is missing or unreadable: {exc}",
            reason="CHECKPOINT_INVALID",
        ) from exc


# --------------------------------------------------------------------------- publish


def publish_checkpoint(
    store: ObjectStore,
    *,
    checkpoint_prefix: str,
    directory: Path,
    record: CheckpointRecord,
    extra: Mapping[str, Any],
    lineage: Mapping[str, Any],
    retry: RetryPolicy = RetryPolicy(),
    overwrite_uncommitted: bool = True,
) -> checkpoint_pb2.Checkpoint:
    """Upload every file of ``directory`` under ``{checkpoint_prefix}step-{n}/`` and commit the
    manifest; returns the Checkpoint to hand to CommitCheckpoint.

    A manifest already at that prefix belongs to an earlier attempt that crashed before the
    service recorded it (a recorded one would have been the resume point): with
    ``overwrite_uncommitted`` it is replaced.
    """
    prefix = f"{checkpoint_prefix}{step_name(record.step)}"
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    delay = retry.initial_delay
    attempt = 0
    replaced = False
    while True:
        attempt += 1
        try:
            manifest = _write_artifact(store, prefix, directory, files, record, extra, lineage)
            break
        except AlreadyExists:
            if not overwrite_uncommitted or replaced:
                raise
            log.warning("replacing %r left committed by an earlier attempt", prefix)
            store.delete_prefix(prefix + "/")
            replaced = True
            attempt -= 1
        except _RETRYABLE as exc:
            if attempt >= retry.attempts:
                raise Unavailable(
                    message=f"could not publish checkpoint {prefix!r} after {attempt} tries: {exc}",
                    reason="CHECKPOINT_PUBLISH_FAILED",
                ) from exc
            log.warning(
                "publishing %r failed (%s); try %d/%d in %.1fs",
                prefix,
                exc,
                attempt + 1,
                retry.attempts,
                delay,
            )
            time.sleep(delay)
            delay = min(retry.max_delay, delay * 2)
    checkpoint = checkpoint_pb2.Checkpoint(
        name=prefix,
        step=record.step,
        epoch=record.epoch,
        train_loss=record.train_loss,
        answers=record.answers,
        manifest=common_pb2.ObjectRef(
            key=f"{prefix}/manifest.json",
            sha256=manifest.digest.removeprefix("sha256:"),
            size_bytes=len(manifest.canonical_bytes()),
        ),
        size_bytes=manifest.total_size_bytes,
    )
    if record.validation_loss is not None:
        checkpoint.validation_loss = record.validation_loss
    return checkpoint


def _write_artifact(
    store: ObjectStore,
    prefix: str,
    directory: Path,
    files: Sequence[Path],
    record: CheckpointRecord,
    extra: Mapping[str, Any],
    lineage: Mapping[str, Any],
) -> Manifest:
    with ArtifactWriter(store, prefix) as writer:  # deletes its uploads unless committed
        for path in files:
            writer.add_file(path.relative_to(directory).as_posix(), path)
        return writer.commit(
            producer=PRODUCER, lineage=dict(lineage), extra={**record.to_extra(), **extra}
        )


# --------------------------------------------------------------------------- resume


def download_checkpoint(
    store: ObjectStore, checkpoint: checkpoint_pb2.Checkpoint, directory: Path
) -> Manifest:
    """Fetch a committed checkpoint into ``directory`` (replaced), every file verified."""
    key = checkpoint.manifest.key or f"{checkpoint.name}/manifest.json"
    prefix = key.rsplit("/", 1)[0]
    manifest = read_manifest(store, prefix)
    expected = checkpoint.manifest.sha256
    if expected and manifest.digest != f"sha256:{expected}":
        raise FailedPrecondition(
            message=f"checkpoint {checkpoint.name!r}: manifest digest {manifest.digest} differs "
            f"from the recorded sha256:{expected}",
            reason="CHECKPOINT_DIGEST_MISMATCH",
        )
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for f in manifest.files:
        target = directory / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        info = store.download_file(manifest.key(f.path), target)
        if info.sha256 != f.sha256:
            raise FailedPrecondition(
                message=f"checkpoint {checkpoint.name!r}: file {f.path!r} is corrupt",
                reason="CHECKPOINT_CORRUPT",
            )
    return manifest


def remove_local_copies(run_dir: Path, checkpoint_names: Sequence[str]) -> None:
    """Drop local copies of checkpoints the keep policy deleted."""
    for name in checkpoint_names:
        local = run_dir / name.rsplit("/", 1)[-1]
        if local.is_dir():
            shutil.rmtree(local, ignore_errors=True)

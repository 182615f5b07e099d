"""``run_assignment``: one attempt of a training job, from assignment to last checkpoint.

It fetches the base model (cached by digest), downloads the checkpoint to resume from (if
any), and hands over to the loop of the method: :mod:`danlu_worker.loops.peft_sft` for LoRA
and QLoRA, :mod:`danlu_worker.loops.full_sft` for full fine-tuning. It returns when the last
checkpoint is committed and raises otherwise (``Cancelled`` on a user cancel; typed
``danlu_kit.errors`` for bad data or specs; anything else is an internal failure).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.errors import FailedPrecondition
from danlu_kit.objectstore import ObjectStore
from danlu_kit.objectstore.artifacts import Manifest, read_manifest
from danlu_worker.checkpoints import RetryPolicy, download_checkpoint
from danlu_worker.loops import full_sft, peft_sft
from danlu_worker.loops._shared import RunContext
from danlu_worker.modeling import fetch_model
from danlu_worker.reporter import Reporter
from danlu_worker.settings import DistributedEnv, distributed_env, ensure_torch_extensions_dir
from danlu_worker.spec import run_config

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_assignment(
    assignment: wpb.WorkerAssignment,
    *,
    store: ObjectStore,
    reporter: Reporter,
    cache_dir: Path,
    attempt: int = 1,
    dist: DistributedEnv | None = None,
    checkpoint_retry: RetryPolicy = RetryPolicy(),
    kernels: str = "auto",
    attention: str = "auto",
) -> None:
    """Train what ``assignment`` says; return once the final checkpoint is committed.
    ``kernels`` and ``attention``: the fused kernels and attention implementation
    (``danlu_worker.kernels``)."""
    dist = dist or distributed_env()
    cache_dir = Path(cache_dir)
    cfg = run_config(assignment.spec, world_size=dist.world_size)
    if not assignment.checkpoint_prefix.endswith("/"):
        raise FailedPrecondition(
            message="the assignment's checkpoint_prefix must end with '/'",
            reason="ASSIGNMENT_INVALID",
        )
    if cfg.deepspeed is not None:
        ensure_torch_extensions_dir(cache_dir)

    job_id = assignment.checkpoint_prefix.rstrip("/").removesuffix("/checkpoints")
    run_dir = cache_dir / "runs" / job_id.replace("/", "_")
    run_dir.mkdir(parents=True, exist_ok=True)
    # One download per host: local rank 0 fetches, the host's other ranks wait for it.
    model_dir = _local_main_first(
        dist,
        lambda: fetch_model(store, assignment.base_model, cache_dir),
        ready=lambda: fetch_model(store, assignment.base_model, cache_dir, cached_only=True),
    )

    resume_dir = resume_manifest = None
    if assignment.HasField("resume_from") and assignment.resume_from.name:
        checkpoint = assignment.resume_from
        resume_dir = run_dir / f"resume-{checkpoint.step}"
        marker = run_dir / f".resume-{checkpoint.step}-attempt-{attempt}"

        def download() -> Manifest:
            manifest = download_checkpoint(store, checkpoint, resume_dir)
            marker.write_text(manifest.digest)
            return manifest

        def downloaded() -> Manifest | None:
            if not marker.is_file():
                return None
            return read_manifest(store, checkpoint.manifest.key.rsplit("/", 1)[0])

        resume_manifest = _local_main_first(dist, download, ready=downloaded)

    run = RunContext(
        assignment=assignment,
        cfg=cfg,
        store=store,
        reporter=reporter,
        model_dir=model_dir,
        run_dir=run_dir,
        cache_dir=cache_dir,
        attempt=attempt,
        dist=dist,
        resume_dir=resume_dir,
        resume_manifest=resume_manifest,
        checkpoint_retry=checkpoint_retry,
        kernels=kernels,
        attention=attention,
    )
    run.log(
        f"attempt {attempt}: {cfg.method} on {assignment.base_model.model} "
        f"({assignment.base_model.digest}), seed {cfg.seed}"
        + (f", resuming from step {assignment.resume_from.step}" if resume_dir else "")
    )
    loop = full_sft if cfg.method == "full" else peft_sft
    loop.train(run)
    run.log("training finished")


def _local_main_first(
    dist: DistributedEnv,
    produce: Callable[[], T],
    *,
    ready: Callable[[], T | None],
    timeout: float = 6 * 3600,
) -> T:
    """``produce()`` on each host's local rank 0; the other ranks poll ``ready()`` until it
    returns a result (the process group does not exist yet, so no barrier)."""
    if dist.local_rank == 0:
        return produce()
    deadline = time.monotonic() + timeout
    while (result := ready()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("local rank 0 did not finish downloading in time")
        time.sleep(1.0)
    return result

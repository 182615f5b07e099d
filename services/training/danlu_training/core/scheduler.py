"""The scheduler: admits queued jobs within capacity, launches their workers and watches them.

The jobs table is the queue (FIFO by create time), so a restarted service picks up where the
previous one stopped. One tick, run in a thread every ``interval`` seconds or when something
changed:

1. **Supervise** every worker handle. A worker that exited without CompleteWork, or whose last
   heartbeat is older than the timeout, is lost: the job gets a new attempt that resumes from its
   newest checkpoint (``resumed`` event) or, once the attempts are used up, FAILS. A cancelling
   job whose worker did not stop within the grace period is killed and CANCELLED. Workers of
   finished jobs or replaced attempts are stopped.
2. **Admit** queued jobs in order while capacity lasts: a GPU job needs
   ``gpus_per_node * nodes`` of the GPUs, a CPU job one of the CPU slots. A job that does not fit
   blocks the jobs behind it in its pool (no starvation of big jobs), not the other pool.
3. **Launch** every job whose current attempt has no worker yet, with a fresh token (only its
   hash is stored).

After a restart, workers started by the previous process are adopted as they are: they retry
their calls while the service is down, so each gets a full heartbeat timeout from the restart
before it counts as lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from danlu_kit.auth import hash_token, new_token
from danlu_training.core.lifecycle import change_state, lose_attempt
from danlu_training.core.ports import Launcher, LaunchRequest
from danlu_training.core.records import JobRecord, JobState
from danlu_training.core.signals import ChangeSignal

if TYPE_CHECKING:
    from danlu_training.adapters.db import TrainingRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    cpu_slots: int  # CPU jobs at once
    gpus: int  # GPUs to hand out
    max_attempts: int
    heartbeat_timeout_seconds: float
    cancel_grace_seconds: float
    interval_seconds: float = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self,
        repo: TrainingRepository,
        launcher: Launcher,
        config: SchedulerConfig,
        worker_env: Callable[[], Mapping[str, str]],
        wake: ChangeSignal,
    ):
        self.repo = repo
        self.launcher = launcher
        self.config = config
        self.worker_env = worker_env  # the DANLU_WORKER_* every attempt shares
        self.wake = wake
        self.started_at = _now()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = _now()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop after the tick in progress: a tick cut short could launch a worker and never
        record its handle."""
        if self._task is not None:
            self._stopping = True
            self.wake.notify()
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            seen = self.wake.version
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                # A database or launcher hiccup must not stop scheduling for good.
                log.exception("scheduler tick failed")
            if not self._stopping:
                await self.wake.wait(seen, self.config.interval_seconds)

    # -- one tick -------------------------------------------------------------------------

    def tick(self) -> None:
        now = _now()
        for job in self.repo.scheduling_view():
            if job.launch_handle:
                self._supervise(job, now)
        jobs = self.repo.scheduling_view()
        self._admit(jobs)
        for job in self.repo.scheduling_view():
            if job.launch_pending and not job.launch_handle and not job.state.terminal:
                self._launch(job)

    def _supervise(self, job: JobRecord, now: datetime) -> None:
        handle = job.launch_handle
        status = self.launcher.poll(handle)
        if job.state.terminal or job.launch_attempt != job.attempt:
            # A finished job's worker exits by itself; a replaced attempt's is stopped at once.
            ended = job.end_time or now
            overdue = now - ended > timedelta(seconds=self.config.cancel_grace_seconds)
            if status.running and (job.launch_attempt != job.attempt or overdue):
                self.launcher.kill(handle)
                status = self.launcher.poll(handle)
            if not status.running:
                self._forget(job, handle)
            return
        if not status.running:
            code = "unknown" if status.exit_code is None else str(status.exit_code)
            self._lose(job, f"the worker exited (code {code}) without reporting its end", now)
            return
        grace = timedelta(seconds=self.config.cancel_grace_seconds)
        if job.state == JobState.CANCELLING and job.cancel_time and now - job.cancel_time > grace:
            self.launcher.kill(handle)
            with self._locked(job) as tx:
                if tx is not None and tx.job.state == JobState.CANCELLING:
                    change_state(
                        tx,
                        JobState.CANCELLED,
                        "cancelled by user; the worker did not stop within "
                        f"{self.config.cancel_grace_seconds:g} s and was killed",
                        now,
                    )
            return
        if status.pending:
            # Not running yet, so it cannot heartbeat: its clock starts when it runs.
            with self._locked(job) as tx:
                if tx is not None and tx.job.attempt == job.attempt:
                    tx.job.last_heartbeat = now
            return
        # Workers adopted after a restart could not heartbeat while the service was down.
        last = max(job.last_heartbeat or self.started_at, self.started_at)
        if now - last > timedelta(seconds=self.config.heartbeat_timeout_seconds):
            self.launcher.kill(handle)
            self._lose(job, f"no heartbeat for {self.config.heartbeat_timeout_seconds:g} s", now)

    def _locked(self, job: JobRecord):
        """The job's transaction, or None when it was deleted meanwhile."""
        return self.repo.job_transaction(job.project, job.job_id, missing_ok=True)

    def _forget(self, job: JobRecord, handle: str) -> None:
        with self._locked(job) as tx:
            if tx is not None and tx.job.launch_handle == handle:
                tx.job.launch_handle = ""

    def _lose(self, job: JobRecord, reason: str, now: datetime) -> None:
        log.warning("worker lost", extra={"job": job.name, "attempt": job.attempt, "why": reason})
        with self._locked(job) as tx:
            if tx is None:
                return
            current = tx.job
            # Re-check under the lock: the worker may have completed in the meantime.
            if current.state.terminal or current.attempt != job.attempt:
                return
            current.launch_handle = ""
            lose_attempt(tx, reason, now, max_attempts=self.config.max_attempts)

    def _admit(self, jobs: list[JobRecord]) -> None:
        used_gpus = sum(j.gpus for j in jobs if not j.state.terminal and j.attempt > 0)
        used_slots = sum(1 for j in jobs if not j.state.terminal and j.attempt > 0 and j.gpus == 0)
        blocked = {"gpu": False, "cpu": False}
        for job in jobs:
            if job.state != JobState.QUEUED or job.attempt > 0:
                continue
            pool = "gpu" if job.gpus else "cpu"
            if blocked[pool]:
                continue
            fits = (
                used_gpus + job.gpus <= self.config.gpus
                if job.gpus
                else used_slots < self.config.cpu_slots
            )
            if not fits:
                blocked[pool] = True
                continue
            with self._locked(job) as tx:
                if tx is None or tx.job.state != JobState.QUEUED or tx.job.attempt > 0:
                    continue
                tx.job.attempt = 1
                tx.job.launch_pending = True
            used_gpus += job.gpus
            used_slots += 0 if job.gpus else 1

    def _launch(self, job: JobRecord) -> None:
        token = new_token()
        now = _now()
        with self._locked(job) as tx:
            if tx is None or not tx.job.launch_pending or tx.job.launch_handle:
                return
            attempt = tx.job.attempt
            tx.job.worker_tokens[str(attempt)] = hash_token(token)
            # The heartbeat clock starts at launch: a worker that never calls in is lost too.
            tx.job.last_heartbeat = now
        resources = job.resolved_spec.resources
        env = {
            **self.worker_env(),
            "DANLU_WORKER_JOB": job.name,
            "DANLU_WORKER_ATTEMPT": str(attempt),
            "DANLU_WORKER_TOKEN": token,
        }
        try:
            handle = self.launcher.launch(
                LaunchRequest(
                    job=job.name,
                    attempt=attempt,
                    env=env,
                    gpus_per_node=resources.gpus_per_node,
                    nodes=max(1, resources.nodes),
                )
            )
        except Exception as exc:
            log.exception("launch failed", extra={"job": job.name, "attempt": attempt})
            with self._locked(job) as tx:
                if tx is not None and tx.job.attempt == attempt and not tx.job.state.terminal:
                    lose_attempt(
                        tx,
                        f"the worker could not be started: {exc}",
                        _now(),
                        max_attempts=self.config.max_attempts,
                    )
            return
        log.info("worker launched", extra={"job": job.name, "attempt": attempt})
        with self._locked(job) as tx:
            if tx is None:
                self.launcher.kill(handle)
                return
            # Saved even when the job changed meanwhile: supervision then stops the worker.
            tx.job.launch_handle = handle
            tx.job.launch_attempt = attempt
            if tx.job.attempt == attempt:
                tx.job.launch_pending = False

"""Conversion and merge jobs: create, get, list, cancel, delete, watch; run in worker threads.

Conversion needs only CPU, so a job runs in this process, in a thread of a pool of
``max_concurrent_jobs`` (no launcher, no separate worker). Lifecycle as every job in danlu:
QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, with CANCELLING on cancel; every change and
its ``state_changed`` event commit together. Cancel is checked after every tensor. A job left
QUEUED or RUNNING by a stopped service is failed on start (``SERVICE_RESTARTED``): its scratch
output was never registered, so nothing half-done is visible.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from danlu.common.v1 import common_pb2
from danlu.conversion.v1 import conversion_job_pb2 as cj
from danlu_kit.errors import (
    ERROR_DOMAIN,
    Cancelled,
    DanluError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from danlu_kit.names import check_id
from danlu_kit.objectstore import ObjectStore
from danlu_kit.request_context import caller_token_var

from . import operations
from .tensorfiles import parse_size

log = logging.getLogger(__name__)
S = common_pb2
ENDED = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
DTYPE_NAMES = {cj.DTYPE_FP16: "fp16", cj.DTYPE_BF16: "bf16", cj.DTYPE_FP32: "fp32"}
DEVICE_NAMES = {
    cj.MERGE_DEVICE_AUTO: "auto",
    cj.MERGE_DEVICE_CPU: "cpu",
    cj.MERGE_DEVICE_CUDA: "cuda",
}
DEFAULT_MAX_SHARD = 2 * 10**9
_PROGRESS_EVERY_S = 0.5


def _now() -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(datetime.now(UTC))
    return t


def _event(**payload: Any) -> cj.ConversionEvent:
    return cj.ConversionEvent(event_time=_now(), **payload)


def _state_event(previous: int, state: int, message: str) -> cj.ConversionEvent:
    return _event(
        state_changed=cj.StateChanged(previous_state=previous, state=state, message=message)
    )


def error_status(err: DanluError, code: int) -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.ErrorInfo(
            reason=err.reason, domain=ERROR_DOMAIN, metadata=dict(err.metadata)
        )
    )
    return status_pb2.Status(code=code, message=err.message, details=[detail])


def _code(name: str) -> int:
    try:
        return code_pb2.Code.Value(name)
    except ValueError:
        return code_pb2.UNKNOWN


@dataclass
class Runtime:
    """What a running job needs: the registry (SDK client), the object store, scratch space."""

    # The registry client of a project, calling with a token (None: the service's own).
    registry: Callable[[str, str | None], operations.Registry]
    store: ObjectStore
    scratch_dir: Path
    precision_max_bytes: int = 2 * 10**9


class Jobs:
    def __init__(self, repo, runtime: Runtime, *, max_concurrent_jobs: int = 1) -> None:
        self.repo = repo
        self.runtime = runtime
        self._pool = ThreadPoolExecutor(max_concurrent_jobs, thread_name_prefix="conversion")
        self._cancel: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- lifecycle of the component --------------------------------------------------------

    def recover(self) -> None:
        """Fail the jobs a previous process left unfinished."""
        for project, job_id in self.repo.unfinished():
            err = FailedPrecondition(
                message="the conversion service restarted while the job was queued or running",
                reason="SERVICE_RESTARTED",
            )
            self._finish(project, job_id, S.JOB_STATE_FAILED, err.message, error=err)

    def shutdown(self) -> None:
        with self._lock:
            for key in self.repo.unfinished():
                self._cancel.add(key)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- use cases --------------------------------------------------------------------------

    def create(
        self, project: str, job: cj.ConversionJob, job_id: str, request_id: str
    ) -> cj.ConversionJob:
        job_id = (
            check_id(job_id, "conversion_job_id") if job_id else "conv-" + uuid.uuid4().hex[:12]
        )
        resolved = self._resolve(project, job)
        resolved.name = f"projects/{project}/conversionJobs/{job_id}"
        resolved.state = S.JOB_STATE_QUEUED
        resolved.create_time.CopyFrom(_now())
        resolved.update_time.CopyFrom(resolved.create_time)
        created = self.repo.create(
            project,
            job_id,
            resolved,
            request_id,
            _state_event(S.JOB_STATE_UNSPECIFIED, S.JOB_STATE_QUEUED, "queued"),
        )
        if created.create_time == resolved.create_time and created.name == resolved.name:
            # The caller's token (auth on) is kept in memory only, for this job's registry calls.
            self._pool.submit(self._run, project, job_id, caller_token_var.get())
        return created

    def get(self, project: str, job_id: str) -> cj.ConversionJob:
        return self.repo.get(project, job_id)

    def list_jobs(self, project: str, state: int, after, limit: int) -> list[cj.ConversionJob]:
        return self.repo.list(project, state, after, limit)

    def cancel(self, project: str, job_id: str) -> cj.ConversionJob:
        def change(job: cj.ConversionJob) -> list[cj.ConversionEvent]:
            if job.state in ENDED or job.state == S.JOB_STATE_CANCELLING:
                return []
            previous = job.state
            if job.state == S.JOB_STATE_QUEUED:
                job.state = S.JOB_STATE_CANCELLED
                job.end_time.CopyFrom(_now())
            else:
                job.state = S.JOB_STATE_CANCELLING
            job.update_time.CopyFrom(_now())
            return [_state_event(previous, job.state, "cancel requested")]

        # Record CANCELLING before the running thread may see the flag: otherwise it can end
        # the job (RUNNING -> CANCELLED) first and the CANCELLING step is lost.
        job = self.repo.update(project, job_id, change)
        if job.state == S.JOB_STATE_CANCELLING:
            with self._lock:
                self._cancel.add((project, job_id))
        return job

    def delete(self, project: str, job_id: str) -> None:
        job = self.repo.get(project, job_id)
        if job.state not in ENDED:
            raise FailedPrecondition(
                f"{job.name} is {S.JobState.Name(job.state)}; cancel it first",
                reason="JOB_NOT_FINISHED",
            )
        self.repo.delete(project, job_id)

    async def watch(
        self, project: str, job_id: str, after: int, *, follow: bool, poll: float = 0.2
    ) -> AsyncIterator[cj.ConversionEvent]:
        while True:
            events = await asyncio.to_thread(self.repo.events, project, job_id, after)
            for event in events:
                after = event.sequence
                yield event
            if not follow:
                return
            job = await asyncio.to_thread(self.repo.get, project, job_id)
            if job.state in ENDED:
                rest = await asyncio.to_thread(self.repo.events, project, job_id, after)
                for event in rest:
                    yield event
                return
            await asyncio.sleep(poll)

    # -- validation -------------------------------------------------------------------------

    def _resolve(self, project: str, job: cj.ConversionJob) -> cj.ConversionJob:
        out = cj.ConversionJob(display_name=job.display_name)
        which = job.WhichOneof("spec")
        bad: list[FieldViolation] = []
        if which == "convert_checkpoint":
            spec = cj.ConvertCheckpointSpec()
            spec.CopyFrom(job.convert_checkpoint)
            prefix = f"projects/{project}/trainingJobs/"
            if (
                not spec.checkpoint.startswith(prefix)
                or "/checkpoints/step-" not in spec.checkpoint
            ):
                bad.append(
                    FieldViolation(
                        "conversion_job.convert_checkpoint.checkpoint",
                        f"must name a checkpoint {prefix}{{job}}/checkpoints/step-{{n}}",
                    )
                )
            out.convert_checkpoint.CopyFrom(spec)
            target = out.convert_checkpoint
            field = "conversion_job.convert_checkpoint"
        elif which == "merge":
            spec = cj.MergeSpec()
            spec.CopyFrom(job.merge)
            if not spec.adapter_model:
                bad.append(FieldViolation("conversion_job.merge.adapter_model", "is required"))
            if spec.device == cj.MERGE_DEVICE_UNSPECIFIED:
                spec.device = cj.MERGE_DEVICE_CPU
            out.merge.CopyFrom(spec)
            target = out.merge
            field = "conversion_job.merge"
        else:
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT",
                [FieldViolation("conversion_job.spec", "convert_checkpoint or merge is required")],
            )
        # A job only reads its own project's artifacts (as training does): another project's
        # names are NOT_FOUND, whatever token the service calls the registry with.
        inputs = (
            [("checkpoint", out.convert_checkpoint.checkpoint)]
            if which == "convert_checkpoint"
            else [("base_model", out.merge.base_model), ("adapter_model", out.merge.adapter_model)]
        )
        for name, value in inputs:
            if value.startswith("projects/") and not value.startswith(f"projects/{project}/"):
                raise NotFound(
                    f"{value} not found", reason="NOT_FOUND", metadata={"field": f"{field}.{name}"}
                )
        if not target.model_id:
            bad.append(FieldViolation(f"{field}.model_id", "is required"))
        else:
            try:
                check_id(target.model_id, f"{field}.model_id")
            except InvalidArgument as exc:
                bad.extend(exc.violations)
        if target.dtype == cj.DTYPE_UNSPECIFIED:
            target.dtype = cj.DTYPE_FP16  # XTuner's default
        if target.max_shard_size_bytes < 0:
            bad.append(FieldViolation(f"{field}.max_shard_size_bytes", "must be positive"))
        elif target.max_shard_size_bytes == 0:
            target.max_shard_size_bytes = DEFAULT_MAX_SHARD
        if bad:
            raise InvalidArgument.from_violations("INVALID_ARGUMENT", bad, "bad conversion job")
        return out

    # -- running ----------------------------------------------------------------------------

    def _cancelled(self, project: str, job_id: str) -> bool:
        with self._lock:
            return (project, job_id) in self._cancel

    def _run(self, project: str, job_id: str, token: str | None = None) -> None:
        def start(job: cj.ConversionJob) -> list[cj.ConversionEvent]:
            if job.state != S.JOB_STATE_QUEUED:
                return []
            job.state = S.JOB_STATE_RUNNING
            job.start_time.CopyFrom(_now())
            job.update_time.CopyFrom(job.start_time)
            return [_state_event(S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, "running")]

        try:
            job = self.repo.update(project, job_id, start)
        except DanluError:
            log.exception("conversion job %s/%s vanished before it ran", project, job_id)
            return
        if job.state != S.JOB_STATE_RUNNING:
            return
        last = [0.0]

        def progress(done: int, total: int, name: str) -> None:
            now = time.monotonic()
            if done != total and now - last[0] < _PROGRESS_EVERY_S:
                return
            last[0] = now

            def change(j: cj.ConversionJob) -> list[cj.ConversionEvent]:
                j.progress.completed, j.progress.total = done, total
                j.progress.update_time.CopyFrom(_now())
                j.update_time.CopyFrom(j.progress.update_time)
                return [
                    _event(
                        progress=cj.Progress(
                            description=name, completed=done, total=total, unit="tensors"
                        )
                    )
                ]

            self.repo.update(project, job_id, change)

        def cancelled() -> bool:
            return self._cancelled(project, job_id)

        name = job.name
        try:
            outcome = self._execute(job, name, token, cancelled, progress)
        except Cancelled:
            self._finish(project, job_id, S.JOB_STATE_CANCELLED, "cancelled")
            return
        except DanluError as err:
            self._finish(project, job_id, S.JOB_STATE_FAILED, err.message, error=err)
            return
        except Exception as exc:  # a bug or an unexpected library error: fail, don't hang
            log.exception("conversion job %s failed unexpectedly", name)
            err = DanluError(message=f"internal error: {type(exc).__name__}", reason="INTERNAL")
            err.code_name = "INTERNAL"
            self._finish(project, job_id, S.JOB_STATE_FAILED, err.message, error=err)
            return
        finally:
            with self._lock:
                self._cancel.discard((project, job_id))
        self._finish(project, job_id, S.JOB_STATE_SUCCEEDED, "succeeded", outcome=outcome)

    def _execute(self, job, name, token, cancelled, progress) -> operations.Outcome:
        rt = self.runtime
        registry = rt.registry(name.split("/")[1], token)
        if job.WhichOneof("spec") == "convert_checkpoint":
            spec = job.convert_checkpoint
            return operations.convert_and_register(
                registry,
                rt.store,
                checkpoint=spec.checkpoint,
                model_id=spec.model_id,
                dtype=DTYPE_NAMES[spec.dtype],
                max_shard_size=parse_size(spec.max_shard_size_bytes),
                job=name,
                workdir=rt.scratch_dir,
                cancelled=cancelled,
                progress=progress,
            )
        spec = job.merge
        return operations.merge_and_register(
            registry,
            adapter=spec.adapter_model,
            base=spec.base_model,
            model_id=spec.model_id,
            dtype=DTYPE_NAMES[spec.dtype],
            max_shard_size=parse_size(spec.max_shard_size_bytes),
            device=DEVICE_NAMES[spec.device],
            precision=not spec.skip_precision_report,
            precision_max_bytes=rt.precision_max_bytes,
            job=name,
            workdir=rt.scratch_dir,
            cancelled=cancelled,
            progress=progress,
        )

    def _finish(
        self,
        project: str,
        job_id: str,
        state: int,
        message: str,
        *,
        error: DanluError | None = None,
        outcome: operations.Outcome | None = None,
    ) -> None:
        def change(job: cj.ConversionJob) -> list[cj.ConversionEvent]:
            if job.state in ENDED:
                return []
            events = []
            if outcome is not None:
                model = outcome.model
                job.output_model = model.name
                events.append(
                    _event(
                        output_registered=cj.OutputRegistered(model=model.name, digest=model.digest)
                    )
                )
                for note in outcome.notes:
                    events.append(_event(log=cj.LogLine(level=cj.LOG_LEVEL_INFO, message=note)))
                report = outcome.precision
                if report is not None and not report.skipped:
                    job.precision_report.CopyFrom(
                        cj.PrecisionReport(
                            max_abs_logit_diff=report.max_abs_logit_diff,
                            mean_abs_logit_diff=report.mean_abs_logit_diff,
                            greedy_match_rate=report.greedy_match_rate,
                            probes=[
                                cj.ProbeResult(prompt=p.prompt, greedy_match=p.greedy_match)
                                for p in report.probes
                            ],
                        )
                    )
                elif report is not None:
                    events.append(
                        _event(
                            log=cj.LogLine(
                                level=cj.LOG_LEVEL_WARNING,
                                message=f"precision report skipped: {report.skipped}",
                            )
                        )
                    )
            if error is not None:
                job.error.CopyFrom(error_status(error, _code(error.code_name)))
            previous = job.state
            job.state = state
            job.end_time.CopyFrom(_now())
            job.update_time.CopyFrom(job.end_time)
            events.append(_state_event(previous, state, message))
            return events

        self.repo.update(project, job_id, change)

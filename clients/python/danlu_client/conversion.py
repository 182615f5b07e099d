"""The conversion part of the SDK: convert a checkpoint, merge an adapter, follow the jobs.

with Client() as danlu:
    job = danlu.conversion.convert("identity@step-300", name="identity-300")
    job = danlu.conversion.merge("identity-300", name="identity-merged", dtype="bf16")
    final = danlu.conversion.wait(job.name, on_event=print)
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator

import grpc

from danlu.common.v1 import common_pb2
from danlu.conversion.v1 import conversion_job_pb2 as cj
from danlu.conversion.v1 import conversion_service_pb2 as pb
from danlu.conversion.v1 import conversion_service_pb2_grpc
from danlu_client.errors import InvalidArgumentError, from_rpc_error
from danlu_client.streams import resumable_events

ConversionJob = cj.ConversionJob
ConversionEvent = cj.ConversionEvent
DTYPES = {"fp16": cj.DTYPE_FP16, "bf16": cj.DTYPE_BF16, "fp32": cj.DTYPE_FP32}
DEVICES = {"auto": cj.MERGE_DEVICE_AUTO, "cpu": cj.MERGE_DEVICE_CPU, "cuda": cj.MERGE_DEVICE_CUDA}
TERMINAL_STATES = frozenset(
    {common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED}
)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _mapped(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    return wrapper


def parse_size(text: str | int) -> int:
    """``2GB`` (decimal, as transformers), ``1GiB``, ``500MB`` or a byte count."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise InvalidArgumentError(
            "INVALID_ARGUMENT", f"{text!r} is not a size such as 2GB or 500MB", "SIZE_INVALID"
        )
    return int(float(m.group(1)) * _UNITS[unit])


def _choice(mapping: dict, value: str, what: str) -> int:
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgumentError(
            "INVALID_ARGUMENT", f"{what} {value!r} is not one of {', '.join(mapping)}", "INVALID"
        ) from None


class ConversionClient:
    """``Client.conversion``: conversion and merge jobs."""

    reconnect_attempts = 5
    reconnect_backoff = 0.5
    reconnect_max_backoff = 8.0

    def __init__(self, channel: grpc.Channel, project: str):
        self._stub = conversion_service_pb2_grpc.ConversionServiceStub(channel)
        self.project = project
        self.parent = f"projects/{project}"
        self._sleep = time.sleep

    # -- names ------------------------------------------------------------------------------

    def job_name(self, job: str) -> str:
        return job if job.startswith("projects/") else f"{self.parent}/conversionJobs/{job}"

    def model_name(self, model: str) -> str:
        return model if model.startswith("projects/") else f"{self.parent}/models/{model}"

    def checkpoint_name(self, ref: str) -> str:
        """``JOB`` + step: ``job@step-30``, ``job@30`` or the full checkpoint name."""
        if ref.startswith("projects/") and "/checkpoints/" in ref:
            return ref
        job, sep, step = ref.rpartition("@")
        if not sep or not job:
            raise InvalidArgumentError(
                "INVALID_ARGUMENT", f"{ref!r} is not JOB@STEP", "CHECKPOINT_INVALID"
            )
        step = step if step.startswith("step-") else f"step-{step}"
        job = job if job.startswith("projects/") else f"{self.parent}/trainingJobs/{job}"
        return f"{job}/checkpoints/{step}"

    # -- create -----------------------------------------------------------------------------

    def convert(
        self,
        checkpoint: str,
        *,
        name: str,
        dtype: str = "fp16",
        max_shard_size: str | int = "2GB",
        job_id: str = "",
        request_id: str = "",
    ) -> ConversionJob:
        """Start converting ``checkpoint`` (full name or ``job@step``) into model ``name``."""
        spec = cj.ConvertCheckpointSpec(
            checkpoint=self.checkpoint_name(checkpoint),
            model_id=name,
            dtype=_choice(DTYPES, dtype, "dtype"),
            max_shard_size_bytes=parse_size(max_shard_size),
        )
        return self._create(cj.ConversionJob(convert_checkpoint=spec), job_id, request_id)

    def merge(
        self,
        adapter: str,
        *,
        name: str,
        base: str = "",
        dtype: str = "fp16",
        max_shard_size: str | int = "2GB",
        device: str = "cpu",
        skip_precision_report: bool = False,
        job_id: str = "",
        request_id: str = "",
    ) -> ConversionJob:
        """Start merging ``adapter`` into ``base`` (default: the adapter's own base)."""
        spec = cj.MergeSpec(
            base_model=self.model_name(base) if base else "",
            adapter_model=self.model_name(adapter),
            model_id=name,
            dtype=_choice(DTYPES, dtype, "dtype"),
            max_shard_size_bytes=parse_size(max_shard_size),
            device=_choice(DEVICES, device, "device"),
            skip_precision_report=skip_precision_report,
        )
        return self._create(cj.ConversionJob(merge=spec), job_id, request_id)

    @_mapped
    def _create(self, job, job_id, request_id) -> ConversionJob:
        return self._stub.CreateConversionJob(
            pb.CreateConversionJobRequest(
                parent=self.parent,
                conversion_job=job,
                conversion_job_id=job_id,
                request_id=request_id,
            )
        )

    # -- read / control ---------------------------------------------------------------------

    @_mapped
    def get_job(self, job: str) -> ConversionJob:
        return self._stub.GetConversionJob(pb.GetConversionJobRequest(name=self.job_name(job)))

    def list_jobs(self, state: int = 0, page_size: int = 0) -> Iterator[ConversionJob]:
        token = ""
        while True:
            try:
                response = self._stub.ListConversionJobs(
                    pb.ListConversionJobsRequest(
                        parent=self.parent, page_size=page_size, page_token=token, state=state
                    )
                )
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
            yield from response.conversion_jobs
            token = response.next_page_token
            if not token:
                return

    @_mapped
    def cancel_job(self, job: str) -> ConversionJob:
        return self._stub.CancelConversionJob(
            pb.CancelConversionJobRequest(name=self.job_name(job))
        )

    @_mapped
    def delete_job(self, job: str) -> None:
        self._stub.DeleteConversionJob(pb.DeleteConversionJobRequest(name=self.job_name(job)))

    def watch(
        self, job: str, after_sequence: int = 0, follow: bool = True
    ) -> Iterator[ConversionEvent]:
        """Stream a job's events; reconnects from the last sequence on UNAVAILABLE."""
        name, last = self.job_name(job), after_sequence
        yield from resumable_events(
            lambda after: self._stub.WatchConversionJob(
                pb.WatchConversionJobRequest(name=name, after_sequence=after, follow=follow)
            ),
            last,
            attempts=self.reconnect_attempts,
            backoff=self.reconnect_backoff,
            max_backoff=self.reconnect_max_backoff,
            sleep=self._sleep,
        )

    def wait(
        self, job: str, on_event: Callable[[ConversionEvent], None] | None = None
    ) -> ConversionJob:
        """Follow the job to its end and return it (whatever its final state)."""
        for event in self.watch(job):
            if on_event is not None:
                on_event(event)
        return self.get_job(job)

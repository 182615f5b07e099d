"""Launchers: local worker processes (the embedded default and compose) and Kubernetes Jobs.

Both implement :class:`danlu_training.core.ports.Launcher`. Handles are strings stored on the job,
so a restarted service finds the workers the previous process started:

- local: ``pid=123;attempt=2;gpus=0,1;job=projects/p/trainingJobs/j``. Workers run in their own
  session (``start_new_session``), so stopping the service does not stop them; after a restart
  the pid is trusted only while ``/proc/<pid>/environ`` still names this job and attempt (pids
  are reused).
- Kubernetes: ``k8s:{namespace}/{job object name}``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from danlu_kit.errors import FailedPrecondition
from danlu_training.adapters.kubernetes import (
    KubernetesApi,
    KubernetesConfig,
    object_name,
    render_worker_manifests,
)
from danlu_training.core.ports import LaunchRequest, WorkerStatus
from danlu_training.core.spec import Capabilities

log = logging.getLogger(__name__)

DEFAULT_WORKER = ("-m", "danlu_worker")


@dataclass(frozen=True)
class _LocalHandle:
    pid: int
    attempt: int
    gpus: tuple[int, ...]
    job: str

    def __str__(self) -> str:
        gpus = ",".join(map(str, self.gpus))
        return f"pid={self.pid};attempt={self.attempt};gpus={gpus};job={self.job}"

    @classmethod
    def parse(cls, handle: str) -> _LocalHandle:
        fields = dict(part.split("=", 1) for part in handle.split(";"))
        gpus = tuple(int(g) for g in fields["gpus"].split(",") if g)
        return cls(int(fields["pid"]), int(fields["attempt"]), gpus, fields["job"])


def detect_gpus() -> int:
    """NVIDIA GPUs of this machine, without importing torch (the control plane has none)."""
    try:
        return len(list(Path("/proc/driver/nvidia/gpus").iterdir()))
    except OSError:
        return 0


class LocalProcessLauncher:
    """Workers as processes on this machine: ``python -m danlu_worker``, or torchrun with one
    process per GPU when a job asks for several. Output goes to
    ``{log_dir}/{project}/{job}/attempt-{n}.log``. GPUs are handed out by index through
    ``CUDA_VISIBLE_DEVICES`` so concurrent jobs never share one."""

    max_nodes = 1

    def __init__(
        self,
        log_dir: Path,
        *,
        gpus: int,
        credentials: Mapping[str, str] | None = None,
        worker: Sequence[str] = DEFAULT_WORKER,
        extra_env: Mapping[str, str] | None = None,
    ):
        self.log_dir = log_dir
        self.gpus = gpus
        self.credentials = dict(credentials or {})  # DANLU_WORKER_S3_* for the workers
        self.worker = list(worker)  # what follows `python` (or torchrun): a module or a script
        self.extra_env = dict(extra_env or {})
        self._children: dict[int, subprocess.Popen] = {}
        self._gpus_in_use: dict[str, tuple[int, ...]] = {}

    def capabilities(self) -> Capabilities:
        def installed(module: str) -> bool:
            return importlib.util.find_spec(module) is not None

        return Capabilities(
            cuda=self.gpus > 0,
            gpus=self.gpus,
            bitsandbytes=self.gpus > 0 and installed("bitsandbytes"),
            deepspeed=installed("deepspeed"),
        )

    def launch(self, request: LaunchRequest) -> str:
        gpus = self._take_gpus(request.gpus_per_node)
        if request.gpus_per_node > 1:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={request.gpus_per_node}",
                *self.worker,
            ]
        else:
            command = [sys.executable, *self.worker]
        project, _, job_id = request.job.removeprefix("projects/").partition("/trainingJobs/")
        log_path = self.log_dir / project / job_id / f"attempt-{request.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.extra_env,
            **self.credentials,
            **request.env,
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        }
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: a restarting service leaves it running, and killpg stops
                # torchrun together with its children.
                start_new_session=True,
            )
        self._children[process.pid] = process
        handle = str(_LocalHandle(process.pid, request.attempt, gpus, request.job))
        self._gpus_in_use[handle] = gpus
        log.info(
            "worker started", extra={"job": request.job, "pid": process.pid, "log": str(log_path)}
        )
        return handle

    def _take_gpus(self, count: int) -> tuple[int, ...]:
        if count <= 0:
            return ()
        busy = {g for gpus in self._gpus_in_use.values() for g in gpus}
        free = [g for g in range(self.gpus) if g not in busy]
        if len(free) < count:
            # The scheduler counts GPUs before launching, so this means workers it no longer
            # tracks still hold some: wait for them rather than double-book a GPU.
            raise FailedPrecondition(
                f"{count} GPU(s) wanted but only {len(free)} free", reason="GPUS_BUSY"
            )
        return tuple(free[:count])

    def poll(self, handle: str) -> WorkerStatus:
        h = _LocalHandle.parse(handle)
        process = self._children.get(h.pid)
        if process is not None:
            code = process.poll()
            running = code is None
        else:
            # Started by an earlier service process: not our child, so no exit code.
            running, code = _is_worker(h), None
        if running:
            self._gpus_in_use[handle] = h.gpus  # adopted workers keep their GPUs
        else:
            self._children.pop(h.pid, None)
            self._gpus_in_use.pop(handle, None)
        return WorkerStatus(running=running, exit_code=code)

    def kill(self, handle: str) -> None:
        h = _LocalHandle.parse(handle)
        process = self._children.get(h.pid)
        if process is None and not _is_worker(h):
            return  # gone, or the pid now belongs to someone else
        _kill_group(h.pid, process)

    def kill_all(self) -> None:
        """Stop every worker this launcher started (tests; a service never does this)."""
        for pid, process in list(self._children.items()):
            if process.poll() is None:
                _kill_group(pid, process)


def _kill_group(pid: int, process: subprocess.Popen | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not die after SIGKILL", pid)


def _is_worker(h: _LocalHandle) -> bool:
    """Whether ``h.pid`` is alive and still the worker of that job and attempt."""
    try:
        stat = Path(f"/proc/{h.pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False  # exited, not reaped yet
        environ = Path(f"/proc/{h.pid}/environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return (
        f"DANLU_WORKER_JOB={h.job}".encode() in environ
        and f"DANLU_WORKER_ATTEMPT={h.attempt}".encode() in environ
    )


class KubernetesLauncher:
    """One ``batch/v1`` Job per attempt (Indexed, with a headless Service for the torchrun
    rendezvous, when the job spans several nodes). Kubernetes runs the pods; danlu does the
    retries, so the Job's ``backoffLimit`` is 0."""

    max_nodes = 64

    def __init__(self, config: KubernetesConfig, api: KubernetesApi):
        self.config = config
        self.api = api

    def capabilities(self) -> Capabilities:
        # The worker images are built for CUDA with bitsandbytes and DeepSpeed installed.
        gpus = self.config.gpus_per_node
        return Capabilities(cuda=gpus > 0, gpus=gpus, bitsandbytes=gpus > 0, deepspeed=gpus > 0)

    def launch(self, request: LaunchRequest) -> str:
        self.api.apply(render_worker_manifests(request, self.config))
        return f"k8s:{self.config.namespace}/{object_name(request.job, request.attempt)}"

    def poll(self, handle: str) -> WorkerStatus:
        namespace, name = handle.removeprefix("k8s:").split("/", 1)
        status = self.api.job_status(namespace, name)
        return status if status is not None else WorkerStatus(running=False)

    def kill(self, handle: str) -> None:
        namespace, name = handle.removeprefix("k8s:").split("/", 1)
        self.api.delete(namespace, name)

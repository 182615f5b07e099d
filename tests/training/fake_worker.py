"""A stand-in for ``danlu_worker`` that plays the WorkerService protocol without training.

Launched by the tests' LocalProcessLauncher with the real ``DANLU_WORKER_*`` environment. It
fetches its assignment, reports one metrics event and one log line per step, heartbeats every
step, writes and commits a checkpoint (real files + manifest in the object store) every
``checkpoint.every_n_steps`` and at the last step, and completes. Like the real worker it
resumes from ``assignment.resume_from`` and retries calls while the service is unreachable,
re-sending a report batch with its original ``batch_sequence``.

Misbehaviour on demand (``FAKE_*``; "attempt-scoped" knobs apply to attempts listed in
``FAKE_ATTEMPTS``, default ``1``, or to every attempt with ``all``):

- ``FAKE_STEP_SECONDS``: time per step (default 0.02).
- ``FAKE_DIE_AT_STEP``: exit with code 3 before that step, without CompleteWork (attempt-scoped).
- ``FAKE_HANG_AT_STEP``: stop calling the service before that step (attempt-scoped).
- ``FAKE_TRANSIENT_AT_STEP``: CompleteWork(UNAVAILABLE) before that step (attempt-scoped).
- ``FAKE_FAIL``: end with CompleteWork(INTERNAL, this message).
- ``FAKE_IGNORE_CANCEL``: keep training when asked to cancel.
- ``FAKE_LOSSES``: comma-separated train losses of successive checkpoints.
- ``FAKE_RECORD_DIR``: write ``attempt-{n}.json`` with this worker's identity there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2

from danlu.common.v1 import common_pb2
from danlu.training.v1 import checkpoint_pb2, training_event_pb2, training_job_pb2
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu.training.worker.v1alpha1 import worker_service_pb2_grpc as wpb_grpc
from danlu_kit.objectstore import open_object_store
from danlu_kit.objectstore.artifacts import ArtifactWriter

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
RETRY_SECONDS = 60.0


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


ATTEMPT = int(env("DANLU_WORKER_ATTEMPT"))
SCOPED = env("FAKE_ATTEMPTS", "1") == "all" or str(ATTEMPT) in env("FAKE_ATTEMPTS", "1").split(",")


def scoped_step(name: str) -> int:
    return int(env(name, "0")) if SCOPED else 0


class Control:
    def __init__(self) -> None:
        self.channel = grpc.insecure_channel(env("DANLU_WORKER_CONTROL_TARGET"))
        self.stub = wpb_grpc.WorkerServiceStub(self.channel)
        self.identity = wpb.WorkerIdentity(
            training_job=env("DANLU_WORKER_JOB"), attempt=ATTEMPT, token=env("DANLU_WORKER_TOKEN")
        )
        self.batch = 0

    def call(self, method: str, request):
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return getattr(self.stub, method)(request, timeout=5)
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or time.monotonic() > deadline:
                    print(f"{method} failed: {err.code().name} {err.details()}", flush=True)
                    sys.exit(5)
                time.sleep(0.1)

    def report(self, *events: wpb.WorkerEvent) -> None:
        self.batch += 1
        self.call(
            "ReportEvents",
            wpb.ReportEventsRequest(
                worker=self.identity, batch_sequence=self.batch, rank=0, events=list(events)
            ),
        )

    def complete(self, code: int = code_pb2.OK, message: str = "") -> None:
        error = status_pb2.Status(code=code, message=message) if code else None
        self.call("CompleteWork", wpb.CompleteWorkRequest(worker=self.identity, error=error))


def now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def commit(control: Control, store, assignment, step: int, loss: float):
    prefix = f"{assignment.checkpoint_prefix}step-{step}"
    with ArtifactWriter(store, prefix) as writer:
        writer.add_file("adapter_model.safetensors", f"weights at step {step}".encode())
        writer.add_file("trainer_state.json", json.dumps({"step": step}).encode())
        manifest = writer.commit(producer="fake-worker")
    data = manifest.canonical_bytes()  # what manifest.json holds
    return control.call(
        "CommitCheckpoint",
        wpb.CommitCheckpointRequest(
            worker=control.identity,
            checkpoint=checkpoint_pb2.Checkpoint(
                name=f"{env('DANLU_WORKER_JOB')}/checkpoints/step-{step}",
                step=step,
                epoch=step / 10,
                train_loss=loss,
                manifest=common_pb2.ObjectRef(
                    key=f"{prefix}/manifest.json",
                    sha256=manifest.digest.removeprefix("sha256:"),
                    size_bytes=len(data),
                ),
                size_bytes=manifest.total_size_bytes,
            ),
        ),
    )


def main() -> None:
    control = Control()
    if record := env("FAKE_RECORD_DIR"):
        Path(record, f"attempt-{ATTEMPT}.json").write_text(
            json.dumps(
                {
                    "job": env("DANLU_WORKER_JOB"),
                    "attempt": ATTEMPT,
                    "token": env("DANLU_WORKER_TOKEN"),
                }
            )
        )
    assignment = control.call(
        "GetWorkerAssignment", wpb.GetWorkerAssignmentRequest(worker=control.identity)
    )
    store = open_object_store(
        env("DANLU_WORKER_OBJECT_STORE_URL"),
        access_key=env("DANLU_WORKER_S3_ACCESS_KEY") or None,
        secret_key=env("DANLU_WORKER_S3_SECRET_KEY") or None,
    )
    spec = assignment.spec
    total = spec.optimization.max_steps
    every = spec.checkpoint.every_n_steps
    losses = [float(x) for x in env("FAKE_LOSSES").split(",") if x]
    start = assignment.resume_from.step if assignment.HasField("resume_from") else 0
    checkpoints_done = start // every
    control.report(
        wpb.WorkerEvent(
            event_time=now(),
            log=training_event_pb2.LogLine(
                level=training_event_pb2.LOG_LEVEL_INFO, message=f"attempt {ATTEMPT} from {start}"
            ),
        )
    )
    for step in range(start + 1, total + 1):
        if step == scoped_step("FAKE_DIE_AT_STEP"):
            os._exit(3)
        if step == scoped_step("FAKE_HANG_AT_STEP"):
            time.sleep(3600)
        if step == scoped_step("FAKE_TRANSIENT_AT_STEP"):
            control.complete(code_pb2.UNAVAILABLE, "lost an NCCL peer")
            return
        beat = control.call("Heartbeat", wpb.HeartbeatRequest(worker=control.identity))
        if beat.cancel_requested and not env("FAKE_IGNORE_CANCEL"):
            control.complete(code_pb2.CANCELLED, "stopped on request")
            return
        time.sleep(float(env("FAKE_STEP_SECONDS", "0.02")))
        control.report(
            wpb.WorkerEvent(
                event_time=now(),
                metrics=training_job_pb2.TrainingMetrics(
                    step=step, loss=1.0 / step, epoch=step / 10
                ),
            ),
            wpb.WorkerEvent(
                event_time=now(), log=training_event_pb2.LogLine(message=f"step {step}")
            ),
        )
        if step % every == 0 or step == total:
            loss = losses[checkpoints_done] if checkpoints_done < len(losses) else 1.0 / step
            commit(control, store, assignment, step, loss)
            checkpoints_done += 1
    if message := env("FAKE_FAIL"):
        control.complete(code_pb2.INTERNAL, message)
    else:
        control.complete()


if __name__ == "__main__":
    main()

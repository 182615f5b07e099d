"""GrpcReporter and the worker program against an in-process fake WorkerService."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_status import rpc_status
from worker_helpers import JOB, base_spec

from danlu.training.v1 import checkpoint_pb2
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu.training.worker.v1alpha1 import worker_service_pb2_grpc as wgrpc
from danlu_kit.errors import FailedPrecondition
from danlu_kit.grpc_errors import status_for
from danlu_worker.main import EXIT_FAILED, EXIT_OK, work
from danlu_worker.reporter import INFO, GrpcReporter, StaleAttemptError
from danlu_worker.settings import WorkerSettings


class FakeWorkerService(wgrpc.WorkerServiceServicer):
    """Records what the worker sends; ``unavailable`` makes the next N calls fail as a
    restarting service would."""

    def __init__(self, assignment: wpb.WorkerAssignment | None = None) -> None:
        self.assignment = assignment
        self.lock = threading.Lock()
        self.unavailable = 0
        self.stale = False
        self.cancel = False
        self.batches: dict[int, list[wpb.WorkerEvent]] = {}
        self.batch_attempts: list[int] = []
        self.heartbeats = 0
        self.checkpoints: list[checkpoint_pb2.Checkpoint] = []
        self.completed: list[wpb.CompleteWorkRequest] = []

    def _gate(self, context) -> None:
        with self.lock:
            if self.stale:
                err = FailedPrecondition(message="attempt 1 was replaced", reason="STALE_ATTEMPT")
                context.abort_with_status(rpc_status.to_status(status_for(err)[1]))
            if self.unavailable:
                self.unavailable -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def GetWorkerAssignment(self, request, context):
        self._gate(context)
        assert request.worker.token == "secret"
        return self.assignment

    def ReportEvents(self, request, context):
        self.batch_attempts.append(request.batch_sequence)
        self._gate(context)
        with self.lock:
            self.batches.setdefault(request.batch_sequence, list(request.events))
        return empty_pb2.Empty()

    def Heartbeat(self, request, context):
        self._gate(context)
        self.heartbeats += 1
        return wpb.HeartbeatResponse(cancel_requested=self.cancel)

    def CommitCheckpoint(self, request, context):
        self._gate(context)
        self.checkpoints.append(request.checkpoint)
        return wpb.CommitCheckpointResponse(checkpoint=request.checkpoint)

    def CompleteWork(self, request, context):
        self._gate(context)
        self.completed.append(request)
        return empty_pb2.Empty()

    def events(self) -> list[wpb.WorkerEvent]:
        return [e for seq in sorted(self.batches) for e in self.batches[seq]]


@pytest.fixture
def service():
    fake = FakeWorkerService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    wgrpc.add_WorkerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fake.target = f"127.0.0.1:{port}"
    yield fake
    server.stop(None)


IDENTITY = wpb.WorkerIdentity(training_job=JOB, attempt=1, token="secret")


def _reporter(service, **kwargs) -> tuple[GrpcReporter, grpc.Channel]:
    channel = grpc.insecure_channel(service.target)
    options = {
        "retry_seconds": 10,
        "flush_interval": 0.05,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    options.update(kwargs)
    return GrpcReporter(channel, IDENTITY, **options), channel


def test_events_survive_a_restarting_service_in_order_and_once(service) -> None:
    reporter, channel = _reporter(service, max_batch=10)
    service.unavailable = 3
    for i in range(45):
        reporter.log(INFO, f"line {i}")
    reporter.flush(timeout=10)
    messages = [e.log.message for e in service.events()]
    assert messages == [f"line {i}" for i in range(45)]
    assert sorted(service.batches) == list(range(1, len(service.batches) + 1))
    assert len(service.batch_attempts) > len(service.batches)  # retried with the same number
    assert all(e.HasField("event_time") for e in service.events())
    reporter.close()
    channel.close()


def test_heartbeat_thread_raises_the_cancel_flag(service) -> None:
    reporter, channel = _reporter(service)
    reporter.start_heartbeats(0.2)
    assert not reporter.cancel_requested
    service.cancel = True
    for _ in range(50):
        if reporter.cancel_requested:
            break
        threading.Event().wait(0.1)
    assert reporter.cancel_requested and service.heartbeats >= 1
    reporter.close()
    channel.close()


def test_stale_attempt_fences_the_worker(service) -> None:
    reporter, channel = _reporter(service)
    service.stale = True
    with pytest.raises(StaleAttemptError):
        reporter.heartbeat()
    assert reporter.fenced and reporter.cancel_requested
    reporter.close(timeout=1)
    channel.close()


def _settings(service, tmp_path) -> WorkerSettings:
    return WorkerSettings.from_env(
        {
            "DANLU_WORKER_CONTROL_TARGET": service.target,
            "DANLU_WORKER_JOB": JOB,
            "DANLU_WORKER_ATTEMPT": "1",
            "DANLU_WORKER_TOKEN": "secret",
            "DANLU_WORKER_OBJECT_STORE_URL": f"file://{tmp_path / 'objects'}",
            "DANLU_WORKER_CACHE_DIR": str(tmp_path / "cache"),
            "DANLU_WORKER_RPC_RETRY_SECONDS": "10",
        }
    )


def test_the_worker_program_trains_reports_and_completes(
    service, make_assignment, store, tmp_path
) -> None:
    service.assignment = make_assignment(spec=base_spec(max_steps=2))
    service.unavailable = 1  # the first call finds the service restarting
    assert work(_settings(service, tmp_path), store=store) == EXIT_OK
    [completed] = service.completed
    assert not completed.HasField("error")
    events = service.events()
    assert [e.metrics.step for e in events if e.HasField("metrics")] == [1, 2]
    assert [e.evaluation.step for e in events if e.HasField("evaluation")] == [2]
    assert any("training finished" in e.log.message for e in events if e.HasField("log"))
    [checkpoint] = service.checkpoints
    assert checkpoint.name == f"{JOB}/checkpoints/step-2"


def test_the_worker_program_reports_cancel_and_failure(
    service, make_assignment, store, tmp_path
) -> None:
    service.assignment = make_assignment(spec=base_spec(max_steps=500))
    service.cancel = True  # learned from the first heartbeat
    assert work(_settings(service, tmp_path), store=store) == EXIT_OK
    assert service.completed[-1].error.code == grpc.StatusCode.CANCELLED.value[0]
    assert service.checkpoints == []

    service.cancel = False
    service.assignment = make_assignment([{"text": "raw text"}], spec=base_spec(max_steps=2))
    assert work(_settings(service, tmp_path), store=store) == EXIT_FAILED
    error = service.completed[-1].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "conversations" in error.message


def test_settings_name_every_missing_variable() -> None:
    with pytest.raises(Exception) as caught:
        WorkerSettings.from_env({"DANLU_WORKER_JOB": JOB})
    message = str(caught.value)
    assert "DANLU_WORKER_CONTROL_TARGET" in message and "DANLU_WORKER_TOKEN" in message
    assert "secret" not in repr(_settings_like())


def _settings_like() -> WorkerSettings:
    return WorkerSettings(
        control_target="h:1",
        training_job=JOB,
        attempt=1,
        token="secret",
        object_store_url="file:///x",
        s3_secret_key="secret",
    )


@pytest.mark.slow  # a real process start: imports torch, transformers and peft
def test_the_program_reads_its_environment_and_reports_sigterm_as_aborted(
    service, make_assignment, store, tmp_path
) -> None:
    """``python -m danlu_worker`` as a launcher starts it; a stopped pod reports ABORTED so
    the service can resume the job in a new attempt."""
    service.assignment = make_assignment(spec=base_spec(max_steps=100_000))
    env = {
        **os.environ,
        "DANLU_WORKER_CONTROL_TARGET": service.target,
        "DANLU_WORKER_JOB": JOB,
        "DANLU_WORKER_ATTEMPT": "1",
        "DANLU_WORKER_TOKEN": "secret",
        "DANLU_WORKER_OBJECT_STORE_URL": f"file://{store.root}",
        "DANLU_WORKER_CACHE_DIR": str(tmp_path / "cache"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "danlu_worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(e.HasField("metrics") for e in service.events()):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
        process.stderr.close()
    error = service.completed[-1].error
    assert error.code == grpc.StatusCode.ABORTED.value[0]
    assert "SIGTERM" in error.message
    assert service.checkpoints == []

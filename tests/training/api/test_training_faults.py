"""Fault tests on real processes: a worker killed or silent is replaced by a new attempt that
resumes from the newest checkpoint; attempts run out; replaced workers are fenced off; the
service restarts mid-run and loses nothing."""

from __future__ import annotations

import json
import time

import pytest
from google.rpc import code_pb2

from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_client.errors import FailedPreconditionError, UnauthenticatedError
from danlu_training.core.records import JobState
from tests.fixtures.training import kinds_of, make_spec, states_of


def resumed(events):
    return [e.resumed for e in events if e.WhichOneof("payload") == "resumed"]


def test_dead_worker_is_resumed_from_its_newest_checkpoint(start_training, tmp_path):
    records = tmp_path / "identities"
    records.mkdir()
    training = start_training(worker_env={"FAKE_DIE_AT_STEP": 5, "FAKE_RECORD_DIR": records})
    api = training.api()
    job = api.wait(api.create().name, timeout=60)
    assert job.state == JobState.SUCCEEDED, training.worker_log(job.name, 2)
    assert job.attempt == 2
    events = api.events(job.name)
    [again] = resumed(events)
    assert (again.attempt, again.from_step) == (2, 4)
    assert "exited (code 3)" in again.reason
    assert states_of(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]  # still RUNNING across
    metrics = [(e.attempt, e.metrics.step) for e in events if e.WhichOneof("payload") == "metrics"]
    assert metrics == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 5), (2, 6)]

    # The replaced attempt is fenced off; a wrong token is refused outright.
    first = json.loads((records / "attempt-1.json").read_text())
    stale = wpb.WorkerIdentity(training_job=job.name, attempt=1, token=first["token"])
    with pytest.raises(FailedPreconditionError) as info:
        api.call("Heartbeat", wpb.HeartbeatRequest(worker=stale), api.worker)
    assert info.value.reason == "STALE_ATTEMPT"
    with pytest.raises(FailedPreconditionError) as info:
        api.call(
            "ReportEvents",
            wpb.ReportEventsRequest(worker=stale, batch_sequence=99, events=[]),
            api.worker,
        )
    assert info.value.reason == "STALE_ATTEMPT"
    forged = wpb.WorkerIdentity(training_job=job.name, attempt=2, token="dl_guess")
    with pytest.raises(UnauthenticatedError):
        api.call("CompleteWork", wpb.CompleteWorkRequest(worker=forged), api.worker)


def test_silent_worker_is_killed_and_replaced(start_training):
    training = start_training(worker_env={"FAKE_HANG_AT_STEP": 3})
    api = training.api()
    job = api.wait(api.create().name, timeout=60)
    assert job.state == JobState.SUCCEEDED and job.attempt == 2
    [again] = resumed(api.events(job.name))
    assert again.from_step == 2 and "no heartbeat" in again.reason


def test_attempts_run_out(start_training):
    training = start_training(worker_env={"FAKE_DIE_AT_STEP": 2, "FAKE_ATTEMPTS": "all"})
    api = training.api()
    job = api.wait(api.create().name, timeout=60)
    assert job.state == JobState.FAILED and job.attempt == 3
    assert job.error.code == code_pb2.ABORTED
    assert "attempt 3 of 3" in job.error.message
    events = api.events(job.name)
    assert [r.attempt for r in resumed(events)] == [2, 3]
    assert states_of(events)[-1] == "FAILED"
    assert events[-1].state_changed.message == job.error.message


def test_transient_failure_report_starts_a_new_attempt(start_training):
    training = start_training(worker_env={"FAKE_TRANSIENT_AT_STEP": 4})
    api = training.api()
    job = api.wait(api.create().name, timeout=60)
    assert job.state == JobState.SUCCEEDED and job.attempt == 2
    [again] = resumed(api.events(job.name))
    assert again.from_step == 2 and "NCCL" in again.reason


def test_worker_failure_fails_the_job_with_its_error(start_training):
    training = start_training(worker_env={"FAKE_FAIL": "CUDA out of memory"})
    api = training.api()
    job = api.wait(api.create().name)
    assert job.state == JobState.FAILED and job.attempt == 1
    assert (job.error.code, job.error.message) == (code_pb2.INTERNAL, "CUDA out of memory")


def test_service_restart_mid_run_loses_nothing(start_training):
    training = start_training(
        worker_env={"FAKE_STEP_SECONDS": "0.15"}, heartbeat_timeout_seconds="5"
    )
    api = training.api()
    job = api.create(make_spec("optimization.max_steps=14"))
    api.wait(job.name, JobState.RUNNING)
    time.sleep(0.6)
    training.stop()  # the worker keeps running and retries its calls
    time.sleep(1.0)
    training.start()  # same port, same database, a new scheduler and launcher
    api = training.api()
    done = api.wait(job.name, timeout=60)
    assert done.state == JobState.SUCCEEDED, training.worker_log(job.name)
    assert done.attempt == 1  # adopted, not relaunched
    events = api.events(job.name)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert "resumed" not in kinds_of(events)
    steps = [e.metrics.step for e in events if e.WhichOneof("payload") == "metrics"]
    assert steps == list(range(1, 15))  # retried batches applied once
    committed = [
        e.checkpoint_committed.step
        for e in events
        if e.WhichOneof("payload") == "checkpoint_committed"
    ]
    assert committed == [2, 4, 6, 8, 10, 12, 14]


def test_worker_lost_while_the_service_is_down_is_replaced_after_restart(start_training):
    training = start_training(worker_env={"FAKE_STEP_SECONDS": "0.15"})
    api = training.api()
    job = api.create(make_spec("optimization.max_steps=10"))
    api.wait(job.name, JobState.RUNNING)
    training.stop()
    for launcher in training.launchers:
        launcher.kill_all()  # the machine lost the worker too
    training.start()
    done = training.api().wait(job.name, timeout=60)
    assert done.state == JobState.SUCCEEDED and done.attempt == 2
    [again] = resumed(training.api().events(job.name))
    assert "exited" in again.reason

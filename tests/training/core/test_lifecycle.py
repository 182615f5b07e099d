"""The job state machine: legal transitions record their event, illegal ones are impossible,
and a lost attempt either resumes from the newest kept checkpoint or fails the job."""

from __future__ import annotations

import itertools

import pytest
from google.rpc import code_pb2, error_details_pb2
from training_fakes import NOW, FakeTransaction, make_job

from danlu_kit.errors import FailedPrecondition
from danlu_training.core.lifecycle import TRANSITIONS, change_state, error_status, lose_attempt
from danlu_training.core.records import CheckpointRecord, JobState, ObjectRef


def checkpoint(step: int, kept: bool = True) -> CheckpointRecord:
    return CheckpointRecord(
        "p", "j", step, 0.0, 1.0, None, [], ObjectRef("k", "s", 1), 1, NOW, kept=kept
    )


LEGAL = [(source, target) for source, targets in TRANSITIONS.items() for target in targets]
ILLEGAL = [pair for pair in itertools.product(JobState, JobState) if pair not in LEGAL]


def test_the_documented_lifecycle():
    assert TRANSITIONS[JobState.QUEUED] == {JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}
    assert JobState.CANCELLING in TRANSITIONS[JobState.RUNNING]
    assert JobState.QUEUED not in {t for targets in TRANSITIONS.values() for t in targets}
    assert not any(state.terminal for state in TRANSITIONS)  # nothing leaves a terminal state


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{a.name}->{b.name}" for a, b in LEGAL])
def test_legal_transition_records_its_event(source, target):
    tx = FakeTransaction(make_job(source, attempt=1))
    change_state(tx, target, "why", NOW)
    assert tx.job.state == target
    [event] = tx.events
    assert event.kind == "state_changed"
    assert (event.payload.previous_state, event.payload.state) == (source, target)
    assert event.payload.message == "why"
    assert (tx.job.end_time == NOW) == target.terminal
    if target == JobState.RUNNING:
        assert tx.job.start_time == NOW
    if target == JobState.FAILED:
        assert tx.job.error.message == "why"


@pytest.mark.parametrize(
    ("source", "target"), ILLEGAL, ids=[f"{a.name}->{b.name}" for a, b in ILLEGAL]
)
def test_illegal_transition_is_refused_without_an_event(source, target):
    tx = FakeTransaction(make_job(source))
    with pytest.raises(FailedPrecondition) as info:
        change_state(tx, target, "no", NOW)
    assert info.value.reason == "ILLEGAL_TRANSITION"
    assert tx.job.state == source and tx.events == []


def test_failed_job_keeps_the_given_error():
    tx = FakeTransaction(make_job(JobState.RUNNING, 1))
    error = error_status(code_pb2.INTERNAL, "CUDA out of memory", "WORKER_FAILED")
    change_state(tx, JobState.FAILED, "CUDA out of memory", NOW, error=error)
    info = error_details_pb2.ErrorInfo()
    tx.job.error.details[0].Unpack(info)
    assert (tx.job.error.code, info.reason) == (code_pb2.INTERNAL, "WORKER_FAILED")


def test_lost_attempt_resumes_from_newest_kept_checkpoint():
    job = make_job(JobState.RUNNING, attempt=1)
    tx = FakeTransaction(job, [checkpoint(2), checkpoint(4), checkpoint(6, kept=False)])
    lose_attempt(tx, "worker killed", NOW, max_attempts=3)
    assert (job.state, job.attempt, job.launch_pending) == (JobState.RUNNING, 2, True)
    [event] = tx.events
    assert event.kind == "resumed" and event.attempt == 2
    assert (event.payload.attempt, event.payload.from_step) == (2, 4)
    assert event.payload.reason == "worker killed"


def test_lost_attempt_without_checkpoint_starts_over():
    tx = FakeTransaction(make_job(JobState.QUEUED, attempt=1))
    lose_attempt(tx, "never called in", NOW, max_attempts=3)
    assert tx.job.state == JobState.QUEUED and tx.events[0].payload.from_step == 0


def test_last_attempt_lost_fails_the_job():
    tx = FakeTransaction(make_job(JobState.RUNNING, attempt=3))
    lose_attempt(tx, "no heartbeat for 60 s", NOW, max_attempts=3)
    assert tx.job.state == JobState.FAILED and tx.job.attempt == 3
    assert tx.job.error.code == code_pb2.ABORTED
    assert "no heartbeat" in tx.job.error.message
    info = error_details_pb2.ErrorInfo()
    tx.job.error.details[0].Unpack(info)
    assert info.reason == "ATTEMPTS_EXHAUSTED"


def test_lost_attempt_of_a_cancelling_job_ends_it():
    tx = FakeTransaction(make_job(JobState.CANCELLING, attempt=1))
    lose_attempt(tx, "killed after the grace period", NOW, max_attempts=3)
    assert tx.job.state == JobState.CANCELLED and tx.job.attempt == 1

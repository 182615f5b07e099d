"""Cancelling queued and running jobs, and the capacity the scheduler respects."""

from __future__ import annotations

import pytest

from danlu_client.errors import FailedPreconditionError
from danlu_training.core.records import JobState
from tests.fixtures.training import make_spec, states_of

LONG = make_spec("optimization.max_steps=200")


@pytest.fixture
def slow(start_training):
    return start_training(worker_env={"FAKE_STEP_SECONDS": "0.05"})


def test_cancel_running_job_stops_its_worker(slow):
    api = slow.api()
    job = api.create(LONG)
    api.wait(job.name, JobState.RUNNING)
    cancelling = api.cancel(job.name)
    assert cancelling.state in (JobState.CANCELLING, JobState.CANCELLED)
    assert api.cancel(job.name).state in (JobState.CANCELLING, JobState.CANCELLED)  # unchanged
    done = api.wait(job.name)
    assert done.state == JobState.CANCELLED and not done.HasField("error")
    events = api.events(job.name)
    assert states_of(events) == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]
    assert events[-1].state_changed.message == "cancelled by user"
    assert done.progress.completed < 200
    assert api.cancel(job.name).state == JobState.CANCELLED  # unchanged
    finished = api.wait(api.create(make_spec("optimization.max_steps=1")).name)
    with pytest.raises(FailedPreconditionError) as info:
        api.cancel(finished.name)
    assert info.value.reason == "JOB_FINISHED"


def test_worker_ignoring_cancel_is_killed_after_the_grace_period(start_training):
    training = start_training(worker_env={"FAKE_STEP_SECONDS": "0.05", "FAKE_IGNORE_CANCEL": "1"})
    api = training.api()
    job = api.create(LONG)
    api.wait(job.name, JobState.RUNNING)
    api.cancel(job.name)
    done = api.wait(job.name, timeout=20)
    assert done.state == JobState.CANCELLED
    assert "killed" in api.events(job.name)[-1].state_changed.message
    assert done.progress.completed < 200


def test_capacity_one_queue_in_order_and_cancel_queued(slow):
    api = slow.api()
    first = api.create(make_spec("optimization.max_steps=20"), job_id="first")
    second = api.create(job_id="second")
    third = api.create(job_id="third")
    api.wait(first.name, JobState.RUNNING)
    assert api.get(second.name).state == JobState.QUEUED
    assert api.get(second.name).attempt == 0

    cancelled = api.cancel(third.name)  # queued: cancelled at once
    assert cancelled.state == JobState.CANCELLED and cancelled.attempt == 0
    assert states_of(api.events(third.name)) == ["QUEUED", "CANCELLED"]

    while api.get(first.name).state == JobState.RUNNING:
        assert api.get(second.name).state == JobState.QUEUED  # waits for the slot
    assert api.wait(first.name).state == JobState.SUCCEEDED
    assert api.wait(second.name).state == JobState.SUCCEEDED
    assert api.get(second.name).start_time.ToDatetime() >= api.get(first.name).end_time.ToDatetime()
    assert api.get(third.name).attempt == 0  # never ran


def test_two_slots_run_two_jobs_at_once(start_training):
    api = start_training(worker_env={"FAKE_STEP_SECONDS": "0.05"}, max_concurrent_jobs="2").api()
    a, b = api.create(LONG), api.create(LONG)
    api.wait(a.name, JobState.RUNNING)
    api.wait(b.name, JobState.RUNNING)
    for job in (a, b):
        api.cancel(job.name)
        assert api.wait(job.name).state == JobState.CANCELLED


def test_jobs_that_need_gpus_are_refused_without_them(api):
    with pytest.raises(FailedPreconditionError) as info:
        api.create(make_spec("resources.gpus_per_node=1"))
    assert info.value.reason == "CAPABILITY_MISSING"
    assert info.value.violations[0].field == "spec.resources.gpus_per_node"
    with pytest.raises(FailedPreconditionError) as info:
        api.create(make_spec("resources.nodes=2"))
    assert info.value.violations[0].field == "spec.resources.nodes"

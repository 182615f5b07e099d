"""WatchTrainingJob: events in order from a cursor; with follow, until the job is terminal and
every event was sent; a client that reconnects with its last sequence misses nothing."""

from __future__ import annotations

import itertools

import pytest

from danlu.training.v1 import training_event_pb2 as ev
from danlu_client.errors import NotFoundError
from danlu_training.core.records import JobState
from tests.fixtures.training import make_spec, states_of


@pytest.fixture
def slow(start_training):
    return start_training(worker_env={"FAKE_STEP_SECONDS": "0.1"})


def test_follow_streams_everything_and_ends_after_the_terminal_event(slow):
    api = slow.api()
    job = api.create(make_spec("optimization.max_steps=8"))
    streamed = list(api.watch(job.name, follow=True))
    assert [e.sequence for e in streamed] == list(range(1, len(streamed) + 1))
    assert states_of(streamed) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert streamed[-1].state_changed.state == JobState.SUCCEEDED
    assert streamed == api.events(job.name)


def test_reconnecting_from_the_last_sequence_misses_nothing(slow):
    api = slow.api()
    job = api.create(make_spec("optimization.max_steps=10"))
    first = list(itertools.islice(api.watch(job.name, follow=True), 4))  # then hang up
    rest = list(api.watch(job.name, after=first[-1].sequence, follow=True))
    sequences = [e.sequence for e in first + rest]
    assert sequences == list(range(1, len(sequences) + 1))
    assert states_of(rest)[-1] == "SUCCEEDED"


def test_without_follow_the_stream_ends_with_what_is_recorded(api):
    job = api.wait(api.create().name)
    total = len(api.events(job.name))
    tail = list(api.watch(job.name, after=total - 3, follow=False))
    assert [e.sequence for e in tail] == [total - 2, total - 1, total]
    assert list(api.watch(job.name, after=total, follow=True)) == []  # terminal: ends at once


def test_type_filter(api):
    job = api.create()
    metrics = list(api.watch(job.name, follow=True, types=[ev.TRAINING_EVENT_TYPE_METRICS]))
    assert [e.metrics.step for e in metrics] == [1, 2, 3, 4, 5, 6]


def test_watch_unknown_job(api):
    with pytest.raises(NotFoundError):
        list(api.watch("missing"))

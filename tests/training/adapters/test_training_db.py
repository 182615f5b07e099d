"""The training tables: migrations build exactly what the models declare (SQLite and
PostgreSQL), and event sequences stay gap-free and unique under concurrent writers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from danlu.training.v1 import training_event_pb2, training_job_pb2
from danlu_kit.db import make_engine
from danlu_kit.errors import AlreadyExists
from danlu_training.adapters.db import VERSION_TABLE, Base, TrainingRepository
from danlu_training.core.records import JobRecord, JobState, PinnedInputs


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/training.db"
    return request.getfixturevalue("fresh_postgres_url")


def test_migrations_match_models_and_are_idempotent(database_url):
    engine = make_engine(database_url)
    repository = TrainingRepository(engine)
    repository.migrate()
    repository.migrate()  # a restarted service migrates again: nothing to do
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    ours = [
        d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
    ]
    assert ours == []
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == "0001"
    engine.dispose()


def _job(job_id: str) -> JobRecord:
    now = datetime.now(UTC)
    spec = training_job_pb2.TrainingJobSpec(base_model="projects/p/models/m")
    return JobRecord(
        project="p",
        job_id=job_id,
        spec=spec,
        resolved_spec=spec,
        inputs=PinnedInputs("projects/p/models/m", "sha256:x", (), ()),
        create_time=now,
        update_time=now,
        labels={"team": "nlp"},
    )


def test_concurrent_writers_number_events_without_gaps(database_url):
    notified = []
    repository = TrainingRepository(make_engine(database_url), on_events=lambda: notified.append(1))
    repository.migrate()
    created = training_event_pb2.StateChanged(state=int(JobState.QUEUED))
    repository.insert_job(_job("j"), ("state_changed", created))
    with pytest.raises(AlreadyExists):
        repository.insert_job(_job("j"), ("state_changed", created))

    def write(worker: int) -> None:
        for i in range(10):
            with repository.job_transaction("p", "j") as tx:
                tx.emit("log", training_event_pb2.LogLine(message=f"{worker}/{i}"))
                tx.emit("log", training_event_pb2.LogLine(message=f"{worker}/{i} again"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = repository.list_events("p", "j", 0, [], 1000)
    assert [e.sequence for e in events] == list(range(1, 82))
    # Each transaction's two events are adjacent: the row lock serialised the writers.
    logs = [e.payload.message for e in events[1:]]
    assert all(logs[i + 1] == logs[i] + " again" for i in range(0, 80, 2))
    assert len(notified) == 41
    assert repository.list_events("p", "j", 79, ["log"], 10)[0].sequence == 80
    job = repository.get_job("p", "j")
    assert job.labels == {"team": "nlp"} and job.state == JobState.QUEUED
    repository.engine.dispose()


def test_a_failed_transaction_changes_nothing(tmp_path):
    repository = TrainingRepository(make_engine(f"sqlite:///{tmp_path}/t.db"))
    repository.migrate()
    repository.insert_job(_job("j"), ("state_changed", training_event_pb2.StateChanged()))
    with pytest.raises(RuntimeError), repository.job_transaction("p", "j") as tx:
        tx.job.attempt = 7
        tx.emit("log", training_event_pb2.LogLine(message="lost"))
        raise RuntimeError("boom")
    assert repository.get_job("p", "j").attempt == 0
    assert len(repository.list_events("p", "j", 0, [], 10)) == 1

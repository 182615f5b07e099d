"""The job machinery with a stand-in for the work: cancel, restart recovery, delete, idempotency."""

from __future__ import annotations

import threading
import time

import pytest

from danlu.common.v1 import common_pb2 as S
from danlu.conversion.v1 import conversion_job_pb2 as cj
from danlu_conversion.adapters.db import ConversionRepository
from danlu_conversion.core import jobs as jobs_module
from danlu_conversion.core.jobs import Jobs, Runtime
from danlu_kit.db import make_engine
from danlu_kit.errors import Cancelled, FailedPrecondition

MERGE = cj.ConversionJob(merge=cj.MergeSpec(adapter_model="projects/p/models/a", model_id="m"))


def _jobs(tmp_path) -> Jobs:
    repo = ConversionRepository(make_engine(f"sqlite:///{tmp_path}/c.db"))
    repo.migrate()
    return Jobs(
        repo, Runtime(registry=lambda project, token: None, store=None, scratch_dir=tmp_path)
    )


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cancel_stops_a_running_job_between_tensors(tmp_path, monkeypatch):
    started = threading.Event()

    def slow_merge(registry, *, cancelled, progress, **kwargs):
        for i in range(1000):
            started.set()
            progress(i + 1, 1000, f"t{i}")
            if cancelled():
                raise Cancelled(message="cancelled", reason="CANCELLED")
            time.sleep(0.01)
        pytest.fail("not cancelled")

    monkeypatch.setattr(jobs_module.operations, "merge_and_register", slow_merge)
    jobs = _jobs(tmp_path)
    job = jobs.create("p", MERGE, "j1", "")
    assert started.wait(10)
    assert jobs.cancel("p", "j1").state == S.JOB_STATE_CANCELLING
    _until(lambda: jobs.get("p", "j1").state == S.JOB_STATE_CANCELLED)
    states = [
        e.state_changed.state
        for e in jobs.repo.events("p", "j1", 0)
        if e.WhichOneof("payload") == "state_changed"
    ]
    assert states == [
        S.JOB_STATE_QUEUED,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_CANCELLING,
        S.JOB_STATE_CANCELLED,
    ]
    assert job.name == "projects/p/conversionJobs/j1"
    jobs.delete("p", "j1")
    jobs.shutdown()


def test_unfinished_jobs_fail_on_restart_and_running_ones_cannot_be_deleted(tmp_path, monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(
        jobs_module.operations, "merge_and_register", lambda *a, **k: gate.wait(10) and None
    )
    jobs = _jobs(tmp_path)
    jobs.create("p", MERGE, "j2", "req-1")
    assert jobs.create("p", MERGE, "other-id", "req-1").name.endswith("/j2")  # a retry
    _until(lambda: jobs.get("p", "j2").state == S.JOB_STATE_RUNNING)
    with pytest.raises(FailedPrecondition):
        jobs.delete("p", "j2")
    again = _jobs(tmp_path)  # a new process on the same database
    again.recover()
    failed = again.get("p", "j2")
    assert failed.state == S.JOB_STATE_FAILED
    assert "restarted" in failed.error.message
    gate.set()
    jobs.shutdown()


def test_repository_on_postgresql_lists_in_pages(fresh_postgres_url, tmp_path):
    repo = ConversionRepository(make_engine(fresh_postgres_url))
    repo.migrate()
    jobs = Jobs(
        repo, Runtime(registry=lambda project, token: None, store=None, scratch_dir=tmp_path)
    )
    jobs._pool.submit = lambda *a, **k: None  # keep them QUEUED: this is about storage
    names = [jobs.create("p", MERGE, f"j{i}", "").name for i in range(3)]
    first = jobs.list_jobs("p", 0, None, 2)
    assert [j.name for j in first] == names[:2]
    last = first[-1]
    after = [last.create_time.ToDatetime().isoformat(), last.name.rsplit("/", 1)[1]]
    assert [j.name for j in jobs.list_jobs("p", 0, after, 2)] == names[2:]
    assert jobs.cancel("p", "j0").state == S.JOB_STATE_CANCELLED
    assert [j.name for j in jobs.list_jobs("p", S.JOB_STATE_QUEUED, None, 10)] == names[1:]
    assert [e.sequence for e in repo.events("p", "j0", 0)] == [1, 2]
    repo.engine.dispose()


def test_another_projects_inputs_are_not_found() -> None:
    """Whatever token the service uses towards the registry, a job only reads its own project."""
    from danlu.conversion.v1 import conversion_job_pb2 as cj
    from danlu_kit.errors import NotFound

    resolve = Jobs._resolve
    merge = cj.ConversionJob(
        merge=cj.MergeSpec(
            base_model="projects/alpha/models/tiny",
            adapter_model="projects/beta/models/ad",
            model_id="m",
        )
    )
    with pytest.raises(NotFound) as info:
        resolve(None, "beta", merge)
    assert info.value.metadata["field"] == "conversion_job.merge.base_model"
    convert = cj.ConversionJob(
        convert_checkpoint=cj.ConvertCheckpointSpec(
            checkpoint="projects/alpha/trainingJobs/j/checkpoints/step-2", model_id="a"
        )
    )
    with pytest.raises(NotFound):
        resolve(None, "beta", convert)

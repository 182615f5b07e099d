"""The scheduler's decisions on an in-memory queue: capacity per pool in FIFO order, a token
per attempt, and launch failures counted as lost attempts."""

from __future__ import annotations

from training_fakes import FakeRepository, make_job

from danlu_kit.auth import hash_token
from danlu_training.core.ports import WorkerStatus
from danlu_training.core.records import JobState
from danlu_training.core.scheduler import Scheduler, SchedulerConfig
from danlu_training.core.signals import ChangeSignal


class FakeLauncher:
    max_nodes = 1

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.launched: dict[str, dict] = {}
        self.running: set[str] = set()

    def launch(self, request):
        if self.fail:
            raise RuntimeError("no such executable")
        handle = f"{request.job}#{request.attempt}"
        self.launched[handle] = dict(request.env)
        self.running.add(handle)
        return handle

    def poll(self, handle):
        return WorkerStatus(running=handle in self.running, exit_code=None)

    def kill(self, handle):
        self.running.discard(handle)


def scheduler(repo, launcher, gpus=4, cpu_slots=1) -> Scheduler:
    config = SchedulerConfig(
        cpu_slots=cpu_slots,
        gpus=gpus,
        max_attempts=2,
        heartbeat_timeout_seconds=60,
        cancel_grace_seconds=10,
    )
    return Scheduler(repo, launcher, config, lambda: {"DANLU_WORKER_X": "1"}, ChangeSignal())


def test_capacity_per_pool_in_queue_order():
    jobs = [
        make_job(job_id="gpu-a", gpus=2, order=1),
        make_job(job_id="gpu-b", gpus=4, order=2),  # does not fit next to gpu-a
        make_job(job_id="cpu-c", order=3),
        make_job(job_id="gpu-d", gpus=1, order=4),  # would fit, but waits behind gpu-b
        make_job(job_id="cpu-e", order=5),  # the only CPU slot is taken
    ]
    repo, launcher = FakeRepository(jobs), FakeLauncher()
    s = scheduler(repo, launcher)
    s.tick()
    started = {j.job_id for j in repo.jobs.values() if j.attempt}
    assert started == {"gpu-a", "cpu-c"}
    for job_id in started:
        job = repo.jobs[job_id]
        env = launcher.launched[job.launch_handle]
        assert env["DANLU_WORKER_ATTEMPT"] == "1" and env["DANLU_WORKER_X"] == "1"
        assert job.worker_tokens == {"1": hash_token(env["DANLU_WORKER_TOKEN"])}
        assert not job.launch_pending and job.launch_attempt == 1

    # gpu-a ends (its worker exits by itself): gpu-b gets all four GPUs, gpu-d still waits.
    repo.jobs["gpu-a"].state = JobState.SUCCEEDED
    launcher.running.discard(repo.jobs["gpu-a"].launch_handle)
    s.tick()
    assert repo.jobs["gpu-a"].launch_handle == ""  # forgotten once gone
    assert repo.jobs["gpu-b"].attempt == 1 and repo.jobs["gpu-d"].attempt == 0
    assert repo.jobs["cpu-e"].attempt == 0


def test_workers_of_finished_or_replaced_attempts_are_stopped():
    repo, launcher = FakeRepository([make_job(job_id="j")]), FakeLauncher()
    s = scheduler(repo, launcher)
    s.tick()
    first = repo.jobs["j"].launch_handle
    repo.jobs["j"].attempt = 2  # replaced (e.g. CompleteWork with UNAVAILABLE)
    repo.jobs["j"].launch_pending = True
    s.tick()
    assert first not in launcher.running
    assert repo.jobs["j"].launch_handle.endswith("#2") and repo.jobs["j"].launch_attempt == 2


def test_a_worker_that_cannot_start_uses_up_the_attempts():
    repo = FakeRepository([make_job(job_id="j")])
    s = scheduler(repo, FakeLauncher(fail=True))
    s.tick()
    job = repo.jobs["j"]
    assert (job.state, job.attempt, job.launch_pending) == (JobState.QUEUED, 2, True)
    s.tick()
    job = repo.jobs["j"]
    assert job.state == JobState.FAILED and "no such executable" in job.error.message
    assert [e.kind for e in repo.events["j"]] == ["resumed", "state_changed"]


def test_a_vanished_worker_is_replaced_with_a_resumed_event():
    repo, launcher = FakeRepository([make_job(job_id="j")]), FakeLauncher()
    s = scheduler(repo, launcher)
    s.tick()
    launcher.running.clear()  # the process died without a word
    s.tick()
    job = repo.jobs["j"]
    assert job.attempt == 2 and job.launch_handle.endswith("#2")
    [resumed] = [e for e in repo.events["j"] if e.kind == "resumed"]
    assert resumed.payload.attempt == 2 and "exited" in resumed.payload.reason

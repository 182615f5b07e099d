"""The local process launcher: workers in their own session with their output in a log file,
found again by a new launcher (a restarted service) through their pid and environment."""

from __future__ import annotations

import time

from danlu_training.adapters.launchers import LocalProcessLauncher
from danlu_training.core.ports import LaunchRequest

JOB = "projects/p/trainingJobs/j"


def request(attempt: int = 1) -> LaunchRequest:
    env = {"DANLU_WORKER_JOB": JOB, "DANLU_WORKER_ATTEMPT": str(attempt)}
    return LaunchRequest(job=JOB, attempt=attempt, env=env, gpus_per_node=0, nodes=1)


def wait_exit(launcher, handle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (status := launcher.poll(handle)).running:
        assert time.monotonic() < deadline, "the worker did not exit"
        time.sleep(0.05)
    return status


def test_worker_output_and_exit_code(tmp_path):
    script = "import os; print('hello from', os.environ['DANLU_WORKER_JOB'], flush=True); raise SystemExit(7)"
    launcher = LocalProcessLauncher(
        tmp_path / "logs",
        gpus=0,
        worker=["-c", script],
        credentials={"DANLU_WORKER_S3_ACCESS_KEY": "k"},
    )
    handle = launcher.launch(request())
    assert wait_exit(launcher, handle).exit_code == 7
    log = tmp_path / "logs" / "p" / "j" / "attempt-1.log"
    assert log.read_text() == f"hello from {JOB}\n"


def test_a_new_launcher_adopts_and_kills_running_workers(tmp_path):
    script = "import time; time.sleep(60)"
    first = LocalProcessLauncher(tmp_path, gpus=0, worker=["-c", script])
    handle = first.launch(request(attempt=2))
    try:
        after_restart = LocalProcessLauncher(tmp_path, gpus=0, worker=["-c", script])
        deadline = time.monotonic() + 10
        while not after_restart.poll(handle).running:  # found through /proc, not as a child
            assert time.monotonic() < deadline, "the running worker was not found"
            time.sleep(0.05)
        # A pid whose environment names another attempt is not this worker.
        other = handle.replace("attempt=2", "attempt=1")
        assert not after_restart.poll(other).running
        after_restart.kill(other)  # not ours: left alone
        assert first.poll(handle).running
        after_restart.kill(handle)
        status = wait_exit(first, handle)
        assert status.exit_code == -9
        assert not after_restart.poll(handle).running
    finally:
        first.kill_all()


def test_capabilities_without_gpus(tmp_path):
    caps = LocalProcessLauncher(tmp_path, gpus=0).capabilities()
    assert (caps.cuda, caps.gpus, caps.bitsandbytes) == (False, 0, False)

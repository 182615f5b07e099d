"""Automatic resume with the real worker: kill -9 the worker mid-run; the service starts a new
attempt from the newest committed checkpoint, and the final weights equal an uninterrupted
run's (same seed, CPU, deterministic)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest
from safetensors.torch import load

from danlu_client import Client
from danlu_embedded.up import embedded_components
from danlu_kit.server import ServerOptions
from danlu_training.core.configs import get_config
from danlu_training.core.records import JobState
from danlu_training.core.spec import apply_overrides
from danlu_training.service import TrainingComponent
from tests.fixtures.servers import ServerThread
from tests.fixtures.training import TrainingApi

IDENTITY = {
    "messages": [
        {"role": "user", "content": "请介绍一下你自己"},
        {"role": "assistant", "content": "我是一个由丹炉微调的个人助手。"},
    ]
}
OVERRIDES = [
    "optimization.max_steps=8",
    "checkpoint.every_n_steps=2",
    "checkpoint.keep=-1",
    "evaluation.every_n_steps=4",
    "evaluation.max_new_tokens=4",
]


def worker_pids(job: str) -> list[int]:
    pids = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("DANLU_WORKER_JOB") == job:
                pids.append(process.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return pids


def final_adapter(training: TrainingComponent, api: TrainingApi, job: str) -> dict:
    last = api.checkpoints(job)[-1]
    prefix = last.manifest.key.rsplit("/", 1)[0]
    return load(training.store.get_bytes(f"{prefix}/adapter_model.safetensors"))


@pytest.mark.slow
def test_killed_worker_resumes_to_identical_weights(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DANLU_TRAINING_GPUS", "0")
    server: ServerThread | None = None
    server = ServerThread(
        lambda: embedded_components(tmp_path / "data", lambda: server.target), ServerOptions(port=0)
    ).start()
    training = next(c for c in server.server.components if isinstance(c, TrainingComponent))
    try:
        data = tmp_path / "assistant.jsonl"
        data.write_text((json.dumps(IDENTITY, ensure_ascii=False) + "\n") * 64)
        with Client(server.target) as client:
            client.registry.push_model(tiny_model_dir, "tiny")
            client.registry.push_dataset(data, "assistant")
        spec = apply_overrides(get_config("tiny_lora_cpu").spec, OVERRIDES)
        api = TrainingApi(server.target)

        reference = api.create(spec, job_id="uninterrupted")
        assert api.wait(reference.name, JobState.SUCCEEDED, timeout=300).state == JobState.SUCCEEDED

        job = api.create(spec, job_id="killed")
        killed = False
        for event in api.watch(job.name, follow=True):
            kind = event.WhichOneof("payload")
            if (
                kind == "checkpoint_committed"
                and event.checkpoint_committed.step == 4
                and not killed
            ):
                pids = worker_pids(job.name)
                assert pids, "the worker process should be running"
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed = True
        done = api.get(job.name)
        assert killed and done.state == JobState.SUCCEEDED, done
        assert done.attempt == 2
        resumed = [e.resumed for e in api.events(job.name) if e.WhichOneof("payload") == "resumed"]
        assert len(resumed) == 1 and resumed[0].from_step == 4

        expected = final_adapter(training, api, reference.name)
        actual = final_adapter(training, api, job.name)
        assert expected.keys() == actual.keys() and expected
        for name, tensor in expected.items():
            assert (tensor == actual[name]).all(), f"{name} differs after resume"
    finally:
        server.stop()
        training.launcher.kill_all()
        time.sleep(0.1)

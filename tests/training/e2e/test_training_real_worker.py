"""End to end with the real worker: `danlu up`'s composition (registry, training and the rest in
one server, SQLite + local object store), the tiny model, the tiny_lora_cpu config shortened,
a real `python -m danlu_worker` process training on CPU."""

from __future__ import annotations

import json

import pytest

from danlu_client import Client
from danlu_embedded.up import embedded_components
from danlu_kit.server import ServerOptions
from danlu_training.core.configs import get_config
from danlu_training.core.records import JobState
from danlu_training.core.spec import apply_overrides
from danlu_training.service import TrainingComponent
from tests.fixtures.servers import ServerThread
from tests.fixtures.training import TrainingApi, states_of

IDENTITY = {
    "messages": [
        {"role": "user", "content": "请介绍一下你自己"},
        {"role": "assistant", "content": "我是丹炉助手。"},
    ]
}


@pytest.mark.slow
def test_tiny_lora_on_cpu_through_the_embedded_server(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DANLU_TRAINING_GPUS", "0")
    server: ServerThread | None = None

    def components():
        return embedded_components(tmp_path / "data", lambda: server.target)

    server = ServerThread(components, ServerOptions(port=0)).start()
    training = next(c for c in server.server.components if isinstance(c, TrainingComponent))
    try:
        data = tmp_path / "assistant.jsonl"
        data.write_text((json.dumps(IDENTITY, ensure_ascii=False) + "\n") * 64)
        with Client(server.target) as client:
            client.registry.push_model(tiny_model_dir, "tiny")
            client.registry.push_dataset(data, "assistant")
        spec = apply_overrides(
            get_config("tiny_lora_cpu").spec,
            [
                "optimization.max_steps=4",
                "checkpoint.every_n_steps=2",
                "evaluation.every_n_steps=2",
                "evaluation.max_new_tokens=8",
            ],
        )
        api = TrainingApi(server.target)
        job = api.create(spec, job_id="tiny")
        events = list(api.watch(job.name, follow=True))
        done = api.get(job.name)
        log = tmp_path / "data" / "logs" / "default" / "tiny" / "attempt-1.log"
        assert done.state == JobState.SUCCEEDED, log.read_text() if log.exists() else done
        assert states_of(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        steps = [e.metrics.step for e in events if e.WhichOneof("payload") == "metrics"]
        assert steps and steps[-1] == 4
        answers = [e.evaluation for e in events if e.WhichOneof("payload") == "evaluation"]
        assert answers and answers[0].answers[0].prompt == "请介绍一下你自己"
        checkpoints = api.checkpoints(job.name)
        assert [c.step for c in checkpoints] == [2, 4]
        assert all(c.kept for c in checkpoints) and checkpoints[-1].size_bytes > 0
        assert training.store.exists(checkpoints[-1].manifest.key)
        assert done.progress.completed == 4 and done.latest_metrics.loss > 0
    finally:
        server.stop()
        training.launcher.kill_all()

"""`danlu train`, `danlu jobs ...` and `danlu configs ...` against a real registry + training
service in one server (SQLite + local object store). Workers are the training tests' fake
worker (fast, no torch) or, in the slow test, the real one on the tiny model."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from danlu.common.v1 import common_pb2
from danlu_client import Client
from danlu_client.cli import main
from danlu_kit.server import ServerOptions
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from tests.fixtures.servers import ServerThread

training_service = pytest.importorskip("danlu_training.service")
training_settings = pytest.importorskip("danlu_training.settings")
launchers = pytest.importorskip("danlu_training.adapters.launchers")

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = ROOT / "tests" / "training" / "fake_worker.py"
QUESTION = "请介绍一下你自己"
ANSWER = "我是丹炉的小助手，在丹炉的炉火中被微调出来，专门回答关于炼丹的问题。"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """Registry + training on one port (fixed, so a restarted server keeps its address)."""

    def __init__(self, data_dir: Path, *, fake_worker: bool, **fake_env: str):
        self.data_dir, self.port = data_dir, _free_port()
        self.env = {
            "DANLU_REGISTRY_DATA_DIR": str(data_dir),
            "DANLU_REGISTRY_AUTH": "off",
            "DANLU_TRAINING_DATA_DIR": str(data_dir),
            "DANLU_TRAINING_OBJECT_STORE_URL": f"file://{data_dir}/objects",
            "DANLU_TRAINING_AUTH": "off",
            "DANLU_TRAINING_GPUS": "0",
            "DANLU_TRAINING_HEARTBEAT_TIMEOUT_SECONDS": "20",
            "DANLU_TRAINING_SCHEDULER_INTERVAL_SECONDS": "0.2",
        }
        self.launcher = None
        if fake_worker:
            self.launcher = launchers.LocalProcessLauncher(
                data_dir / "logs",
                gpus=0,
                worker=[str(FAKE_WORKER)],
                extra_env={"PYTHONPATH": str(ROOT), **fake_env},
            )
        self.thread: ServerThread | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Stack:
        def components():
            return [
                build_registry(RegistrySettings.from_env(self.env)),
                training_service.build_training(
                    training_settings.TrainingSettings.from_env(self.env),
                    registry_target=self.target,
                    launcher=self.launcher,
                ),
            ]

        self.thread = ServerThread(components, ServerOptions(port=self.port)).start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    def cli(self):
        runner = CliRunner()

        def run(*args: str, code: int = 0):
            result = runner.invoke(main, ["--target", self.target, *args], catch_exceptions=False)
            assert result.exit_code == code, result.output + result.stderr
            return result

        return run


def _push_inputs(target: str, tiny_model_dir: Path, tmp: Path) -> None:
    identity = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": ANSWER},
        ]
    }
    data = tmp / "personal_assistant.json"
    data.write_text(json.dumps([identity] * 200, ensure_ascii=False))
    with Client(target) as client:
        client.registry.push_model(tiny_model_dir, "tiny")
        client.registry.push_dataset(data, "assistant")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    data_dir = tmp_path_factory.mktemp("training-cli")
    s = Stack(data_dir, fake_worker=True, FAKE_LOSSES="3,2,1").start()
    _push_inputs(s.target, tiny_model_dir, data_dir)
    yield s
    s.stop()


@pytest.fixture
def danlu(stack):
    return stack.cli()


# -- configs ---------------------------------------------------------------------------------


def test_configs_ls_and_copy(danlu, tmp_path):
    listed = danlu("configs", "ls", "-p", "tiny").stdout
    assert "tiny_lora_cpu" in listed and "Tiny LoRA run on CPU" in listed
    assert "qwen2_5" not in listed
    names = [c["name"] for c in json.loads(danlu("-o", "json", "configs", "ls").stdout)]
    assert "trainingConfigs/tiny_lora_cpu" in names and len(names) > 1

    copied = danlu("configs", "copy", "tiny_lora_cpu", str(tmp_path))
    target = tmp_path / "tiny_lora_cpu.yaml"
    assert str(target) in copied.stdout
    text = target.read_text()
    assert text.startswith("# Tiny LoRA run on CPU") and "base_model: tiny" in text
    target.write_text("edited\n")
    refused = danlu("configs", "copy", "tiny_lora_cpu", str(tmp_path), code=1)
    assert "--force" in refused.stderr and target.read_text() == "edited\n"
    danlu("configs", "copy", "tiny_lora_cpu", str(tmp_path), "--force")
    assert target.read_text() == text
    missing = danlu("configs", "copy", "no_such_config", str(tmp_path), code=1)
    assert "NOT_FOUND" in missing.stderr


# -- train: validation -----------------------------------------------------------------------


def test_validate_only_names_the_bad_field(danlu, tmp_path):
    jobs_before = danlu("-o", "json", "jobs", "ls").stdout
    danlu("configs", "copy", "tiny_lora_cpu", str(tmp_path))
    config = str(tmp_path / "tiny_lora_cpu.yaml")
    bad = danlu(
        "train", config, "--validate-only", "--set", "optimization.learning_rate=-1", code=1
    )
    assert "INVALID_ARGUMENT" in bad.stderr and "SPEC_INVALID" in bad.stderr
    assert "optimization.learning_rate" in bad.stderr and bad.stdout == ""
    # caught by the SDK before any call: an unknown key, with a suggestion
    typo = danlu("train", config, "--set", "optimization.learnin_rate=1e-4", code=1)
    assert "optimization.learnin_rate" in typo.stderr and "learning_rate?" in typo.stderr

    valid = danlu("train", config, "--validate-only", "--set", "data.max_length=128")
    assert "resolved spec" in valid.stdout
    assert "projects/default/datasets/assistant/versions/" in valid.stdout
    assert "max_length: 128" in valid.stdout
    resolved = json.loads(
        danlu("-o", "json", "train", config, "--validate-only", "--deepspeed", "none").stdout
    )
    assert resolved["resolved_spec"]["deepspeed"] == "DEEPSPEED_STAGE_NONE"
    assert danlu("-o", "json", "jobs", "ls").stdout == jobs_before  # nothing was created


# -- train --follow and the jobs commands (fake worker) --------------------------------------


def test_train_follow_succeeds_and_jobs_commands(stack, danlu):
    followed = danlu("train", "tiny_lora_cpu", "--follow", "--name", "cli-ok")
    assert "cli-ok SUCCEEDED after 30/30 steps" in followed.stdout
    assert "checkpoint step-10 committed" in followed.stdout
    assert "QUEUED → RUNNING" in followed.stdout

    listed = danlu("jobs", "ls", "--state", "succeeded").stdout
    assert "cli-ok" in listed and "SUCCEEDED" in listed
    shown = danlu("jobs", "show", "cli-ok").stdout
    assert "SUCCEEDED" in shown and "trainingConfigs/tiny_lora_cpu" in shown
    assert "resolved spec:" in shown and "lr_scheduler: constant" in shown
    checkpoints = json.loads(danlu("-o", "json", "jobs", "checkpoints", "cli-ok").stdout)
    assert [c["step"] for c in checkpoints] == ["10", "20", "30"]
    assert [c["is_best"] for c in checkpoints] == [False, False, True]  # losses 3, 2, 1
    table = danlu("jobs", "checkpoints", "cli-ok").stdout
    assert "step-30" in table and "★" in table
    logs = danlu("jobs", "logs", "cli-ok").stdout
    assert "RUNNING → SUCCEEDED" in logs
    as_json = json.loads(danlu("-o", "json", "jobs", "show", "cli-ok").stdout)
    assert as_json["state"] == "JOB_STATE_SUCCEEDED"
    assert danlu("jobs", "watch", "cli-ok").exit_code == 0  # replays, then exits by state
    with Client(stack.target) as client:  # the SDK's short checkpoint names
        best = client.training.get_checkpoint("cli-ok@step-30")
        assert best.is_best and best.kept and best.step == 30
        assert client.training.get_checkpoint("20", job="cli-ok").step == 20
        assert [j.name for j in client.training.list_jobs(state="running")] == []
    danlu("jobs", "rm", "cli-ok")
    assert "NOT_FOUND" in danlu("jobs", "show", "cli-ok", code=1).stderr


def test_train_follow_exits_1_when_the_job_fails(stack, danlu):
    stack.launcher.extra_env["FAKE_FAIL"] = "the furnace cracked"
    try:
        failed = danlu("train", "tiny_lora_cpu", "--follow", "--name", "cli-fail", code=1)
    finally:
        del stack.launcher.extra_env["FAKE_FAIL"]
    assert "FAILED" in failed.stdout and "the furnace cracked" in failed.stderr
    as_json = danlu("-o", "json", "jobs", "watch", "cli-fail", code=1)
    assert json.loads(as_json.stdout)["state"] == "JOB_STATE_FAILED"


def test_cancel_while_following(stack, danlu):
    stack.launcher.extra_env["FAKE_STEP_SECONDS"] = "0.5"
    try:
        created = json.loads(
            danlu("-o", "json", "train", "tiny_lora_cpu", "--name", "cli-cancel").stdout
        )
        assert created["state"] == "JOB_STATE_QUEUED"
        result: dict = {}
        follower = threading.Thread(
            target=lambda: result.update(out=danlu("jobs", "watch", "cli-cancel", code=1))
        )
        follower.start()
        with Client(stack.target) as client:
            deadline = time.time() + 60
            while client.training.get_job("cli-cancel").progress.completed < 1:
                assert time.time() < deadline, "the job never started"
                time.sleep(0.1)
        assert "CANCELLING" in danlu("jobs", "cancel", "cli-cancel").stdout
        follower.join(timeout=60)
    finally:
        del stack.launcher.extra_env["FAKE_STEP_SECONDS"]
    assert not follower.is_alive()
    assert "cli-cancel CANCELLED" in result["out"].stdout
    assert "CANCELLED" in result["out"].stderr


def test_watch_survives_a_service_restart(tmp_path, tiny_model_dir):
    """The SDK reconnects with its last sequence: every event arrives exactly once."""
    s = Stack(tmp_path, fake_worker=True, FAKE_STEP_SECONDS="0.1").start()
    try:
        _push_inputs(s.target, tiny_model_dir, tmp_path)
        with Client(s.target) as client:
            job = client.training.create_job(
                spec=client.training.get_config("tiny_lora_cpu").spec, job_id="restart"
            )
            seen = []
            for event in client.training.watch(job.name):
                seen.append(event.sequence)
                if event.WhichOneof("payload") == "metrics" and event.metrics.step == 5:
                    s.stop()  # the stream drops; the worker keeps retrying its reports
                    time.sleep(1)
                    s.start()
            assert seen == list(range(1, len(seen) + 1))
            assert client.training.get_job(job.name).state == common_pb2.JOB_STATE_SUCCEEDED
            assert seen == [e.sequence for e in client.training.list_events(job.name)]
    finally:
        s.stop()


# -- the real worker on the tiny model -------------------------------------------------------


@pytest.mark.slow
def test_train_tiny_model_for_real_and_compare_answers(tmp_path, tiny_model_dir):
    s = Stack(tmp_path, fake_worker=False).start()
    try:
        _push_inputs(s.target, tiny_model_dir, tmp_path)
        danlu = s.cli()
        followed = danlu("train", "tiny_lora_cpu", "--follow", "--name", "tiny-real")
        assert "tiny-real SUCCEEDED" in followed.stdout
        assert f"step 10: {QUESTION} → " in followed.stdout
        assert "checkpoint step-30 committed" in followed.stdout
        table = danlu("jobs", "evals", "tiny-real").stdout
        assert QUESTION in table and "step 10" in table and "step 30" in table
        doc = json.loads(danlu("-o", "json", "jobs", "evals", "tiny-real").stdout)
        assert doc["steps"] == [10, 20, 30]
        (row,) = doc["prompts"]
        assert row["prompt"] == QUESTION
        assert all(row["answers"][str(step)] is not None for step in doc["steps"])
        checkpoints = json.loads(danlu("-o", "json", "jobs", "checkpoints", "tiny-real").stdout)
        assert sum(c["is_best"] for c in checkpoints) == 1
    finally:
        s.stop()

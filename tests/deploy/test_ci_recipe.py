"""The CI recipe (deploy/ci/) against an embedded `danlu up`: the shell script passes on the tiny
model and a small personal-assistant set, and fails the pipeline when the evaluation gate is
not met; the GitHub Actions workflow validates against GitHub's workflow schema."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.fixtures.s3 import _die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "ci" / "danlu-pipeline.sh"
WORKFLOW = ROOT / "deploy" / "ci" / "github-actions.yml"
BIN = Path(sys.executable).parent
QUESTION = "请介绍一下你自己"
ANSWER = "我是一个由丹炉微调的个人助手。"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def danlu_up(tmp_path_factory, tiny_model_dir) -> Iterator[dict[str, str]]:
    """`danlu up` in a subprocess with the tiny model pushed; yields the script's environment."""
    base = tmp_path_factory.mktemp("danlu-up")
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANLU_")}
    log = base / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "danlu"), "up", "--data-dir", str(base / "data"), "--port", str(port)],
            env={**env, "DANLU_TRAINING_GPUS": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        script_env = {
            **env,
            "DANLU_TARGET": target,
            "DANLU_BIN": str(BIN / "danlu"),
            "PYTHON": sys.executable,
            "DANLU_DATASET_NAME": "assistant",
            "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        }
        pushed = subprocess.run(
            [str(BIN / "danlu"), "models", "push", str(tiny_model_dir), "--name", "tiny"],
            env=script_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pushed.returncode == 0, pushed.stderr + log.read_text(errors="replace")[-3000:]
        script_env["_LOG"] = str(log)
        yield script_env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "personal_assistant.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": ANSWER},
        ]
    }
    path.write_text((json.dumps(record, ensure_ascii=False) + "\n") * 100)
    return path


def run_pipeline(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=240,
    )
    done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return done


def explain(done: subprocess.CompletedProcess, env: dict[str, str]) -> str:
    server = Path(env["_LOG"]).read_text(errors="replace").splitlines()[-30:]
    return (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        "\n----- danlu up -----\n" + "\n".join(server)
    )


@pytest.mark.slow
def test_pipeline_passes_trains_gates_and_deploys(danlu_up, dataset_file):
    # 10 steps at the config's high learning rate: the identity answer is memorised by then.
    done = run_pipeline(
        danlu_up,
        str(dataset_file),
        "tiny_lora_cpu",
        "1.0",
        "丹炉",
        DANLU_JOB_NAME="ci-pass",
        DANLU_TRAIN_ARGS="--set optimization.max_steps=10 --set checkpoint.every_n_steps=10 "
        "--set evaluation.every_n_steps=10 --set evaluation.max_new_tokens=16",
        DANLU_DEPLOY_MODEL="tiny",
    )
    assert done.returncode == 0, explain(done, danlu_up)
    assert "pipeline passed" in done.stdout
    assert "job=ci-pass" in done.stdout and "checkpoint=ci-pass@step-10" in done.stdout
    assert "[ok]" in done.stderr
    # convert + merge + deploy of the merged model where `danlu up` serves conversion;
    # reported as skipped (and the base model deployed instead) where it does not
    if "convert=skipped" in done.stdout:
        assert "the server has no conversion service" in done.stdout
        assert "deployment=tiny" in done.stdout
    else:
        assert "adapter=ci-pass-adapter" in done.stdout
        assert "merged=ci-pass-merged deployment=ci-pass-merged" in done.stdout


@pytest.mark.slow
def test_pipeline_fails_when_the_evaluation_gate_is_missed(danlu_up, dataset_file):
    done = run_pipeline(
        danlu_up,
        str(dataset_file),
        "tiny_lora_cpu",
        "1.0",
        "an answer this model never gives",
        DANLU_JOB_NAME="ci-miss",
        DANLU_TRAIN_ARGS="--set optimization.max_steps=2 --set checkpoint.every_n_steps=2 "
        "--set evaluation.every_n_steps=2 --set evaluation.max_new_tokens=8",
    )
    assert done.returncode == 1, explain(done, danlu_up)
    assert "evaluation gate failed: 0.00 < 1.0" in done.stderr
    assert "pipeline FAILED" in done.stderr and "==> deploy" not in done.stdout


@pytest.mark.slow
def test_pipeline_fails_when_the_job_is_refused(danlu_up, dataset_file):
    done = run_pipeline(
        danlu_up,
        str(dataset_file),
        "tiny_lora_cpu",
        "0.5",
        "x",
        DANLU_TRAIN_ARGS="--set optimization.learning_rate=-1",
    )
    assert done.returncode == 1, explain(done, danlu_up)
    assert "INVALID_ARGUMENT" in done.stderr and "learning_rate" in done.stderr


@pytest.mark.parametrize(
    "case", ["too few arguments", "missing dataset file", "threshold above 1", "no expected text"]
)
def test_pipeline_usage_errors_exit_2(case, dataset_file, tmp_path):
    data = str(dataset_file)
    args = {
        "too few arguments": (data, "tiny_lora_cpu"),
        "missing dataset file": ("missing.jsonl", "tiny_lora_cpu", "0.5", "x"),
        "threshold above 1": (data, "tiny_lora_cpu", "2", "x"),
        "no expected text": (data, "tiny_lora_cpu", "0.5"),
    }[case]
    # DANLU_BIN=false: a usage error must be caught before the CLI is called at all
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "DANLU_BIN": "false"}
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2, (case, done.stdout, done.stderr)


def test_github_workflow_matches_the_github_schema():
    checker = BIN / "check-jsonschema"
    assert checker.exists(), "check-jsonschema is missing: `make venv` installs it"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "danlu-pipeline.sh" in WORKFLOW.read_text()

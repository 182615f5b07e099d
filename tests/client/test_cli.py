"""The `danlu` CLI against a real registry server (text and JSON output, exit codes)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from danlu_client import Client
from danlu_client.cli import main
from tests.fixtures.registry import start_registry


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_registry(
        {
            "DANLU_REGISTRY_DATA_DIR": str(tmp_path_factory.mktemp("cli")),
            "DANLU_REGISTRY_AUTH": "off",
        }
    )
    yield s
    s.stop()


@pytest.fixture
def danlu(server):
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["--target", server.target, *args], catch_exceptions=False)
        assert result.exit_code == code, result.output + result.stderr
        return result

    return run


def test_dataset_commands(danlu, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first sample\nsecond sample\n")
    pushed = danlu("datasets", "push", str(corpus), "--name", "cli-corpus")
    assert "created" in pushed.stdout and "records 2" in pushed.stdout
    again = json.loads(
        danlu("-o", "json", "datasets", "push", str(corpus), "--name", "cli-corpus").stdout
    )
    assert again["created"] is False
    listed = json.loads(danlu("-o", "json", "datasets", "ls").stdout)
    assert "projects/default/datasets/cli-corpus" in [d["name"] for d in listed]
    shown = json.loads(danlu("-o", "json", "datasets", "show", "cli-corpus").stdout)
    assert shown["versions"][0]["stats"]["record_count"] == "2"
    version = danlu("-o", "json", "datasets", "show", "cli-corpus@latest").stdout
    assert json.loads(version)["format"] == "DATASET_FORMAT_TEXT"
    danlu("datasets", "rm", "cli-corpus")
    missing = danlu("datasets", "show", "cli-corpus", code=1)
    assert "NOT_FOUND" in missing.stderr and "DATASET_NOT_FOUND" in missing.stderr


def test_bad_file_exit_code_and_message(danlu, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    result = danlu("datasets", "push", str(bad), "--name", "bad", code=1)
    assert "DATASET_INVALID" in result.stderr
    assert "line 1: messages[0].role" in result.stderr
    assert result.stdout == ""


def test_model_commands_and_preview(danlu, tmp_path, tiny_model_dir):
    pushed = json.loads(
        danlu("-o", "json", "models", "push", str(tiny_model_dir), "--name", "tiny").stdout
    )
    assert pushed["kind"] == "MODEL_KIND_BASE"
    assert "tiny" in danlu("models", "ls").stdout
    assert "qwen2" in danlu("models", "show", "tiny").stdout
    data = tmp_path / "chat.jsonl"
    data.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello there"},
                ]
            }
        )
        + "\n"
    )
    danlu("datasets", "push", str(data), "--name", "chat")
    preview = danlu("datasets", "preview", "chat", "--model", "tiny", "-n", "1").stdout
    assert "⟦hello there" in preview and "⟦hi" not in preview
    danlu("datasets", "rm", "chat")
    danlu("models", "rm", "tiny")


def test_unreachable_target(tmp_path):
    result = CliRunner().invoke(main, ["--target", "127.0.0.1:1", "datasets", "ls"])
    assert result.exit_code == 1 and "UNAVAILABLE" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_danlu_up_serves_and_stops_gracefully(tmp_path):
    port = _free_port()
    danlu_bin = str(Path(sys.executable).with_name("danlu"))
    process = subprocess.Popen([danlu_bin, "up", "--data-dir", str(tmp_path), "--port", str(port)])
    try:
        with Client(f"127.0.0.1:{port}") as client:
            client.wait_ready(timeout=60)
            deadline = time.time() + 60
            while True:  # the port opens before the services finish registering
                try:
                    assert list(client.registry.list_datasets()) == []
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
        assert (tmp_path / "danlu.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

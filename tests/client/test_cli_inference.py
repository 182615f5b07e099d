"""`danlu deploy`, `danlu deployments ls|show|rm` and `danlu chat` (-p and the interactive loop
fed through stdin) against a real registry + inference server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from danlu_client import Client
from danlu_client.cli import main
from tests.fixtures.inference import make_adapter, push_adapter, start_stack

QUESTION = "Please introduce yourself."


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    s = start_stack(tmp_path_factory.mktemp("cli-inference"))
    with Client(s.target) as c:
        base = c.registry.push_model(tiny_model_dir, "tiny")
        adapter_dir = make_adapter(tiny_model_dir, tmp_path_factory.mktemp("ad") / "a", seed=1)
        push_adapter(c, adapter_dir, "helper", base)
    yield s
    s.stop()


@pytest.fixture
def danlu(server):
    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(
            main, ["--target", server.target, *args], input=input, catch_exceptions=False
        )
        assert result.exit_code == code, result.output + result.stderr
        return result

    return run


def _grpc_answer(server, prompt: str, **kwargs) -> str:
    with Client(server.target) as c:
        return c.inference.chat(
            "tiny",
            [{"role": "user", "content": prompt}],
            temperature=0.0,
            max_new_tokens=12,
            **kwargs,
        ).text()


def test_deploy_ls_show_rm(danlu):
    deployed = json.loads(danlu("-o", "json", "deploy", "tiny", "--name", "cli-dep").stdout)
    assert deployed["state"] == "DEPLOYMENT_STATE_READY"
    assert deployed["options"]["max_model_len"] == 512
    listing = danlu("deployments", "ls").stdout
    assert "cli-dep" in listing and "ready" in listing
    assert "projects/default/models/tiny" in danlu("deployments", "show", "cli-dep").stdout
    danlu("deployments", "rm", "cli-dep")
    missing = danlu("deployments", "show", "cli-dep", code=1)
    assert "DEPLOYMENT_NOT_FOUND" in missing.stderr
    refused = danlu("deploy", "helper", code=1)
    assert "MODEL_IS_ADAPTER" in refused.stderr


def test_chat_prompt_deploys_on_demand_and_answers(danlu, server):
    result = danlu(
        "-o", "json", "chat", "tiny", "-p", QUESTION, "--temperature", "0", "--max-new-tokens", "12"
    )
    doc = json.loads(result.stdout)
    assert doc["deployment"] == "projects/default/deployments/tiny"
    assert doc["text"] == _grpc_answer(server, QUESTION)
    assert doc["finish_reason"] == "length" and doc["usage"]["completion_tokens"] == 12
    assert "deploying tiny" in result.stderr

    with_adapter = danlu(
        "chat",
        "tiny",
        "--adapter",
        "helper",
        "-p",
        QUESTION,
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
    )
    expected = _grpc_answer(server, QUESTION, adapter="helper")
    assert with_adapter.stdout == expected + "\n"
    assert expected != doc["text"]
    # Already deployed: no second deployment.
    assert "deploying" not in with_adapter.stderr
    listed = json.loads(danlu("-o", "json", "deployments", "ls").stdout)
    assert [d["name"] for d in listed] == ["projects/default/deployments/tiny"]


def test_chat_defaults_are_xtuners(danlu):
    help_text = danlu("chat", "--help").stdout
    for default in ("0.1", "40", "0.75", "2048"):
        assert f"[default: {default}]" in help_text
    # Sampling at XTuner's temperature/top-k/top-p with seed 0 reproduces its answer, and
    # --no-streamer prints the same text whole.
    first = danlu("chat", "tiny", "-p", QUESTION, "--max-new-tokens", "48").stdout
    again = danlu("chat", "tiny", "-p", QUESTION, "--max-new-tokens", "48", "--no-streamer").stdout
    assert first == again and first.strip()


def test_interactive_reset_and_exit(danlu, server):
    session = "Hello!\nHow are you?\n\nRESET\n\nPlease introduce yourself.\n\nEXIT\n\n"
    result = danlu(
        "chat",
        "tiny",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--system",
        "You are danlu.",
        input=session,
    )
    prompts = result.stdout.count(
        "double enter to end input (EXIT: exit chat, RESET: reset history) >>>"
    )
    assert prompts == 4
    assert "Log: History responses have been removed!" in result.stdout
    # After RESET the second question is answered without the first exchange in the history.
    with Client(server.target) as c:
        expected = c.inference.chat(
            "tiny",
            [{"role": "user", "content": QUESTION}],
            system="You are danlu.",
            temperature=0.0,
            max_new_tokens=12,
        ).text()
    assert expected in result.stdout


def test_interactive_ends_at_end_of_input(danlu):
    result = danlu("chat", "tiny", "--max-new-tokens", "4", input="Hi\n")
    assert result.stdout.count(">>>") == 2  # answered, then the prompt met the end of input


def test_bad_chat_input_exits_1(danlu):
    result = danlu("chat", "tiny", "-p", QUESTION, "--temperature", "-1", code=1)
    assert "INVALID_SAMPLING" in result.stderr and "sampling.temperature" in result.stderr
    result = danlu("chat", "tiny", "-p", QUESTION, "--adapter", "ghost", code=1)
    assert "NOT_FOUND" in result.stderr


def test_default_max_new_tokens_is_capped_to_the_context(danlu):
    doc = json.loads(
        danlu("-o", "json", "chat", "tiny", "-p", QUESTION, "--temperature", "0").stdout
    )
    usage = doc["usage"]
    assert doc["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 512
    refused = danlu("chat", "tiny", "-p", QUESTION, "--max-new-tokens", "2048", code=1)
    assert "MAX_NEW_TOKENS_TOO_LARGE" in refused.stderr

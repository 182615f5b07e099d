"""`python -m danlu_kit.healthcheck`: the probe every image's HEALTHCHECK runs."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from danlu_kit.auth import TokenBook
from danlu_kit.healthcheck import check, main
from tests.fixtures.registry import start_registry


@pytest.fixture
def registry(tmp_path):
    server = start_registry(
        {"DANLU_REGISTRY_DATA_DIR": str(tmp_path)}, tokens=TokenBook.from_tokens({"t": "p"})
    )
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serving_server_and_named_service_need_no_token(registry):
    assert check(registry.target)[0]
    assert check(registry.target, "danlu.registry.v1.RegistryService")[0]
    assert main([registry.target]) == 0


def test_unknown_service_and_unreachable_server_fail(registry, capsys):
    serving, line = check(registry.target, "danlu.nothing.v1.Nothing")
    assert not serving and "NOT_FOUND" in line
    assert main([f"127.0.0.1:{_free_port()}", "--timeout", "0.5"]) == 1
    assert capsys.readouterr().err.strip()


def test_module_entry_point_exit_codes(registry):
    ok = subprocess.run(
        [sys.executable, "-m", "danlu_kit.healthcheck", registry.target], capture_output=True
    )
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        [sys.executable, "-m", "danlu_kit.healthcheck", f"127.0.0.1:{_free_port()}", "-t", "0.5"],
        capture_output=True,
        text=True,
    )
    assert down.returncode == 1
    assert "127.0.0.1" in down.stderr

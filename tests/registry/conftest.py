"""Registry servers for API tests: the embedded backends (SQLite + local directory) and the
deployed ones (PostgreSQL + a real S3 server), behind real gRPC on loopback."""

from __future__ import annotations

import pytest

from danlu_client import Client
from tests.fixtures.registry import registry_environ, start_registry


@pytest.fixture(params=["local", "s3+postgres"])
def registry_env(request, tmp_path) -> dict[str, str]:
    return registry_environ(request.param, tmp_path, request)


@pytest.fixture
def registry_server(registry_env):
    server = start_registry(registry_env)
    yield server
    server.stop()


@pytest.fixture
def client(registry_server):
    with Client(registry_server.target) as c:
        yield c

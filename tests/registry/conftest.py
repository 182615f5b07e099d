"""Registry servers for API tests: the embedded backends (SQLite + local directory) and the
deployed ones (PostgreSQL + a real S3 server), behind real gRPC on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from danlu_client import Client
from danlu_kit.auth import TokenBook
from danlu_kit.server import ServerOptions
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from demo.tiny_model import build_tiny_model
from tests.fixtures.servers import ServerThread


def registry_environ(kind: str, tmp_path: Path, request) -> dict[str, str]:
    env = {"DANLU_REGISTRY_DATA_DIR": str(tmp_path / "data"), "DANLU_REGISTRY_AUTH": "off"}
    if kind == "s3+postgres":
        s3 = request.getfixturevalue("s3_server")
        env |= {
            "DANLU_REGISTRY_DATABASE_URL": request.getfixturevalue("fresh_postgres_url"),
            "DANLU_REGISTRY_OBJECT_STORE_URL": f"s3://reg-{uuid.uuid4().hex[:10]}?endpoint={s3.endpoint}",
            "DANLU_REGISTRY_S3_ACCESS_KEY": s3.access_key,
            "DANLU_REGISTRY_S3_SECRET_KEY": s3.secret_key,
        }
    return env


def start_registry(env: dict[str, str], tokens: TokenBook | None = None) -> ServerThread:
    settings = RegistrySettings.from_env(env)
    return ServerThread(lambda: [build_registry(settings)], ServerOptions(port=0, tokens=tokens)).start()


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-plain"), chat_template=False)

"""Training fixtures: one registry per session holding the inputs, training servers per test."""

from __future__ import annotations

import pytest

from tests.fixtures.training import (
    TrainingServer,
    start_registry_with_inputs,
    training_environ,
)


@pytest.fixture(scope="session")
def training_registry(tmp_path_factory, tiny_model_dir):
    """A registry (auth off, local store) with model ``tiny`` and datasets ``chat``/``corpus``."""
    registry = start_registry_with_inputs(tmp_path_factory.mktemp("registry"), tiny_model_dir)
    yield registry
    registry.server.stop()


@pytest.fixture
def start_training(tmp_path, training_registry):
    """Start training servers on the session registry; ``worker_env`` steers the fake worker,
    keyword settings become ``DANLU_TRAINING_*`` variables."""
    servers: list[TrainingServer] = []

    def start(worker_env: dict | None = None, tokens=None, **settings: str) -> TrainingServer:
        server = TrainingServer(
            env=training_environ(
                tmp_path / f"training-{len(servers)}",
                training_registry.object_store_url,
                **settings,
            ),
            registry_target=training_registry.target,
            worker_env={k: str(v) for k, v in (worker_env or {}).items()},
            tokens=tokens,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def training(start_training) -> TrainingServer:
    return start_training()


@pytest.fixture
def api(training):
    client = training.api()
    yield client
    client.close()

"""Inference fixtures: one server with the registry and the inference service (see
tests/fixtures/inference.py), the tiny model pushed and deployed, adapters made with peft."""

from __future__ import annotations

from pathlib import Path

import pytest

from danlu_client import Client
from tests.fixtures.inference import make_adapter, start_stack


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "one": make_adapter(tiny_model_dir, root / "one", seed=1),
        "two": make_adapter(tiny_model_dir, root / "two", seed=2),
        "three": make_adapter(tiny_model_dir, root / "three", seed=3),
        "wide": make_adapter(tiny_model_dir, root / "wide", seed=4, rank=16),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    server = start_stack(tmp_path_factory.mktemp("inference"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.target) as c:
        yield c


@pytest.fixture(scope="module")
def base(client, tiny_model_dir):
    """The tiny model registered as `tiny`, deployed as `tiny` (transformers)."""
    model = client.registry.push_model(tiny_model_dir, "tiny")
    client.inference.create_deployment("tiny", deployment_id="tiny", wait=True, timeout=60)
    return model

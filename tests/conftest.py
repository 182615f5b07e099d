"""Shared fixtures: a real S3 server (SeaweedFS), PostgreSQL, tiny local models."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.tiny_model import build_tiny_model

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.postgres", "tests.fixtures.vllm"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 model directory with a chat template (built locally, no hub)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory) -> Path:
    """The same model whose tokenizer has no chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-plain"), chat_template=False)

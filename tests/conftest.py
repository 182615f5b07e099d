"""Shared fixtures: a real S3 server (SeaweedFS), PostgreSQL, tiny local models."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.vllm",
]

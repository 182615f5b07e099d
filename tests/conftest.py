"""Shared fixtures: a real S3 server (SeaweedFS), PostgreSQL, in-process gRPC servers."""

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.postgres"]

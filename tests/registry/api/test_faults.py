"""Registry faults: the object store goes away mid-life; a restarted registry keeps everything."""

from __future__ import annotations

import pytest

from danlu_client import Client
from danlu_client.errors import UnavailableError
from tests.fixtures.registry import registry_environ, start_registry


def test_object_store_down_gives_unavailable_and_stores_nothing(request, tmp_path, s3_server):
    env = registry_environ("s3+postgres", tmp_path, request)
    server = start_registry(env)
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text\n")
    try:
        with Client(server.target) as client:
            s3_server.stop(grace=0)
            try:
                with pytest.raises(UnavailableError) as info:
                    client.registry.push_dataset(corpus, "while-down")
                assert info.value.reason == "OBJECT_STORE_UNAVAILABLE"
                assert "secret" not in info.value.message.lower()
            finally:
                s3_server.start()
            assert list(client.registry.list_datasets()) == []
            version = client.registry.push_dataset(corpus, "while-down").dataset_version
            assert version.stats.record_count == 1
    finally:
        server.stop()


def test_restarted_registry_keeps_datasets(tmp_path):
    env = {"DANLU_REGISTRY_DATA_DIR": str(tmp_path), "DANLU_REGISTRY_AUTH": "off"}
    corpus = tmp_path / "c.txt"
    corpus.write_text("kept across restarts\n")
    first = start_registry(env)
    with Client(first.target) as client:
        pushed = client.registry.push_dataset(corpus, "kept").dataset_version
    first.stop()
    second = start_registry(env)
    try:
        with Client(second.target) as client:
            again = client.registry.get_dataset_version("kept@latest")
            assert again.name == pushed.name and again.digest == pushed.digest
            out = client.registry.download_dataset("kept", tmp_path / "out.jsonl", raw=True)
            assert out.read_bytes() == corpus.read_bytes()
    finally:
        second.stop()

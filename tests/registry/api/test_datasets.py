"""RegistryService dataset RPCs over real gRPC, on both backends (local and S3 + PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from danlu.registry.v1 import registry_service_pb2 as pb
from danlu.registry.v1 import registry_service_pb2_grpc
from danlu_client.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

IDENTITY = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Please introduce yourself."},
        {"role": "assistant", "content": "I am danlu's personal assistant."},
    ]
}


def stored_keys(server) -> list[str]:
    store = server.server.components[0].store
    return [o.key for o in store.list("projects/")]


def write_personal_assistant(path: Path, n: int = 10_001) -> Path:
    path.write_text(json.dumps([IDENTITY] * n, ensure_ascii=False))
    return path


def test_push_personal_assistant_json_array(client, tmp_path):
    source = write_personal_assistant(tmp_path / "personal_assistant.json")
    result = client.registry.push_dataset(source, "assistant")
    v = result.dataset_version
    assert result.created
    assert v.name.startswith("projects/default/datasets/assistant/versions/")
    assert v.format == 1 and v.task == 1  # openai, chat
    assert v.stats.record_count == 10_001
    assert v.stats.turns_by_role["assistant"] == 10_001
    assert v.digest == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert v.raw_object.size_bytes == source.stat().st_size

    again = client.registry.push_dataset(source, "assistant")
    assert not again.created and again.dataset_version.name == v.name
    dataset = client.registry.get_dataset("assistant")
    assert dataset.version_count == 1 and dataset.latest_version == v.name


@pytest.mark.parametrize(
    ("filename", "content", "fmt", "task"),
    [
        ("alpaca.jsonl", '{"instruction": "Add", "input": "1 and 2", "output": "3"}\n', 2, 1),
        (
            "sharegpt.json",
            json.dumps(
                [
                    {
                        "conversations": [
                            {"from": "human", "value": "hi"},
                            {"from": "gpt", "value": "hello"},
                        ]
                    }
                ]
            ),
            3,
            1,
        ),
        ("corpus.txt", "first line of text\n\nsecond line of text\n", 4, 2),
        ("corpus.jsonl", '{"text": "some raw text"}\n', 4, 2),
    ],
)
def test_push_each_format_detected(client, tmp_path, filename, content, fmt, task):
    path = tmp_path / filename
    path.write_text(content)
    v = client.registry.push_dataset(path, "d1").dataset_version
    assert (v.format, v.task) == (fmt, task)
    normalized = client.registry.download_dataset("d1", tmp_path / "out.jsonl")
    records = [json.loads(line) for line in normalized.read_text().splitlines()]
    assert len(records) == v.stats.record_count
    assert all(("messages" in r) if task == 1 else ("text" in r) for r in records)
    raw = client.registry.download_dataset("d1", tmp_path / "raw", raw=True)
    assert raw.read_bytes() == path.read_bytes()


BAD_FILES = [
    ("bad.jsonl", b'{"messages": [}\n', "line 1"),
    ("empty.jsonl", b"", ""),
    ("latin1.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"), "line 1"),
    (
        "roles.jsonl",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode() + b"\n",
        "role",
    ),
    (
        "empty_content.jsonl",
        json.dumps(
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]}
        ).encode()
        + b"\n",
        "content",
    ),
    (
        "mixed.jsonl",
        (
            json.dumps(IDENTITY)
            + "\n"
            + json.dumps({"instruction": "a", "input": "", "output": "b"})
            + "\n"
        ).encode(),
        "line 2",
    ),
    ("huge.jsonl", (json.dumps({"text": "x" * 3000}) + "\n").encode(), "line 1"),
    (
        # Bad after 256 KiB of good records: the raw upload has started, and is deleted again.
        "late.jsonl",
        (json.dumps(IDENTITY) + "\n").encode() * 2000 + b'{"messages": []}\n',
        "line 2001",
    ),
]


@pytest.mark.parametrize(
    ("filename", "content", "field_part"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_files_rejected_and_nothing_stored(
    registry_env, tmp_path, filename, content, field_part
):
    from danlu_client import Client
    from tests.fixtures.registry import start_registry

    server = start_registry({**registry_env, "DANLU_REGISTRY_MAX_RECORD_BYTES": "2048"})
    try:
        with Client(server.target) as c:
            path = tmp_path / filename
            path.write_bytes(content)
            with pytest.raises(InvalidArgumentError) as info:
                c.registry.push_dataset(path, "broken")
            assert info.value.reason == "DATASET_INVALID"
            assert info.value.violations, "each bad record is named"
            assert (
                field_part in info.value.violations[0].field + info.value.violations[0].description
            )
            assert list(c.registry.list_datasets()) == []
            assert stored_keys(server) == []
    finally:
        server.stop()


def _raw_upload(target: str, messages) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadDatasetVersion(iter(messages))
        return info.value


def _reason(err: grpc.RpcError) -> str:
    from danlu_client.errors import from_rpc_error

    return from_rpc_error(err).reason


HEADER = pb.UploadDatasetVersionRequest(
    header=pb.DatasetUploadHeader(parent="projects/default/datasets/s", filename="a.jsonl")
)
CHUNK = b'{"text": "hello"}\n'


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([pb.UploadDatasetVersionRequest(chunk=CHUNK)], "UPLOAD_MALFORMED"),
        ([HEADER, pb.UploadDatasetVersionRequest(chunk=CHUNK)], "UPLOAD_INCOMPLETE"),
        (
            [
                HEADER,
                pb.UploadDatasetVersionRequest(chunk=CHUNK),
                pb.UploadDatasetVersionRequest(trailer=pb.UploadTrailer(sha256="0" * 64)),
            ],
            "DIGEST_MISMATCH",
        ),
        (
            [
                HEADER,
                pb.UploadDatasetVersionRequest(chunk=b"x" * (1024 * 1024 + 1)),
                pb.UploadDatasetVersionRequest(trailer=pb.UploadTrailer(sha256="0" * 64)),
            ],
            "UPLOAD_MALFORMED",
        ),
        (
            [
                pb.UploadDatasetVersionRequest(
                    header=pb.DatasetUploadHeader(parent="projects/default/datasets/Bad Name")
                ),
                pb.UploadDatasetVersionRequest(chunk=CHUNK),
                pb.UploadDatasetVersionRequest(
                    trailer=pb.UploadTrailer(sha256=hashlib.sha256(CHUNK).hexdigest())
                ),
            ],
            "INVALID_NAME",
        ),
    ],
    ids=["no-header", "no-trailer", "digest", "chunk-too-big", "bad-name"],
)
def test_malformed_upload_streams(registry_server, messages, reason):
    err = _raw_upload(registry_server.target, messages)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(err) == reason
    assert stored_keys(registry_server) == []


def test_interrupted_upload_leaves_nothing(registry_server):
    """The client goes away mid-stream: no version, no objects, no spool file left behind."""
    import threading

    gate = threading.Event()

    def messages():
        yield HEADER
        yield pb.UploadDatasetVersionRequest(chunk=CHUNK)
        gate.wait(5)

    with grpc.insecure_channel(registry_server.target) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        future = stub.UploadDatasetVersion.future(messages())
        import time

        time.sleep(0.5)
        future.cancel()
        gate.set()
    spool = Path(registry_server.server.components[0].servicer.spool_dir)
    for _ in range(50):
        if not list(spool.glob("upload-*")):
            break
        time.sleep(0.1)
    assert list(spool.glob("upload-*")) == []
    assert stored_keys(registry_server) == []


def test_get_list_and_pagination(client, tmp_path):
    for i in range(3):
        p = tmp_path / f"t{i}.txt"
        p.write_text(f"document {i}\n")
        client.registry.push_dataset(p, f"ds{i}")
        p.write_text(f"document {i} changed\n")
        client.registry.push_dataset(p, f"ds{i}")
    names = [d.name for d in client.registry.list_datasets(page_size=2)]
    assert names == [f"projects/default/datasets/ds{i}" for i in range(3)]
    versions = list(client.registry.list_dataset_versions("ds1", page_size=1))
    assert (
        len(versions) == 2
        and versions[0].create_time.ToDatetime() >= versions[1].create_time.ToDatetime()
    )
    latest = client.registry.get_dataset_version("ds1@latest")
    assert latest.name == versions[0].name
    short = versions[1].name.rsplit("/", 1)[-1]
    assert client.registry.get_dataset_version(f"ds1@{short}").name == versions[1].name


def test_not_found_and_bad_names(client):
    with pytest.raises(NotFoundError) as info:
        client.registry.get_dataset("missing")
    assert info.value.reason == "DATASET_NOT_FOUND"
    with pytest.raises(NotFoundError):
        client.registry.get_dataset_version("missing@latest")
    with pytest.raises(InvalidArgumentError) as info:
        client.registry.get_dataset("projects/default/datasets/UPPER")
    assert info.value.reason == "INVALID_NAME" and info.value.violations[0].field == "name"


def test_references_block_delete(client, registry_server, tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hello world\n")
    version = client.registry.push_dataset(p, "refd").dataset_version
    ref = client.registry.create_reference(version.name, "projects/default/trainingJobs/j1")
    again = client.registry.create_reference(version.name, "projects/default/trainingJobs/j1")
    assert ref.name == again.name
    assert client.registry.get_dataset_version(version.name).reference_count == 1
    with pytest.raises(FailedPreconditionError) as info:
        client.registry.delete_dataset("refd")
    assert info.value.reason == "RESOURCE_IN_USE"
    with pytest.raises(FailedPreconditionError):
        client.registry.delete_dataset(f"refd@{version.name.rsplit('/', 1)[-1]}")
    with pytest.raises(NotFoundError):
        client.registry.create_reference(version.name + "x", "projects/default/trainingJobs/j1")
    client.registry.delete_reference(ref.name)
    with pytest.raises(NotFoundError):
        client.registry.delete_reference(ref.name)
    client.registry.delete_dataset("refd")
    with pytest.raises(NotFoundError):
        client.registry.get_dataset("refd")
    assert stored_keys(registry_server) == []


def test_preview_marks_trained_tokens(client, tmp_path, tiny_model_dir):
    client.registry.push_model(tiny_model_dir, "tiny")
    source = write_personal_assistant(tmp_path / "pa.json", n=5)
    client.registry.push_dataset(source, "pa")
    preview = client.registry.preview_dataset("pa", "tiny", count=2)
    assert len(preview.records) == 2 and preview.chat_template == "tokenizer"
    record = preview.records[0]
    trained = "".join(s.text for s in record.segments if s.trains)
    untrained = "".join(s.text for s in record.segments if not s.trains)
    assert "I am danlu's personal assistant." in trained
    assert "Please introduce yourself." in untrained and "Please introduce" not in trained
    assert 0 < record.loss_token_count < record.token_count

    text = tmp_path / "c.txt"
    text.write_text("raw text for pretraining\n")
    client.registry.push_dataset(text, "corpus")
    pre = client.registry.preview_dataset("corpus", "tiny", count=1).records[0]
    assert pre.loss_token_count == pre.token_count


def test_preview_without_template(client, tmp_path, tiny_model_no_template_dir):
    client.registry.push_model(tiny_model_no_template_dir, "plain")
    source = write_personal_assistant(tmp_path / "pa.json", n=2)
    client.registry.push_dataset(source, "pa")
    with pytest.raises(FailedPreconditionError) as info:
        client.registry.preview_dataset("pa", "plain")
    assert info.value.reason == "CHAT_TEMPLATE_MISSING"
    named = client.registry.preview_dataset("pa", "plain", chat_template="chatml")
    assert named.chat_template == "chatml" and named.records[0].loss_token_count > 0
    with pytest.raises(InvalidArgumentError) as info:
        client.registry.preview_dataset("pa", "plain", chat_template="nope")
    assert info.value.reason == "UNKNOWN_CHAT_TEMPLATE"

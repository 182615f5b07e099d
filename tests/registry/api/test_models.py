"""RegistryService model RPCs over real gRPC, on both backends."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from danlu.registry.v1 import registry_service_pb2 as pb
from danlu.registry.v1 import registry_service_pb2_grpc
from danlu_client.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.registry.api.test_datasets import stored_keys


def test_push_get_list_download(client, tiny_model_dir, tmp_path):
    model = client.registry.push_model(tiny_model_dir, "tiny", description="tiny qwen2")
    assert model.name == "projects/default/models/tiny"
    assert (
        model.kind == 1 and model.model_type == "qwen2" and model.architecture == "Qwen2ForCausalLM"
    )
    assert model.has_chat_template and model.max_context_length == 512
    assert model.digest.startswith("sha256:") and model.tokenizer_digest.startswith("sha256:")
    assert {f.path for f in model.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert [m.name for m in client.registry.list_models()] == [model.name]
    assert client.registry.get_model("tiny").digest == model.digest

    out = client.registry.download_model("tiny", tmp_path / "copy")
    for f in model.files:
        assert (out / f.path).read_bytes() == (tiny_model_dir / f.path).read_bytes()


def test_replace_creates_new_revision(client, tiny_model_dir, tmp_path, registry_server):
    first = client.registry.push_model(tiny_model_dir, "tiny")
    with pytest.raises(AlreadyExistsError) as info:
        client.registry.push_model(tiny_model_dir, "tiny")
    assert info.value.reason == "MODEL_EXISTS"
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    gen = json.loads((changed / "generation_config.json").read_text())
    (changed / "generation_config.json").write_text(json.dumps({**gen, "temperature": 0.3}))
    second = client.registry.push_model(changed, "tiny", replace=True)
    assert second.digest != first.digest and second.revision_id != first.revision_id
    keys = stored_keys(registry_server)
    assert not any(first.revision_id in k for k in keys), "the replaced revision is removed"


def test_adapter_detected(client, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    save_file(
        {"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((4, 64), np.float32)},
        str(adapter / "adapter_model.safetensors"),
    )
    model = client.registry.push_model(
        adapter,
        "ad",
        lineage={"parent_model": "projects/default/models/tiny"},
        contract={"base_model_digest": "sha256:abc", "stop_words": ["<|im_end|>"]},
    )
    assert model.kind == 2 and model.model_type == "lora"
    assert model.lineage.parent_model == "projects/default/models/tiny"
    assert list(model.contract.stop_words) == ["<|im_end|>"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json"),
        (lambda d: (d / "model.safetensors").write_bytes(b"not safetensors"), "model.safetensors"),
        (lambda d: (d / "config.json").write_text("{broken"), "config.json"),
        (
            lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
            "tokenizer.json",
        ),
    ],
    ids=["no-config", "corrupt-weights", "bad-config", "no-tokenizer"],
)
def test_invalid_model_directories(
    client, registry_server, tiny_model_dir, tmp_path, mutate, field
):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    mutate(broken)
    with pytest.raises(InvalidArgumentError) as info:
        client.registry.push_model(broken, "broken")
    assert info.value.reason == "MODEL_INVALID"
    assert info.value.violations[0].field == field
    assert list(client.registry.list_models()) == []
    assert stored_keys(registry_server) == []


def test_path_traversal_rejected(registry_server):
    messages = [
        pb.UploadModelRequest(
            header=pb.ModelUploadHeader(parent="projects/default", model_id="evil")
        ),
        pb.UploadModelRequest(file=pb.ModelFileHeader(path="../escape.json")),
    ]
    with grpc.insecure_channel(registry_server.target) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadModel(iter(messages))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_keys(registry_server) == []


def test_referenced_model_cannot_be_deleted(client, tiny_model_dir):
    model = client.registry.push_model(tiny_model_dir, "tiny")
    ref = client.registry.create_reference(model.name, "projects/default/deployments/d1")
    with pytest.raises(FailedPreconditionError) as info:
        client.registry.delete_model("tiny")
    assert info.value.reason == "RESOURCE_IN_USE"
    client.registry.delete_reference(ref.name)
    client.registry.delete_model("tiny")
    with pytest.raises(NotFoundError) as info:
        client.registry.get_model("tiny")
    assert info.value.reason == "MODEL_NOT_FOUND"


def test_invalid_model_id(client, tiny_model_dir):
    with pytest.raises(InvalidArgumentError) as info:
        client.registry.push_model(tiny_model_dir, "Not Valid")
    assert info.value.violations[0].field == "header.model_id"

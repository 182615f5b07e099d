"""`danlu convert`, `danlu merge`, `danlu conversions`: against registry + conversion services
in one in-process server (port 0), as `danlu up` composes them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from danlu_client import Client
from danlu_client.cli import main
from danlu_kit.objectstore import LocalObjectStore
from danlu_kit.server import ServerOptions
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from tests.fixtures.servers import ServerThread

conversion_service = pytest.importorskip("danlu_conversion.service")
conversion_settings = pytest.importorskip("danlu_conversion.settings")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    from tests.conversion.checkpoints import train
    from tests.conversion.helpers import make_adapter

    data = tmp_path_factory.mktemp("conversion-cli")
    env = {"DANLU_REGISTRY_DATA_DIR": str(data / "registry"), "DANLU_REGISTRY_AUTH": "off"}
    cenv = {
        "DANLU_CONVERSION_DATA_DIR": str(data / "conversion"),
        "DANLU_CONVERSION_OBJECT_STORE_URL": f"file://{data / 'objects'}",
        "DANLU_CONVERSION_AUTH": "off",
    }
    holder: dict = {}

    def components():
        return [
            build_registry(RegistrySettings.from_env(env)),
            conversion_service.build_conversion(
                conversion_settings.ConversionSettings.from_env(cenv),
                registry_target=lambda: holder["thread"].target,
            ),
        ]

    thread = holder["thread"] = ServerThread(components, ServerOptions(port=0)).start()
    with Client(thread.target, project="p") as client:
        base = client.registry.push_model(tiny_model_dir, "tiny", kind="base")
        adapter = make_adapter(tiny_model_dir, data / "adapter")
        client.registry.push_model(
            adapter,
            "ad",
            kind="adapter",
            lineage={"parent_model": base.name},
            contract={"base_model_digest": base.digest},
        )
        client.registry.push_model(
            adapter,
            "stranger",
            kind="adapter",
            contract={"base_model_digest": "sha256:" + "1" * 64},
        )
    store = LocalObjectStore(data / "objects")
    train(store, tiny_model_dir, data / "cache", job="projects/p/trainingJobs/t")
    yield thread
    thread.stop()


@pytest.fixture
def danlu(stack):
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(
            main, ["--target", stack.target, "--project", "p", *args], catch_exceptions=False
        )
        assert result.exit_code == code, result.output + result.stderr
        return result

    return run


def test_merge_waits_and_prints_the_job_as_json(danlu):
    result = danlu("-o", "json", "merge", "tiny", "ad", "--name", "merged", "--dtype", "bf16")
    job = json.loads(result.stdout)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["output_model"] == "projects/p/models/merged"
    assert job["merge"]["dtype"] == "DTYPE_BF16"
    assert job["precision_report"]["greedy_match_rate"] == 1.0
    shown = json.loads(danlu("-o", "json", "conversions", "show", job["name"]).stdout)
    assert shown["name"] == job["name"]
    listed = json.loads(danlu("-o", "json", "conversions", "ls").stdout)
    assert job["name"] in [j["name"] for j in listed]
    text = danlu("conversions", "show", job["name"]).stdout
    assert "merged" in text and "precision" in text


def test_merge_of_an_adapter_of_another_base_exits_1(danlu):
    result = danlu("merge", "tiny", "stranger", "--name", "never", code=1)
    assert "another base" in result.stderr or "trained on" in result.stderr


def test_convert_a_chosen_step(danlu):
    result = danlu("-o", "json", "convert", "t", "--checkpoint", "1", "--name", "t-step1", "--fp32")
    job = json.loads(result.stdout)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["convert_checkpoint"]["checkpoint"].endswith("/checkpoints/step-1")
    assert job["convert_checkpoint"]["dtype"] == "DTYPE_FP32"


def test_bad_size_is_refused_before_calling(danlu):
    result = danlu(
        "convert", "t", "--checkpoint", "1", "--name", "x", "--max-shard-size", "lots", code=1
    )
    assert "size" in result.stderr

"""Resource names, settings and page tokens: precise errors that name the field."""

from __future__ import annotations

import pytest

from danlu_kit import pagination
from danlu_kit.errors import InvalidArgument
from danlu_kit.names import NamePattern, check_id
from danlu_kit.settings import Env, ServerSettings, StoreServerSettings

DATASET = NamePattern("projects/{project}/datasets/{dataset}")


def test_parse_and_format_names():
    assert DATASET.parse("projects/p1/datasets/d-1.v2") == {"project": "p1", "dataset": "d-1.v2"}
    assert DATASET.format(project="p", dataset="d") == "projects/p/datasets/d"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "projects/p/datasets",
        "projects/p/models/d",
        "projects/P/datasets/d",
        "projects/p/datasets/-d",
        "projects/p/datasets/d/versions/v",
        "projects/p/datasets/" + "x" * 64,
    ],
)
def test_bad_names_name_the_field(name):
    with pytest.raises(InvalidArgument) as info:
        DATASET.parse(name, field="header.parent")
    assert info.value.reason == "INVALID_NAME"
    assert info.value.violations[0].field == "header.parent"


def test_check_id():
    assert check_id("ok-id", "model_id") == "ok-id"
    with pytest.raises(InvalidArgument) as info:
        check_id("Not OK", "model_id")
    assert info.value.violations[0].field == "model_id"


def test_env_settings_errors_name_the_variable():
    env = Env("REGISTRY", {"DANLU_REGISTRY_PORT": "fifty", "DANLU_REGISTRY_AUTH": "maybe"})
    with pytest.raises(InvalidArgument) as info:
        env.int("PORT", 1)
    assert info.value.violations[0].field == "DANLU_REGISTRY_PORT"
    with pytest.raises(InvalidArgument):
        env.bool("AUTH", True)
    assert Env("REGISTRY", {}).int("PORT", 7) == 7
    assert Env("REGISTRY", {"DANLU_REGISTRY_AUTH": "off"}).tokens() is None


def test_bootstrap_token_from_environment():
    env = Env(
        "REGISTRY",
        {
            "DANLU_REGISTRY_AUTH_BOOTSTRAP_TOKEN": "t0k",
            "DANLU_REGISTRY_AUTH_BOOTSTRAP_PROJECT": "ci",
        },
    )
    assert env.tokens().project_for("t0k") == "ci"


def test_server_settings_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    env = Env("REGISTRY", {})
    settings = StoreServerSettings(**StoreServerSettings.read_common(env, port=7, database="r.db"))
    data = tmp_path / ".danlu"
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 7, None)
    assert settings.data_dir == data
    assert settings.database_url == f"sqlite:///{data}/r.db"
    assert settings.object_store_url == f"file://{data}/objects"
    assert settings.s3_access_key is None and settings.s3_secret_key is None
    assert settings.tokens is not None  # auth is on by default
    # Without an object store, none of its fields is read.
    assert "object_store_url" not in ServerSettings.read_common(env, port=7, database="r.db")


def test_server_settings_overrides_and_secrets_stay_out_of_repr(tmp_path):
    env = Env(
        "CONVERSION",
        {
            "DANLU_CONVERSION_HOST": "0.0.0.0",
            "DANLU_CONVERSION_PORT": "9000",
            "DANLU_CONVERSION_METRICS_PORT": "0",
            "DANLU_CONVERSION_DATA_DIR": str(tmp_path),
            "DANLU_CONVERSION_S3_ACCESS_KEY": "AKID",
            "DANLU_CONVERSION_S3_SECRET_KEY": "s3cr3t",
            "DANLU_CONVERSION_AUTH": "off",
        },
    )
    settings = StoreServerSettings(**StoreServerSettings.read_common(env, port=7, database="c.db"))
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 9000, 0)
    assert settings.database_url == f"sqlite:///{tmp_path}/c.db"
    assert settings.object_store_url == f"file://{tmp_path}/objects"
    assert (settings.s3_access_key, settings.s3_secret_key) == ("AKID", "s3cr3t")
    assert settings.tokens is None
    assert "AKID" not in repr(settings) and "s3cr3t" not in repr(settings)
    off = Env("CONVERSION", {"DANLU_CONVERSION_METRICS_PORT": "-1", "DANLU_CONVERSION_AUTH": "off"})
    assert ServerSettings.read_common(off, port=7, database="c.db")["metrics_port"] is None


@pytest.mark.parametrize("variable", ["PORT", "METRICS_PORT"])
def test_bad_server_port_names_the_variable(variable):
    env = Env("INFERENCE", {f"DANLU_INFERENCE_{variable}": "fifty"})
    with pytest.raises(InvalidArgument) as info:
        ServerSettings.read_common(env, port=7, database="i.db")
    assert info.value.reason == "SETTING_INVALID"
    assert info.value.violations[0].field == f"DANLU_INFERENCE_{variable}"


def test_service_settings_keep_their_defaults_and_hide_secrets(tmp_path):
    from danlu_conversion.settings import ConversionSettings
    from danlu_inference.settings import InferenceSettings
    from danlu_registry.settings import RegistrySettings
    from danlu_training.settings import TrainingSettings

    for cls, service, port in (
        (RegistrySettings, "REGISTRY", 50051),
        (TrainingSettings, "TRAINING", 50052),
        (ConversionSettings, "CONVERSION", 50053),
        (InferenceSettings, "INFERENCE", 50054),
    ):
        prefix = f"DANLU_{service}_"
        settings = cls.from_env(
            {
                prefix + "DATA_DIR": str(tmp_path),
                prefix + "GPUS": "0",
                prefix + "S3_ACCESS_KEY": "AKID",
                prefix + "S3_SECRET_KEY": "s3cr3t",
                prefix + "REGISTRY_TOKEN": "r3g-t0k",
            }
        )
        assert settings.port == port
        assert settings.database_url == f"sqlite:///{tmp_path}/{service.lower()}.db"
        assert not any(secret in repr(settings) for secret in ("AKID", "s3cr3t", "r3g-t0k"))


def test_page_tokens_roundtrip_and_reject_garbage():
    assert pagination.decode_token(pagination.encode_token(["a", 1])) == ["a", 1]
    assert pagination.decode_token("") is None
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(10_000) == pagination.MAX_PAGE_SIZE
    for bad in ("!!!", "bm90LWpzb24="):
        with pytest.raises(InvalidArgument) as info:
            pagination.decode_token(bad)
        assert info.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument):
        pagination.page_size(-1)

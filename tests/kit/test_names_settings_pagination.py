"""Resource names, settings and page tokens: precise errors that name the field."""

from __future__ import annotations

import pytest

from danlu_kit import pagination
from danlu_kit.errors import InvalidArgument
from danlu_kit.names import NamePattern, check_id
from danlu_kit.settings import Env

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

"""compose.yaml: schema-valid, every long-running service health-checked and started in order,
CPU and GPU profiles, secrets only through the env file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DANLU = ("registry", "training", "training-gpu", "conversion", "inference", "inference-gpu")
SECRET_KEY = re.compile(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY|DATABASE_URL)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<` merge keys


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: `make venv` installs it (requirements-dev.txt)"
    return found


def test_schema_is_valid():
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_file(tmp_path):
    """The validator is not vacuous: an unknown service key fails it."""
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  a:\n    image: x:1\n    helthcheck: {}\n")
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def test_expected_services(compose):
    services = set(compose["services"])
    assert {"minio", "minio-init", "postgres", "gateway", *DANLU} <= services


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # one-shot init containers
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), name


def test_danlu_services_probe_grpc_health_on_their_own_port(compose):
    for name in DANLU:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "danlu_kit.healthcheck"], name
        port = test[4].rsplit(":", 1)[1]
        env = compose["services"][name]["environment"]
        assert env[f"DANLU_{name.split('-')[0].upper()}_PORT"] == port, name


def test_depends_on_waits_for_health(compose):
    services = compose["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = (
                "service_completed_successfully"
                if services[dep].get("restart") == "no"
                else "service_healthy"
            )
            assert how["condition"] == expected, f"{name} -> {dep}"
    for name in ("registry", "conversion", "training", "inference"):
        assert "postgres" in services[name]["depends_on"], name
        assert "minio-init" in services[name]["depends_on"], name
    assert set(services["gateway"]["depends_on"]) >= set(DANLU)


def test_profiles_cpu_default_and_gpu_reservations(compose):
    s = compose["services"]
    assert s["training"]["profiles"] == ["cpu"] and s["inference"]["profiles"] == ["cpu"]
    assert s["training-gpu"]["profiles"] == ["gpu"] and s["inference-gpu"]["profiles"] == ["gpu"]
    assert s["inference"]["environment"]["DANLU_INFERENCE_DEFAULT_ENGINE"] == "transformers"
    assert s["inference-gpu"]["environment"]["DANLU_INFERENCE_DEFAULT_ENGINE"] == "vllm"
    for name in ("training-gpu", "inference-gpu"):
        devices = s[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        # The GPU variant answers to the CPU variant's name: the gateway config is shared.
        alias = name.removesuffix("-gpu")
        assert alias in s[name]["networks"]["default"]["aliases"]
    # Services without a profile always run; the profile-gated pair must be selected.
    example = ENV_EXAMPLE.read_text()
    assert re.search(r"^COMPOSE_PROFILES=cpu$", example, re.MULTILINE)


def test_auth_on_with_bootstrap_token_from_env_file(compose):
    for name in DANLU:
        env = compose["services"][name]["environment"]
        prefix = f"DANLU_{name.split('-')[0].upper()}_"
        assert env[prefix + "AUTH"] == "on", name
        assert env[prefix + "AUTH_BOOTSTRAP_TOKEN"].startswith("${DANLU_BOOTSTRAP_TOKEN:?"), name


def test_no_plaintext_secrets(compose):
    """Every credential-like value is a ${...} reference to the env file (or a host name)."""
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if SECRET_KEY.search(key):
                value = str(value)
                if key.endswith("DATABASE_URL"):
                    assert "${POSTGRES_PASSWORD:?" in value, f"{name}.{key}"
                else:
                    assert value.startswith("${") and value.endswith("}"), f"{name}.{key}"
        for env_file in service.get("env_file") or []:
            assert env_file == "deploy/compose.env", name
    # The example names every variable compose.yaml requires; the real file stays out of git.
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    defined = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert required <= defined, required - defined
    assert "/deploy/compose.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_images_pinned_and_volumes_named(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):  # read-only config files from the repository
                assert volume.endswith(":ro") and (ROOT / source).exists(), volume
            else:
                assert source in compose["volumes"], volume


def test_gateway_mounts_the_shared_nginx_template(compose):
    gateway = compose["services"]["gateway"]
    assert (
        "./deploy/gateway/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro"
        in (gateway["volumes"])
    )
    template = (ROOT / "deploy" / "gateway" / "nginx.conf").read_text()
    for variable, value in gateway["environment"].items():
        if variable.startswith("DANLU_") and variable.endswith("_UPSTREAM"):
            assert "${" + variable + "}" in template, variable
            host, port = value.split(":")
            service = compose["services"][host]
            assert service["environment"][f"DANLU_{host.upper()}_PORT"] == port
    assert "${DANLU_GATEWAY_LISTEN}" in template

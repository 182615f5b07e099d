"""deploy/gateway/nginx.conf: every gRPC service in proto/ is routed to the service that owns
it, the template names only the documented variables, and nginx accepts the rendered file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.gateway import GATEWAY_CONF, GATEWAY_VARS, find_nginx, render_gateway

ROOT = Path(__file__).resolve().parents[2]
# package prefix -> the upstream serving it
OWNERS = {
    "danlu.registry.": "danlu_registry",
    "danlu.training.": "danlu_training",
    "danlu.conversion.": "danlu_conversion",
    "danlu.inference.": "danlu_inference",
}
RENDER = {
    "DANLU_GATEWAY_LISTEN": "127.0.0.1:8080",
    "DANLU_REGISTRY_UPSTREAM": "127.0.0.1:50051",
    "DANLU_TRAINING_UPSTREAM": "127.0.0.1:50052",
    "DANLU_CONVERSION_UPSTREAM": "127.0.0.1:50053",
    "DANLU_INFERENCE_UPSTREAM": "127.0.0.1:50054",
}


def proto_services() -> list[str]:
    names = []
    for proto in sorted((ROOT / "proto" / "danlu").rglob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for service in re.findall(r"^service\s+(\w+)", text, re.M):
            names.append(f"{package.group(1)}.{service}")
    return names


def routes() -> dict[str, str]:
    """location prefix -> grpc_pass upstream."""
    text = GATEWAY_CONF.read_text()
    return dict(re.findall(r"location\s+(/[\w./]+)\s*\{\s*grpc_pass\s+grpc://(\w+);", text))


def test_every_proto_service_is_routed_to_its_owner():
    services = proto_services()
    assert "danlu.training.worker.v1alpha1.WorkerService" in services
    table = routes()
    for service in services:
        owner = next(o for prefix, o in OWNERS.items() if service.startswith(prefix))
        assert table.get(f"/{service}/") == owner, f"{service} is not routed to {owner}"
    assert table["/grpc.health.v1.Health/"] == "danlu_registry"


def test_template_variables_are_exactly_the_documented_ones():
    text = GATEWAY_CONF.read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used == set(GATEWAY_VARS) == set(RENDER)
    assert "${" not in render_gateway(RENDER)


def test_nginx_accepts_the_rendered_config(tmp_path):
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (`make nginx`); tests/e2e needs it and fails there")
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_gateway(RENDER))
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr

"""deploy/k8s: base and every overlay render with kustomize and validate strictly against the
Kubernetes 1.37 schemas offline; RBAC, probes, security and GPU settings are what they claim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/gpu")
DANLU = {"registry": 50051, "training": 50052, "conversion": 50053, "inference": 50054}


def _kustomize() -> list[str]:
    """A real kustomize: $DANLU_KUSTOMIZE, `kustomize`, or `kubectl kustomize` (kubectl bundles
    kustomize v5). Missing is a failure, not a skip."""
    if override := os.environ.get("DANLU_KUSTOMIZE"):
        return override.split()
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    pytest.fail("no kustomize: install kubectl (bundles kustomize) or set DANLU_KUSTOMIZE")


def _render(target: str) -> str:
    result = subprocess.run(
        [*_kustomize(), str(K8S / target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    text = _render(request.param)
    path = tmp_path_factory.mktemp("k8s") / (request.param.replace("/", "-") + ".yaml")
    path.write_text(text)
    return request.param, path, [d for d in yaml.safe_load_all(text) if d]


def _validate(path: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    assert tool.exists(), "kubernetes-validate is missing: `make venv` (requirements-dev.txt)"
    return subprocess.run(
        [str(tool), "--strict", "--quiet", str(path)], capture_output=True, text=True
    )


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_strict_schema_validation(rendered):
    _, path, docs = rendered
    assert len(docs) > 10
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_is_not_vacuous(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n"
        "    metadata: {labels: {a: b}}\n"
        "    spec: {containers: [{name: c, image: i:1, readinessProb: {}}]}\n"
    )
    assert _validate(bad).returncode != 0


def test_workloads_and_services_present(rendered):
    _, _, docs = rendered
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    accounts = _by_kind(docs, "ServiceAccount")
    for name in (*DANLU, "gateway"):
        assert name in deployments and name in services and name in accounts, name
        assert deployments[name]["spec"]["template"]["spec"]["serviceAccountName"] == name
    for name, port in DANLU.items():
        assert services[name]["spec"]["ports"][0]["port"] == port


def test_probes_security_and_resources(rendered):
    _, _, docs = rendered
    for name, deployment in _by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        ready, live = container["readinessProbe"], container["livenessProbe"]
        if name == "gateway":
            # Readiness is a gRPC health check routed through nginx to the registry; liveness
            # stays local (TCP) so a registry outage does not restart the gateway.
            assert ready["grpc"]["port"] == 8080 and "tcpSocket" in live
        else:
            assert ready["grpc"]["port"] == DANLU[name] == live["grpc"]["port"], name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        # Only the training service talks to the API server.
        assert pod["automountServiceAccountToken"] is (name == "training"), name


def test_credentials_only_through_secret_refs(rendered):
    _, _, docs = rendered
    for name, deployment in _by_kind(docs, "Deployment").items():
        for env in _container(deployment).get("env", []):
            if any(word in env["name"] for word in ("TOKEN", "SECRET", "PASSWORD", "URL")):
                if env["name"].endswith(("OBJECT_STORE_URL",)):
                    continue
                if "UPSTREAM" in env["name"]:
                    continue
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {env['name']}"
    for config in _by_kind(docs, "ConfigMap").values():
        for key, value in (config.get("data") or {}).items():
            assert not any(w in key for w in ("TOKEN", "SECRET_KEY", "ACCESS_KEY", "PASSWORD")), key
            assert "postgresql://" not in value, key


def test_training_role_grants_exactly_the_launcher_verbs(rendered):
    _, _, docs = rendered
    assert set(_by_kind(docs, "Role")) == {"training-launcher"}
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")
    rules = _by_kind(docs, "Role")["training-launcher"]["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any(rule.get("resourceNames") for rule in rules)
    expected = (
        {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
        | {("batch", "jobs/status", "get")}
        | {("", "pods", v) for v in ("get", "list", "watch", "delete")}
        # The worker-token Secret and the multi-node headless Service of each attempt, with
        # their ownerReference patch; never get/list/watch on Secrets.
        | {("", r, v) for r in ("secrets", "services") for v in ("create", "patch", "delete")}
    )
    assert granted == expected
    binding = _by_kind(docs, "RoleBinding")["training-launcher"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "training-launcher",
    }
    assert [s["name"] for s in binding["subjects"]] == ["training"]
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1  # one namespace per render (None for the base)
    assert binding["subjects"][0].get("namespace") == namespaces.pop()


def test_launcher_calls_are_covered_by_the_role():
    """Each Kubernetes API call in the launcher adapter maps to a granted rule (kept in step)."""
    source = (ROOT / "services/training/danlu_training/adapters/kubernetes.py").read_text()
    calls = {
        "create_namespaced_secret",
        "create_namespaced_service",
        "create_namespaced_job",
        "patch_namespaced_secret",
        "patch_namespaced_service",
        "read_namespaced_job_status",
        "delete_namespaced_job",
        "delete_namespaced_service",
        "delete_namespaced_secret",
    }
    used = set(
        re.findall(r"\.((?:create|read|patch|delete|list|watch|replace)_namespaced_\w+)", source)
    )
    assert used <= calls, (
        f"new Kubernetes API calls in the launcher: {used - calls}: update rbac.yaml"
    )


def test_training_runs_the_kubernetes_launcher(rendered):
    _, _, docs = rendered
    settings = next(
        d["data"]
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("danlu-settings")
    )
    assert settings["DANLU_TRAINING_LAUNCHER"] == "kubernetes"
    assert settings["DANLU_TRAINING_K8S_S3_SECRET"] == "danlu-s3"
    assert settings["DANLU_TRAINING_K8S_SERVICE_ACCOUNT"] in _by_kind(docs, "ServiceAccount")
    assert settings["DANLU_TRAINING_WORKER_CONTROL_TARGET"] == "training:50052"
    env = {e["name"]: e for e in _container(_by_kind(docs, "Deployment")["training"])["env"]}
    assert env["DANLU_TRAINING_K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )


def test_dev_overlay_brings_minio_postgres_and_secrets():
    docs = [d for d in yaml.safe_load_all(_render("overlays/dev")) if d]
    statefulsets = _by_kind(docs, "StatefulSet")
    assert {"minio", "postgres"} <= set(statefulsets)
    for sts in statefulsets.values():
        assert sts["spec"]["volumeClaimTemplates"], sts["metadata"]["name"]
    assert "minio-init" in _by_kind(docs, "Job")
    assert {"danlu-s3", "danlu-db", "danlu-auth"} <= set(_by_kind(docs, "Secret"))
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"danlu-dev"}


def test_gpu_overlay_runs_vllm_on_a_gpu():
    docs = [d for d in yaml.safe_load_all(_render("overlays/gpu")) if d]
    inference = _by_kind(docs, "Deployment")["inference"]
    container = _container(inference)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    pod = inference["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    settings = next(
        d["data"]
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("danlu-settings")
    )
    assert settings["DANLU_INFERENCE_DEFAULT_ENGINE"] == "vllm"
    assert int(settings["DANLU_TRAINING_K8S_GPUS_PER_NODE"]) > 0
    assert settings["DANLU_TRAINING_K8S_WORKER_IMAGE"].endswith("-cuda")
    assert not _by_kind(docs, "Secret")  # production credentials are never in the repository


def test_gateway_config_is_the_shared_nginx_template(rendered):
    _, _, docs = rendered
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gateway-nginx")
    )
    template = (ROOT / "deploy/gateway/nginx.conf").read_text()
    assert config["data"] == {"nginx.conf.template": template}
    env = {
        e["name"]: e["value"] for e in _container(_by_kind(docs, "Deployment")["gateway"])["env"]
    }
    for name, port in DANLU.items():
        assert env[f"DANLU_{name.upper()}_UPSTREAM"] == f"{name}:{port}"
        assert "${DANLU_" + name.upper() + "_UPSTREAM}" in template
    assert (K8S / "overlays/dev/postgres-init.sql").read_text() == (
        ROOT / "deploy/compose/postgres-init.sql"
    ).read_text()

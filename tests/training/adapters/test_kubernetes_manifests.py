"""Worker manifests of the Kubernetes launcher, validated offline against the Kubernetes API
schemas (kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from danlu_training.adapters.kubernetes import (
    KubernetesConfig,
    object_name,
    render_worker_manifests,
)
from danlu_training.adapters.launchers import KubernetesLauncher
from danlu_training.core.ports import LaunchRequest, WorkerStatus

K8S_VERSION = "1.33"
JOB = "projects/team-a/trainingJobs/llama-sft_v2.final"
CONFIG = KubernetesConfig(
    namespace="danlu",
    image="registry.example.com/danlu-worker:0.1.0",
    gpus_per_node=8,
    s3_secret="danlu-s3",
    ttl_seconds_after_finished=600,
    service_account="danlu-worker",
)


def request(gpus: int, nodes: int, attempt: int = 2) -> LaunchRequest:
    env = {
        "DANLU_WORKER_CONTROL_TARGET": "danlu-training.danlu.svc:50052",
        "DANLU_WORKER_JOB": JOB,
        "DANLU_WORKER_ATTEMPT": str(attempt),
        "DANLU_WORKER_TOKEN": "dl_secret-token",
        "DANLU_WORKER_OBJECT_STORE_URL": "s3://danlu?endpoint=http://minio:9000",
        "DANLU_WORKER_CACHE_DIR": "/ignored",
    }
    return LaunchRequest(job=JOB, attempt=attempt, env=env, gpus_per_node=gpus, nodes=nodes)


def validate(manifests: list[dict]) -> None:
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_single_node_job():
    manifests = render_worker_manifests(request(gpus=1, nodes=1), CONFIG)
    validate(manifests)
    assert [m["kind"] for m in manifests] == ["Secret", "Job"]
    secret, job = manifests
    assert secret["stringData"] == {"token": "dl_secret-token"}
    name = job["metadata"]["name"]
    assert len(name) <= 60 and name.endswith("-a2")
    labels = job["metadata"]["labels"]
    assert labels == {"danlu.dev/job": "team-a.llama-sft_v2.final", "danlu.dev/attempt": "2"}
    assert job["metadata"]["annotations"]["danlu.dev/training-job"] == JOB
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 600
    assert "completionMode" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "danlu-worker"
    assert spec["template"]["metadata"]["labels"] == labels
    [container] = pod["containers"]
    assert container["image"] == CONFIG.image
    assert container["command"] == ["python", "-m", "danlu_worker"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    env = env_of(container)
    # The token and the store credentials come from Secrets, never as plain values.
    assert env["DANLU_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "token",
    }
    assert env["DANLU_WORKER_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "danlu-s3",
        "key": "secret-key",
    }
    assert "dl_secret-token" not in str(job)
    assert env["DANLU_WORKER_JOB"]["value"] == JOB
    assert env["DANLU_WORKER_CACHE_DIR"]["value"] == "/var/cache/danlu-worker"


def test_one_node_several_gpus_runs_torchrun_standalone():
    manifests = render_worker_manifests(request(gpus=4, nodes=1), CONFIG)
    validate(manifests)
    container = by_kind(manifests)["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "torchrun",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--standalone",
        "-m",
        "danlu_worker",
    ]


def test_multi_node_indexed_job_with_rendezvous_service():
    manifests = render_worker_manifests(request(gpus=8, nodes=4), CONFIG)
    validate(manifests)
    assert [m["kind"] for m in manifests] == ["Secret", "Service", "Job"]
    kinds = by_kind(manifests)
    job, service = kinds["Job"], kinds["Service"]
    name = job["metadata"]["name"]
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["backoffLimit"] == 0
    assert service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == job["spec"]["template"]["metadata"]["labels"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["command"] == [
        "torchrun",
        "--nnodes=4",
        "--nproc-per-node=8",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={name}-0.{name}",
        "--master-port=29500",
        "-m",
        "danlu_worker",
    ]
    index = env_of(container)["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]
    assert index["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # Pod hostnames are {name}-{index}: they must stay valid DNS labels.
    assert len(f"{name}-999") <= 63


def test_cpu_job_asks_for_no_gpu():
    manifests = render_worker_manifests(request(gpus=0, nodes=1), CONFIG)
    validate(manifests)
    container = by_kind(manifests)["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert "resources" not in container


def test_names_are_unique_per_job_and_attempt():
    names = {
        object_name("projects/a/trainingJobs/x", 1),
        object_name("projects/b/trainingJobs/x", 1),
        object_name("projects/a/trainingJobs/x", 2),
        object_name("projects/a/trainingJobs/" + "y" * 63, 1),
    }
    assert len(names) == 4 and all(len(n) <= 59 for n in names)


def test_manifest_files_pass_the_strict_cli(tmp_path: Path):
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump_all(render_worker_manifests(request(8, 2), CONFIG)))
    result = subprocess.run(
        [Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k", K8S_VERSION, path],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class FakeCluster:
    def __init__(self):
        self.applied: list[dict] = []
        self.deleted: list[tuple[str, str]] = []
        self.status: WorkerStatus | None = WorkerStatus(running=True, pending=True)

    def apply(self, manifests):
        self.applied.extend(manifests)

    def job_status(self, namespace, name):
        return self.status

    def delete(self, namespace, name):
        self.deleted.append((namespace, name))


def test_launcher_applies_polls_and_deletes():
    cluster = FakeCluster()
    launcher = KubernetesLauncher(CONFIG, cluster)
    handle = launcher.launch(request(gpus=2, nodes=1, attempt=1))
    job = by_kind(cluster.applied)["Job"]
    assert handle == f"k8s:danlu/{job['metadata']['name']}"
    assert launcher.poll(handle) == WorkerStatus(running=True, pending=True)
    cluster.status = None  # deleted behind our back (TTL): the worker is gone
    assert launcher.poll(handle) == WorkerStatus(running=False)
    launcher.kill(handle)
    assert cluster.deleted == [("danlu", job["metadata"]["name"])]
    caps = launcher.capabilities()
    assert caps.cuda and caps.gpus == 8


@pytest.mark.parametrize("version", ["1.30", "1.37"])
def test_manifests_valid_across_versions(version):
    for manifests in (
        render_worker_manifests(request(1, 1), CONFIG),
        render_worker_manifests(request(8, 3), CONFIG),
    ):
        for manifest in manifests:
            kubernetes_validate.validate(manifest, version, strict=True)

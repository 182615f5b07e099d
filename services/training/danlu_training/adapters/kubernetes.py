"""Kubernetes manifests for one worker attempt, and the small API the launcher applies them with.

Per attempt:

- a ``Secret`` with the attempt's worker token (never in the Job's spec, which more people can
  read than Secrets);
- for several nodes, a headless ``Service`` that gives every pod a stable DNS name
  (``{job}-{index}.{service}``) for the torchrun rendezvous;
- the ``batch/v1`` ``Job``: ``backoffLimit: 0`` (danlu retries attempts itself and resumes
  from checkpoints), ``ttlSecondsAfterFinished`` to clean up, GPUs as ``nvidia.com/gpu``
  limits, object-store credentials from a Secret through ``secretKeyRef``. Several nodes run as
  an Indexed Job (``completions = parallelism = nodes``); pod ``i`` is torchrun node ``i`` and
  node 0 hosts the rendezvous.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from danlu_training.core.ports import LaunchRequest, WorkerStatus

LABEL_JOB = "danlu.dev/job"
LABEL_ATTEMPT = "danlu.dev/attempt"
ANNOTATION_JOB = "danlu.dev/training-job"
TOKEN_ENV = "DANLU_WORKER_TOKEN"
RENDEZVOUS_PORT = 29500
CACHE_DIR = "/var/cache/danlu-worker"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class KubernetesConfig:
    namespace: str
    image: str
    # GPUs of one node that a job may ask for (0: CPU-only pods).
    gpus_per_node: int = 0
    # Secret holding the object store credentials under `access-key` and `secret-key`.
    s3_secret: str = ""
    ttl_seconds_after_finished: int = 3600
    service_account: str = ""
    # Extra pod labels (e.g. for network policies); danlu's own labels win on conflicts.
    labels: Mapping[str, str] = field(default_factory=dict)


def object_name(job: str, attempt: int) -> str:
    """A DNS-1123 name for one attempt's objects, unique per job resource name.

    Short enough that the pods' hostnames (``{name}-{index}``) stay within 63 characters.
    """
    job_id = job.rsplit("/", 1)[-1]
    readable = _NOT_DNS.sub("-", job_id.lower()).strip("-")[:36].rstrip("-")
    digest = hashlib.sha256(job.encode()).hexdigest()[:8]
    return f"dl-{readable}-{digest}-a{attempt}"


def _label_value(job: str) -> str:
    """``project.job`` when that is a valid label value, else a digest (labels cannot hold
    ``/`` and are at most 63 characters; the annotation keeps the full name)."""
    project, _, job_id = job.removeprefix("projects/").partition("/trainingJobs/")
    value = f"{project}.{job_id}"
    if len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?", value):
        return value
    return hashlib.sha256(job.encode()).hexdigest()[:40]


def render_worker_manifests(request: LaunchRequest, config: KubernetesConfig) -> list[dict]:
    """The objects to create for one attempt, in creation order (Secret, Service?, Job)."""
    name = object_name(request.job, request.attempt)
    nodes = max(1, request.nodes)
    gpus = max(0, request.gpus_per_node)
    labels = {
        **config.labels,
        LABEL_JOB: _label_value(request.job),
        LABEL_ATTEMPT: str(request.attempt),
    }
    metadata = {
        "name": name,
        "namespace": config.namespace,
        "labels": labels,
        "annotations": {ANNOTATION_JOB: request.job},
    }
    token_secret = f"{name}-token"
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**metadata, "name": token_secret},
            "type": "Opaque",
            "stringData": {"token": request.env[TOKEN_ENV]},
        }
    ]
    if nodes > 1:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "clusterIP": "None",
                    "selector": {
                        LABEL_JOB: labels[LABEL_JOB],
                        LABEL_ATTEMPT: labels[LABEL_ATTEMPT],
                    },
                    # Pods must resolve each other before they are ready.
                    "publishNotReadyAddresses": True,
                    "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
                },
            }
        )
    manifests.append(_job(request, config, metadata, token_secret, name, nodes, gpus))
    return manifests


def _env(request: LaunchRequest, config: KubernetesConfig, token_secret: str) -> list[dict]:
    env: list[dict[str, Any]] = [
        {"name": key, "value": value}
        for key, value in sorted(request.env.items())
        if key not in (TOKEN_ENV, "DANLU_WORKER_CACHE_DIR")
    ]
    env.append({"name": "DANLU_WORKER_CACHE_DIR", "value": CACHE_DIR})
    env.append(
        {
            "name": TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}},
        }
    )
    if config.s3_secret:
        for var, key in (
            ("DANLU_WORKER_S3_ACCESS_KEY", "access-key"),
            ("DANLU_WORKER_S3_SECRET_KEY", "secret-key"),
        ):
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": config.s3_secret, "key": key}}}
            )
    return env


def _command(name: str, nodes: int, gpus: int) -> list[str]:
    if nodes == 1 and gpus <= 1:
        return ["python", "-m", "danlu_worker"]
    args = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={max(gpus, 1)}"]
    if nodes == 1:
        args.append("--standalone")
    else:
        # Static rendezvous: node ranks from the Job's completion index, node 0's stable name
        # (pod hostname {job}-0 under the headless Service) as the master.
        args += [
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            f"--master-addr={name}-0.{name}",
            f"--master-port={RENDEZVOUS_PORT}",
        ]
    return [*args, "-m", "danlu_worker"]


def _job(
    request: LaunchRequest,
    config: KubernetesConfig,
    metadata: dict,
    token_secret: str,
    name: str,
    nodes: int,
    gpus: int,
) -> dict:
    env = _env(request, config, token_secret)
    if nodes > 1:
        env.append(
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            }
        )
    container: dict[str, Any] = {
        "name": "worker",
        "image": config.image,
        "command": _command(name, nodes, gpus),
        "env": env,
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_DIR},
            # NCCL and DataLoader workers need more shared memory than the default 64 MiB.
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    if nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if nodes > 1:
        pod_spec["subdomain"] = name
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "template": {
            "metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]},
            "spec": pod_spec,
        },
    }
    if nodes > 1:
        spec |= {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


class KubernetesApi(Protocol):
    """What the launcher needs from a cluster."""

    def apply(self, manifests: list[dict]) -> None:
        """Create the objects (in order); ones that exist already are left as they are."""
        ...

    def job_status(self, namespace: str, name: str) -> WorkerStatus | None:
        """None when the Job does not exist (any more)."""
        ...

    def delete(self, namespace: str, name: str) -> None:
        """Delete the attempt's Job (with its pods), Service and Secret; missing is fine."""
        ...


class OfficialKubernetesApi:
    """:class:`KubernetesApi` through the official ``kubernetes`` client (in-cluster config,
    else ``~/.kube/config``). Install ``danlu-training[kubernetes]``."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._client = client
        self._core = client.CoreV1Api()
        self._batch = client.BatchV1Api()

    def _ignore(self, status: int, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except self._client.ApiException as exc:
            if exc.status != status:
                raise
            return None

    def apply(self, manifests: list[dict]) -> None:
        created_job = None
        for m in manifests:
            namespace = m["metadata"]["namespace"]
            create = {
                "Secret": self._core.create_namespaced_secret,
                "Service": self._core.create_namespaced_service,
                "Job": self._batch.create_namespaced_job,
            }[m["kind"]]
            result = self._ignore(409, create, namespace, m)
            if m["kind"] == "Job" and result is not None:
                created_job = result
        if created_job is not None:
            # Owned by the Job, the Secret and Service go when its TTL removes it.
            owner = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": created_job.metadata.name,
                "uid": created_job.metadata.uid,
            }
            patch = {"metadata": {"ownerReferences": [owner]}}
            for m in manifests:
                if m["kind"] == "Secret":
                    self._core.patch_namespaced_secret(m["metadata"]["name"], namespace, patch)
                elif m["kind"] == "Service":
                    self._core.patch_namespaced_service(m["metadata"]["name"], namespace, patch)

    def job_status(self, namespace: str, name: str) -> WorkerStatus | None:
        job = self._ignore(404, self._batch.read_namespaced_job_status, name, namespace)
        if job is None:
            return None
        status, spec = job.status, job.spec
        if (status.succeeded or 0) >= (spec.completions or 1):
            return WorkerStatus(running=False, exit_code=0)
        if (status.failed or 0) > 0:
            return WorkerStatus(running=False, exit_code=1)
        # Pods count as ready once running (workers have no readiness probe).
        return WorkerStatus(running=True, pending=(status.ready or 0) < (spec.parallelism or 1))

    def delete(self, namespace: str, name: str) -> None:
        body = self._client.V1DeleteOptions(propagation_policy="Background")
        self._ignore(404, self._batch.delete_namespaced_job, name, namespace, body=body)
        self._ignore(404, self._core.delete_namespaced_service, name, namespace)
        self._ignore(404, self._core.delete_namespaced_secret, f"{name}-token", namespace)

"""The distributed topology without Docker: the services as separate processes (as in compose),
PostgreSQL, a SeaweedFS S3 server, auth on, and deploy/gateway/nginx.conf served by the
distribution's nginx on loopback. The journey runs through the `danlu` CLI against the single
gateway endpoint, and a second project's token must see none of the first project's resources.

Wiring, as compose does it:
* clients (the CLI here) and training workers dial the gateway only;
* services dial each other directly (training/inference -> registry), forwarding the caller's
  own bearer token: a service-wide DANLU_*_REGISTRY_TOKEN is bound to ONE project, so it would
  both break other projects and let a job of project B resolve project A's names as A.

nginx comes from `make nginx` (the Debian package); the test fails, not skips, without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest

from danlu.conversion.v1 import conversion_service_pb2 as conversion_pb
from danlu.conversion.v1 import conversion_service_pb2_grpc as conversion_grpc
from danlu_kit.auth import hash_token, new_token
from tests.fixtures.gateway import find_nginx, render_gateway
from tests.fixtures.postgres import ADMIN_URL
from tests.fixtures.s3 import SeaweedS3Server, _die_with_parent

BIN = Path(sys.executable).parent
SERVICES = ("registry", "training", "conversion", "inference")
# One unauthenticated call per service, through the gateway: UNAUTHENTICATED proves the route
# and the service behind it are up (UNAVAILABLE: not yet).
PROBES = {
    "registry": "/danlu.registry.v1.RegistryService/ListDatasets",
    "training": "/danlu.training.v1.TrainingService/ListTrainingJobs",
    "conversion": "/danlu.conversion.v1.ConversionService/ListConversionJobs",
    "inference": "/danlu.inference.v1.InferenceService/ListDeployments",
}
QUESTION = "请介绍一下你自己"
ANSWER = "我是一个由丹炉微调的个人助手。"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Topology:
    base: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.base / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            self.processes[name] = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def report(self, lines: int = 30) -> str:
        """Every log's tail (services, nginx, workers): the assertion message on failure."""
        paths = dict(self.logs)
        for worker_log in sorted((self.base / "training" / "logs").glob("**/*.log")):
            paths[f"worker {worker_log.parent.name}/{worker_log.name}"] = worker_log
        parts = []
        for name, path in paths.items():
            proc = self.processes.get(name)
            exited = "" if proc is None or proc.poll() is None else f" (exited {proc.returncode})"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"----- {name}{exited} -----\n{tail}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # each runs in its own session
        deadline = time.monotonic() + 10
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def databases():
    """One PostgreSQL database per service, as in compose (each has its own migrations)."""
    names = {svc: f"danlu_topo_{svc}_{uuid.uuid4().hex[:8]}" for svc in SERVICES}
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {ADMIN_URL} (set DANLU_TEST_POSTGRES_URL): {exc}")
    with admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield {svc: f"{base}/{name}" for svc, name in names.items()}
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_ready(topology: Topology, gateway: str, timeout: float = 90.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    waiting = dict(PROBES)
    with grpc.insecure_channel(gateway) as channel:
        while waiting:
            for name, proc in topology.processes.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited early\n{topology.report()}", pytrace=False)
            for service, method in list(waiting.items()):
                try:
                    channel.unary_unary(method)(b"", timeout=2)
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                        del waiting[service]
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not ready through the gateway: {sorted(waiting)}\n{topology.report()}"
                )
            time.sleep(0.3)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="danlu.registry.v1.RegistryService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_journey_through_the_gateway_with_project_isolation(
    tmp_path, s3_server: SeaweedS3Server, databases, tiny_model_dir
):
    nginx = find_nginx()
    if nginx is None:
        pytest.fail("nginx is missing: `make nginx` installs it (Debian package nginx-light)")
    topology = Topology(tmp_path)
    token_a, token_b = new_token(), new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"{hash_token(token_a)} alpha ci\n{hash_token(token_b)} beta ci\n")
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    gateway = addr["gateway"]
    bucket = f"topo-{uuid.uuid4().hex[:10]}"

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DANLU_")}
    for svc in SERVICES:
        prefix = f"DANLU_{svc.upper()}_"
        env = {
            **base_env,
            prefix + "HOST": "127.0.0.1",
            prefix + "PORT": str(ports[svc]),
            prefix + "DATA_DIR": str(tmp_path / svc),
            prefix + "DATABASE_URL": databases[svc],
            prefix + "AUTH": "on",
            prefix + "AUTH_TOKENS_FILE": str(tokens_file),
        }
        if svc in ("registry", "training", "conversion"):
            env |= {
                prefix + "OBJECT_STORE_URL": f"s3://{bucket}?endpoint={s3_server.endpoint}",
                prefix + "S3_ACCESS_KEY": s3_server.access_key,
                prefix + "S3_SECRET_KEY": s3_server.secret_key,
            }
        if svc in ("training", "conversion", "inference"):
            env[prefix + "REGISTRY_TARGET"] = addr["registry"]
        if svc == "training":
            env |= {
                prefix + "WORKER_CONTROL_TARGET": gateway,  # exercises the WorkerService route
                prefix + "GPUS": "0",
                prefix + "SCHEDULER_INTERVAL_SECONDS": "0.2",
            }
        if svc == "inference":
            env |= {prefix + "DEFAULT_ENGINE": "transformers", prefix + "TORCH_THREADS": "1"}
        topology.spawn(svc, [str(BIN / f"danlu-{svc}")], env)

    conf_dir = tmp_path / "nginx"
    (conf_dir / "logs").mkdir(parents=True)  # nginx opens PREFIX/logs/error.log before the conf
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        render_gateway(
            {
                "DANLU_GATEWAY_LISTEN": gateway,
                **{f"DANLU_{s.upper()}_UPSTREAM": addr[s] for s in SERVICES},
            }
        )
    )
    nginx_args = [nginx, "-p", str(conf_dir), "-c", str(conf)]
    pid_directive = f"pid {conf_dir / 'nginx.pid'};"
    checked = subprocess.run(
        [*nginx_args, "-t", "-g", pid_directive], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
    topology.spawn("nginx", [*nginx_args, "-g", f"daemon off; {pid_directive}"], dict(os.environ))

    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("DANLU_")}

    def danlu(*args: str, token: str | None = token_a, project: str = "alpha", rc: int = 0):
        auth = ["--token", token] if token else []
        cmd = [str(BIN / "danlu"), "--target", gateway, *auth, "--project", project, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=300)
        assert done.returncode == rc, (
            f"danlu {' '.join(args)} (project {project}) exited {done.returncode}, "
            f"expected {rc}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}\n"
            f"{topology.report()}"
        )
        return done

    try:
        wait_ready(topology, gateway)

        # -- the journey of project alpha, all through the gateway -------------------------
        danlu("models", "push", str(tiny_model_dir), "--name", "tiny")
        data = tmp_path / "assistant.jsonl"
        record = {
            "messages": [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        data.write_text((json.dumps(record, ensure_ascii=False) + "\n") * 64)
        danlu("datasets", "push", str(data), "--name", "assistant")
        preview = danlu("datasets", "preview", "assistant", "--model", "tiny", "-n", "1")
        assert QUESTION in preview.stdout
        train = danlu(
            "train",
            "tiny_lora_cpu",
            "--name",
            "tj",
            "--set",
            "optimization.max_steps=4",
            "--set",
            "checkpoint.every_n_steps=2",
            "--set",
            "evaluation.every_n_steps=2",
            "--set",
            "evaluation.max_new_tokens=8",
            "--follow",
        )
        assert "SUCCEEDED" in train.stdout
        evals = json.loads(danlu("-o", "json", "jobs", "evals", "tj").stdout)
        assert evals["steps"] == [2, 4] and evals["prompts"][0]["prompt"] == QUESTION
        checkpoints = json.loads(danlu("-o", "json", "jobs", "checkpoints", "tj").stdout)
        assert [int(c["step"]) for c in checkpoints] == [2, 4]
        # checkpoint -> adapter -> merged model (the conversion service, through the gateway)
        danlu("convert", "tj", "--checkpoint", "step-4", "--name", "tj-adapter", "--fp32")
        danlu("merge", "tiny", "tj-adapter", "--name", "tj-merged", "--fp32")
        models = json.loads(danlu("-o", "json", "models", "ls").stdout)
        assert {m["name"].rsplit("/", 1)[-1] for m in models} == {"tiny", "tj-adapter", "tj-merged"}
        danlu("deploy", "tj-merged")
        danlu("chat", "tj-merged", "-p", QUESTION, "--max-new-tokens", "8", "--no-streamer")

        # -- project beta sees nothing of alpha ---------------------------------------------
        for group in ("datasets", "models", "jobs", "conversions", "deployments"):
            listed = danlu("-o", "json", group, "ls", token=token_b, project="beta")
            assert json.loads(listed.stdout) == [], (group, listed.stdout)
        for args in (
            ("datasets", "show", "projects/alpha/datasets/assistant"),
            ("models", "show", "projects/alpha/models/tiny"),
            ("jobs", "show", "projects/alpha/trainingJobs/tj"),
            ("models", "show", "projects/alpha/models/tj-merged"),
            ("deployments", "show", "projects/alpha/deployments/tj-merged"),
            # training resolves names with beta's own token: alpha's model is not beta's
            ("train", "tiny_lora_cpu", "--set", "base_model=projects/alpha/models/tiny",
             "--set", "datasets[0].dataset=projects/alpha/datasets/assistant",
             "--validate-only"),
            # conversion keeps each job inside its caller's project
            ("convert", "projects/alpha/trainingJobs/tj", "--checkpoint", "step-4",
             "--name", "stolen-adapter"),
            ("merge", "projects/alpha/models/tiny", "projects/alpha/models/tj-adapter",
             "--name", "stolen-merge"),
        ):  # fmt: skip
            refused = danlu(*args, token=token_b, project="beta", rc=1)
            assert "NOT_FOUND" in refused.stderr, (args, refused.stderr)
        # conversion jobs by raw gRPC too: beta's own list is empty, alpha's is NOT_FOUND
        with grpc.insecure_channel(gateway) as channel:
            conversion = conversion_grpc.ConversionServiceStub(channel)
            listed = conversion.ListConversionJobs(
                conversion_pb.ListConversionJobsRequest(parent="projects/beta"),
                metadata=(("authorization", f"Bearer {token_b}"),),
                timeout=10,
            )
            assert list(listed.conversion_jobs) == []
            with pytest.raises(grpc.RpcError) as raised:
                conversion.ListConversionJobs(
                    conversion_pb.ListConversionJobsRequest(parent="projects/alpha"),
                    metadata=(("authorization", f"Bearer {token_b}"),),
                    timeout=10,
                )
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        # beta's token naming project alpha by the short name: still NOT_FOUND
        danlu("datasets", "show", "assistant", token=token_b, project="alpha", rc=1)
        # no token, or a wrong one: UNAUTHENTICATED behind the gateway
        for args in (("datasets", "ls"), ("jobs", "ls"), ("deployments", "ls")):
            refused = danlu(*args, token=None, rc=1)
            assert "UNAUTHENTICATED" in refused.stderr, refused.stderr
        assert "UNAUTHENTICATED" in danlu("models", "ls", token="dl_wrong", rc=1).stderr

        # -- the gateway's own answers ---------------------------------------------------------
        with grpc.insecure_channel(gateway) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary("/no.such.v1.Service/Method")(b"", timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # a service that is down: UNAVAILABLE through the gateway, the others unaffected
            conversion_proc = topology.processes["conversion"]
            os.killpg(conversion_proc.pid, signal.SIGTERM)
            conversion_proc.wait(timeout=15)
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(PROBES["conversion"])(b"", timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
        danlu("datasets", "ls")
    finally:
        topology.stop()

"""``python -m danlu_kit.healthcheck [HOST:PORT] [SERVICE]``: a gRPC health probe for images.

Container healthchecks (Dockerfile ``HEALTHCHECK``, compose ``healthcheck``) call this instead of
shipping a ``grpc_health_probe`` binary: every danlu image already has grpcio and the health
stubs. It asks ``grpc.health.v1.Health/Check`` (the empty service name means the whole server)
and exits 0 when the answer is ``SERVING``, 1 otherwise (not serving, unreachable, timeout).
Kubernetes uses its built-in ``grpc`` probes against the same health service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"


def check(target: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(serving, a one-line description) of ``service`` on ``target``."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name}"  # type: ignore[attr-defined]
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m danlu_kit.healthcheck",
        description="Exit 0 when a gRPC server reports SERVING (grpc.health.v1), else 1.",
    )
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET, help="HOST:PORT")
    parser.add_argument("service", nargs="?", default="", help="service name ('' = the server)")
    parser.add_argument("-t", "--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    serving, line = check(args.target, args.service, args.timeout)
    print(line, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())

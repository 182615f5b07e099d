"""gRPC server bootstrap shared by every service and by the embedded all-in-one process.

A service contributes *components*: objects that add their servicers to a server and name the
gRPC services they implement. The bootstrap adds health, reflection, interceptors and metrics,
and shuts down gracefully (in-flight calls get a grace period) on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from danlu_kit.auth import TokenBook
from danlu_kit.interceptors import server_interceptors
from danlu_kit.settings import ServerSettings

log = logging.getLogger("danlu.server")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class Component(Protocol):
    """Something that serves one or more gRPC services.

    Optional members, used when a component has them:

    - ``async def start(self, port: int) -> None``: called once the port is bound and the
      server accepts calls (background tasks start here; ``port`` is the bound port, known only
      now when the options ask for port 0).
    - ``self_authenticated_services: Sequence[str]``: services among ``service_names`` whose
      callers authenticate with their own credentials instead of a bearer token (the training
      worker API); the auth interceptor lets their calls through.
    """

    service_names: Sequence[str]

    def register(self, server: aio.Server) -> None: ...

    async def close(self) -> None: ...


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051
    # None turns auth off; the embedded default only listens on loopback then.
    tokens: TokenBook | None = None
    metrics_port: int | None = None
    grace_seconds: float = 10.0
    extra_interceptors: list[aio.ServerInterceptor] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ServerOptions:
        """A service run alone: where it listens, its auth and metrics port, from its settings."""
        return cls(
            host=settings.host,
            port=settings.port,
            tokens=settings.tokens,
            metrics_port=settings.metrics_port,
        )


class Server:
    """A started gRPC server; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, components: Sequence[Component], options: ServerOptions):
        if options.tokens is None and options.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("auth is off: refusing to listen on a non-loopback address")
        self.components = list(components)
        self.options = options
        self.port = 0
        self._health: health.aio.HealthServicer | None = None
        self_authenticated = [
            name
            for component in self.components
            for name in getattr(component, "self_authenticated_services", ())
        ]
        self._server = aio.server(
            interceptors=[
                *server_interceptors(options.tokens, self_authenticated),
                *options.extra_interceptors,
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )

    async def start(self) -> Server:
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
        for component in self.components:
            component.register(self._server)
            names.extend(component.service_names)
        reflection.enable_server_reflection(names, self._server)
        self.port = self._server.add_insecure_port(f"{self.options.host}:{self.options.port}")
        if self.options.metrics_port is not None:
            start_http_server(self.options.metrics_port, addr=self.options.host)
        await self._server.start()
        for component in self.components:
            start = getattr(component, "start", None)
            if start is not None:
                await start(self.port)
        serving = health_pb2.HealthCheckResponse.SERVING
        await health_servicer.set("", serving)
        for component in self.components:
            for name in component.service_names:
                await health_servicer.set(name, serving)
        self._health = health_servicer
        log.info(
            "serving", extra={"address": f"{self.options.host}:{self.port}", "services": names}
        )
        return self

    async def stop(self, grace: float | None = None) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(self.options.grace_seconds if grace is None else grace)
        for component in self.components:
            await component.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def serve_forever(components: Sequence[Component], options: ServerOptions) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight calls and close components."""
    server = await Server(components, options).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": options.grace_seconds})
    await server.stop()

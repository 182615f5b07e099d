"""`danlu-registry`: run the registry service alone (its own process and port)."""

from __future__ import annotations

import asyncio

from danlu_kit.log import configure_logging
from danlu_kit.server import ServerOptions, serve_forever
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings


def main() -> None:
    configure_logging()
    settings = RegistrySettings.from_env()
    component = build_registry(settings)
    options = ServerOptions(
        host=settings.host,
        port=settings.port,
        tokens=settings.tokens,
        metrics_port=settings.metrics_port,
    )
    asyncio.run(serve_forever([component], options))


if __name__ == "__main__":
    main()

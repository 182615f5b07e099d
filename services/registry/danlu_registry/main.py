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
    asyncio.run(serve_forever([component], ServerOptions.from_settings(settings)))


if __name__ == "__main__":
    main()

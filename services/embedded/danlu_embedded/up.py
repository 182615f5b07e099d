"""`danlu up`: all services in one process on one port (SQLite + local object store, auth off).

Same servicers as the standalone services, different composition root. Services whose issue has
not landed yet are simply not registered, so their RPCs answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from danlu_kit.log import configure_logging
from danlu_kit.server import Server, ServerOptions, serve_forever
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings


def embedded_components(data_dir: Path) -> list:
    data_dir.mkdir(parents=True, exist_ok=True)
    # The embedded default uses the same settings classes, pinned to local storage and no auth.
    environ = {
        **os.environ,
        "DANLU_REGISTRY_DATA_DIR": str(data_dir),
        "DANLU_REGISTRY_DATABASE_URL": f"sqlite:///{data_dir}/danlu.db",
        "DANLU_REGISTRY_OBJECT_STORE_URL": f"file://{data_dir}/objects",
        "DANLU_REGISTRY_AUTH": "off",
    }
    return [build_registry(RegistrySettings.from_env(environ))]


def options(port: int) -> ServerOptions:
    return ServerOptions(host="127.0.0.1", port=port, tokens=None)


async def start_embedded(data_dir: Path, port: int = 0) -> Server:
    """Start in the current event loop (tests use this with port 0)."""
    return await Server(embedded_components(data_dir), options(port)).start()


def run(data_dir: Path, port: int, log_level: str = "info") -> None:
    configure_logging(log_level)
    asyncio.run(serve_forever(embedded_components(data_dir), options(port)))

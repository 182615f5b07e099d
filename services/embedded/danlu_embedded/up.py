"""`danlu up`: all services in one process on one port (SQLite + local object store, auth off).

Same servicers as the standalone services, different composition root. Services whose issue has
not landed yet are simply not registered, so their RPCs answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from danlu_conversion.service import build_conversion
from danlu_conversion.settings import ConversionSettings
from danlu_inference.service import build_inference
from danlu_inference.settings import InferenceSettings
from danlu_kit.log import configure_logging
from danlu_kit.server import Server, ServerOptions, serve_forever
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from danlu_training.service import build_training
from danlu_training.settings import TrainingSettings


def embedded_components(
    data_dir: Path, own_target: str | Callable[[], str] = "127.0.0.1:50051"
) -> list:
    """``own_target``: this process's address (services call each other through it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # The embedded default uses the same settings classes, pinned to local storage and no auth.
    environ = {
        **os.environ,
        "DANLU_REGISTRY_DATA_DIR": str(data_dir),
        "DANLU_REGISTRY_DATABASE_URL": f"sqlite:///{data_dir}/danlu.db",
        "DANLU_REGISTRY_OBJECT_STORE_URL": f"file://{data_dir}/objects",
        "DANLU_REGISTRY_AUTH": "off",
        "DANLU_INFERENCE_DATA_DIR": str(data_dir),
        "DANLU_INFERENCE_DATABASE_URL": f"sqlite:///{data_dir}/danlu.db",
        "DANLU_INFERENCE_AUTH": "off",
        # Training shares the object store with the registry: workers read its objects by key.
        # Workers dial this server too (the component's own address once bound).
        "DANLU_TRAINING_DATA_DIR": str(data_dir),
        "DANLU_TRAINING_DATABASE_URL": f"sqlite:///{data_dir}/danlu.db",
        "DANLU_TRAINING_OBJECT_STORE_URL": f"file://{data_dir}/objects",
        "DANLU_TRAINING_HOST": "127.0.0.1",
        "DANLU_TRAINING_AUTH": "off",
        # Conversion reads checkpoints from the same store and runs jobs in-process (CPU).
        "DANLU_CONVERSION_DATA_DIR": str(data_dir),
        "DANLU_CONVERSION_DATABASE_URL": f"sqlite:///{data_dir}/danlu.db",
        "DANLU_CONVERSION_OBJECT_STORE_URL": f"file://{data_dir}/objects",
        "DANLU_CONVERSION_AUTH": "off",
    }
    return [
        build_registry(RegistrySettings.from_env(environ)),
        build_training(TrainingSettings.from_env(environ), registry_target=own_target),
        build_inference(InferenceSettings.from_env(environ), registry_target=own_target),
        build_conversion(ConversionSettings.from_env(environ), registry_target=own_target),
    ]


def options(port: int) -> ServerOptions:
    return ServerOptions(host="127.0.0.1", port=port, tokens=None)


async def start_embedded(data_dir: Path, port: int = 0) -> Server:
    """Start in the current event loop (tests use this with port 0)."""
    server = Server(
        embedded_components(data_dir, lambda: f"127.0.0.1:{server.port}"), options(port)
    )
    return await server.start()


def run(data_dir: Path, port: int, log_level: str = "info") -> None:
    configure_logging(log_level)
    components = embedded_components(data_dir, f"127.0.0.1:{port}")
    asyncio.run(serve_forever(components, options(port)))

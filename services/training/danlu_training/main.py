"""`danlu-training`: run the training service alone (its own process and port)."""

from __future__ import annotations

import asyncio

from danlu_kit.log import configure_logging
from danlu_kit.server import ServerOptions, serve_forever
from danlu_training.service import build_training
from danlu_training.settings import TrainingSettings


def main() -> None:
    configure_logging()
    settings = TrainingSettings.from_env()
    component = build_training(settings)
    asyncio.run(serve_forever([component], ServerOptions.from_settings(settings)))


if __name__ == "__main__":
    main()

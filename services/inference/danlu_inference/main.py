"""`danlu-inference`: run the inference service alone (its own process and port)."""

from __future__ import annotations

import asyncio

from danlu_inference.service import build_inference
from danlu_inference.settings import InferenceSettings
from danlu_kit.log import configure_logging
from danlu_kit.server import ServerOptions, serve_forever


def main() -> None:
    configure_logging()
    settings = InferenceSettings.from_env()
    component = build_inference(settings)
    asyncio.run(serve_forever([component], ServerOptions.from_settings(settings)))


if __name__ == "__main__":
    main()

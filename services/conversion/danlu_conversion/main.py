"""`danlu-conversion`: run the conversion service alone (its own process and port)."""

from __future__ import annotations

import asyncio

from danlu_conversion.service import build_conversion
from danlu_conversion.settings import ConversionSettings
from danlu_kit.log import configure_logging
from danlu_kit.server import ServerOptions, serve_forever


def main() -> None:
    configure_logging()
    settings = ConversionSettings.from_env()
    component = build_conversion(settings)
    asyncio.run(serve_forever([component], ServerOptions.from_settings(settings)))


if __name__ == "__main__":
    main()

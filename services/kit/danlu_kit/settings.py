"""Reading ``DANLU_<SERVICE>_<SETTING>`` environment variables with precise errors.

Each service has one ``settings.py`` that calls these helpers; nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from danlu_kit.auth import TokenBook
from danlu_kit.errors import FieldViolation, InvalidArgument


class Env:
    """The variables of one service: ``Env("REGISTRY").str("PORT")`` reads DANLU_REGISTRY_PORT."""

    def __init__(self, service: str, environ: Mapping[str, str] | None = None):
        self.prefix = f"DANLU_{service.upper()}_"
        self.environ = os.environ if environ is None else environ

    def var(self, name: str) -> str:
        return self.prefix + name

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(self.var(name))
        return default if value in (None, "") else value

    def int(self, name: str, default: int) -> int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise self._bad(name, f"expected an integer, got {raw!r}") from None

    def float(self, name: str, default: float) -> float:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise self._bad(name, f"expected a number, got {raw!r}") from None

    def bool(self, name: str, default: bool) -> bool:
        raw = self.str(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise self._bad(name, f"expected on/off, got {raw!r}")

    def path(self, name: str, default: Path) -> Path:
        raw = self.str(name)
        return default if raw is None else Path(raw).expanduser()

    def tokens(self) -> TokenBook | None:
        """Auth settings: ``AUTH`` (on/off, default on), ``AUTH_TOKENS_FILE`` (hashed tokens) and
        ``AUTH_BOOTSTRAP_TOKEN`` + ``AUTH_BOOTSTRAP_PROJECT`` (one plain token, e.g. from an env
        file in compose). Returns None when auth is off."""
        if not self.bool("AUTH", True):
            return None
        book = TokenBook([])
        if path := self.str("AUTH_TOKENS_FILE"):
            book = book.merged(TokenBook.from_file(path))
        if token := self.str("AUTH_BOOTSTRAP_TOKEN"):
            project = self.str("AUTH_BOOTSTRAP_PROJECT", "default") or "default"
            book = book.merged(TokenBook.from_tokens({token: project}))
        return book

    def _bad(self, name: str, description: str) -> InvalidArgument:
        return InvalidArgument.from_violations(
            "SETTING_INVALID", [FieldViolation(self.var(name), description)], "bad setting"
        )

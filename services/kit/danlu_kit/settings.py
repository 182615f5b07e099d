"""Reading ``DANLU_<SERVICE>_<SETTING>`` environment variables with precise errors.

Each service has one ``settings.py`` that calls these helpers; nothing else reads the environment.
The variables every gRPC service shares are read by ``ServerSettings`` (and
``StoreServerSettings``), which the services' settings classes extend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class ServerSettings:
    """What every gRPC service reads alike (each service's settings.py still lists the variables,
    as its table is that service's documentation): ``HOST`` (127.0.0.1), ``PORT``,
    ``METRICS_PORT`` (unset or negative: no metrics endpoint), ``DATA_DIR`` (~/.danlu),
    ``DATABASE_URL`` (``sqlite:///DATA_DIR/<database>``) and the ``AUTH_*`` ones (``Env.tokens``).
    """

    host: str
    port: int
    metrics_port: int | None
    data_dir: Path
    database_url: str
    tokens: TokenBook | None  # None: auth off

    @classmethod
    def read_common(cls, env: Env, *, port: int, database: str) -> dict[str, Any]:
        """This class's fields read from ``env``, as keywords for a subclass's constructor (which
        adds its own); ``port`` is the default PORT, ``database`` the SQLite file in DATA_DIR."""
        data_dir = env.path("DATA_DIR", Path("~/.danlu").expanduser())
        metrics = env.int("METRICS_PORT", -1)
        return {
            "host": env.str("HOST", "127.0.0.1"),
            "port": env.int("PORT", port),
            "metrics_port": None if metrics < 0 else metrics,
            "data_dir": data_dir,
            "database_url": env.str("DATABASE_URL", f"sqlite:///{data_dir}/{database}"),
            "tokens": env.tokens(),
        }


@dataclass(frozen=True)
class StoreServerSettings(ServerSettings):
    """A service that also reads the object store: ``OBJECT_STORE_URL``
    (``file://DATA_DIR/objects``), ``S3_ACCESS_KEY`` and ``S3_SECRET_KEY``."""

    object_store_url: str
    # Out of repr: a logged or printed settings object must not leak them.
    s3_access_key: str | None = field(repr=False)
    s3_secret_key: str | None = field(repr=False)

    @classmethod
    def read_common(cls, env: Env, *, port: int, database: str) -> dict[str, Any]:
        common = super().read_common(env, port=port, database=database)
        return common | {
            "object_store_url": env.str("OBJECT_STORE_URL", f"file://{common['data_dir']}/objects"),
            "s3_access_key": env.str("S3_ACCESS_KEY"),
            "s3_secret_key": env.str("S3_SECRET_KEY"),
        }

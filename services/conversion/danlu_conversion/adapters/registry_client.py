"""The registry through its gRPC API (the SDK), with the SDK's errors turned into the kit's typed
errors so that a failed job records the registry's own code and reason (NOT_FOUND,
ALREADY_EXISTS, ...) instead of an internal error."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from danlu_client.client import RegistryClient
from danlu_client.errors import DanluError as ClientError
from danlu_kit import errors


def _kit_error(err: ClientError) -> errors.DanluError:
    cls = next(
        (
            c
            for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.DanluError) and c.code_name == err.code
        ),
        None,
    )
    message = f"registry: {err.message}"
    if cls is None:
        kit = errors.DanluError(message=message, reason=err.reason or "REGISTRY_ERROR")
        kit.code_name = err.code or "UNKNOWN"
        return kit
    return cls(message=message, reason=err.reason or "REGISTRY_ERROR", metadata=err.metadata)


def _translated(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ClientError as err:
            raise _kit_error(err) from None

    return wrapper


class RegistryAdapter:
    """The conversion core's Registry port over one project's SDK client."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    @_translated
    def get_model(self, name: str) -> Any:
        return self._client.get_model(name)

    @_translated
    def download_model(self, name: str, dest: str | Path) -> Path:
        return self._client.download_model(name, dest)

    @_translated
    def push_model(self, directory: str | Path, name: str, **kwargs: Any) -> Any:
        return self._client.push_model(directory, name, **kwargs)

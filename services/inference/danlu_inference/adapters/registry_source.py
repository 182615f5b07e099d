"""The ModelSource port over the registry's public gRPC API (the danlu SDK).

Artifacts are downloaded through the registry's ``DownloadModel`` rather than read from the
object store directly: the inference service then needs no storage credentials, works the same
over a local directory and S3, cannot read another service's keys, and every file arrives
checked against its SHA-256. The bytes pass through the registry process once per revision;
the digest-keyed cache makes that a one-time cost.

Credentials: ``registry_token`` when configured; otherwise the caller's own bearer token is
forwarded (the servicer puts it in :data:`forwarded_token`), so the registry enforces the same
project boundary the caller has.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from danlu_client import Client
from danlu_client.errors import DanluError as ClientError
from danlu_inference.core.artifacts import ArtifactInfo, ServingContract
from danlu_kit import errors

# The bearer token of the request being served (None: no token, e.g. auth off).
forwarded_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "forwarded_token", default=None
)

KINDS = {0: "base", 1: "base", 2: "adapter", 3: "merged", 4: "full"}
_CODES = {
    "INVALID_ARGUMENT": errors.InvalidArgument,
    "NOT_FOUND": errors.NotFound,
    "FAILED_PRECONDITION": errors.FailedPrecondition,
    "UNAUTHENTICATED": errors.Unavailable,  # our credentials for the registry are wrong
    "PERMISSION_DENIED": errors.NotFound,
    "RESOURCE_EXHAUSTED": errors.Unavailable,
}


def _translate(err: ClientError, name: str) -> errors.DanluError:
    cls = _CODES.get(err.code, errors.Unavailable)
    if cls is errors.Unavailable:
        return errors.Unavailable(
            f"the registry could not be asked about {name}: {err.code} {err.message}",
            reason="REGISTRY_UNAVAILABLE",
        )
    return cls(err.message, reason=err.reason or err.code)


class RegistrySource:
    def __init__(
        self, target: str | Callable[[], str], token: str | None = None, max_clients: int = 16
    ):
        self._target = target
        self._token = token
        self._clients: OrderedDict[str | None, Client] = OrderedDict()
        self._lock = threading.Lock()
        self._max_clients = max_clients

    def _client(self) -> Client:
        token = self._token or forwarded_token.get()
        with self._lock:
            client = self._clients.get(token)
            if client is None:
                target = self._target() if callable(self._target) else self._target
                client = Client(target, token=token)
                self._clients[token] = client
                while len(self._clients) > self._max_clients:
                    self._clients.popitem(last=False)[1].close()
            self._clients.move_to_end(token)
            return client

    def get(self, name: str) -> ArtifactInfo:
        for delay in (0.2, 0.5, 1.0, None):  # the registry may be starting (same process)
            try:
                model = self._client().registry.get_model(name)
                break
            except ClientError as err:
                if err.code != "UNAVAILABLE" or delay is None:
                    raise _translate(err, name) from None
                time.sleep(delay)
        contract = json_format.MessageToDict(model.contract, preserving_proto_field_name=True)
        contract["stop_words"] = tuple(contract.get("stop_words", ()))
        return ArtifactInfo(
            name=model.name,
            kind=KINDS.get(model.kind, "base"),
            digest=model.digest,
            max_context_length=int(model.max_context_length),
            parent_model=model.lineage.parent_model,
            contract=ServingContract(**contract),
        )

    def download(self, name: str, dest: Path) -> ArtifactInfo:
        before = self.get(name)
        try:
            self._client().registry.download_model(name, dest)
        except ClientError as err:
            raise _translate(err, name) from None
        if self.get(name).digest != before.digest:
            raise errors.Aborted(
                f"{name} was replaced while it was being downloaded; retry",
                reason="ARTIFACT_CHANGED",
            )
        return before

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

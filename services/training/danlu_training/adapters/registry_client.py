"""The registry as a :class:`danlu_training.core.ports.ModelCatalog`, through its public gRPC API
and the danlu SDK (never its tables).

Credentials: ``DANLU_TRAINING_REGISTRY_TOKEN`` when set (a service token); otherwise the caller's
own bearer token is passed on, so the registry applies the caller's project rights; with auth
off there is none.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from danlu.registry.v1 import dataset_pb2, model_pb2
from danlu_client import Client
from danlu_client.client import RegistryClient
from danlu_client.errors import DanluError as ClientError
from danlu_kit import errors
from danlu_kit.request_context import caller_token_var
from danlu_training.core.ports import CatalogDataset, CatalogModel
from danlu_training.core.records import ArtifactFile, ObjectRef
from danlu_training.core.spec import DatasetFacts, ModelFacts

_TASKS = {dataset_pb2.DATASET_TASK_CHAT: "chat", dataset_pb2.DATASET_TASK_TEXT: "text"}
_KINDS = {
    model_pb2.MODEL_KIND_BASE: "base",
    model_pb2.MODEL_KIND_ADAPTER: "adapter",
    model_pb2.MODEL_KIND_MERGED: "merged",
    model_pb2.MODEL_KIND_FULL: "full",
}
# SDK errors back into the kit's typed errors, by gRPC code name.
_ERRORS: dict[str, type[errors.DanluError]] = {
    cls.code_name: cls for cls in errors.DanluError.__subclasses__()
}
_MAX_CLIENTS = 16


def _core_error(err: ClientError) -> errors.DanluError:
    cls = _ERRORS.get(err.code, errors.Unavailable)
    return cls(f"registry: {err.message}", reason=err.reason or "REGISTRY_ERROR")


def _ref(o) -> ObjectRef:
    return ObjectRef(o.key, o.sha256, o.size_bytes)


class RegistryCatalog:
    def __init__(self, target: Callable[[], str] | str, token: str | None = None):
        # A callable when the registry shares this process's port, known only after bind.
        self._target = target if callable(target) else (lambda: target)
        self._token = token
        self._clients: OrderedDict[tuple[str, str | None], Client] = OrderedDict()
        self._lock = threading.Lock()

    def _registry(self) -> RegistryClient:
        key = (self._target(), self._token or caller_token_var.get())
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = Client(key[0], token=key[1])
                if len(self._clients) > _MAX_CLIENTS:
                    self._clients.popitem(last=False)[1].close()
            self._clients.move_to_end(key)
            return client.registry

    def model(self, name: str) -> CatalogModel:
        try:
            m = self._registry().get_model(name)
        except ClientError as err:
            raise _core_error(err) from None
        facts = ModelFacts(
            name=m.name,
            digest=m.digest,
            model_type=m.model_type,
            max_context_length=m.max_context_length,
            has_chat_template=m.has_chat_template,
        )
        files = tuple(ArtifactFile(f.path, _ref(f.object)) for f in m.files)
        return CatalogModel(facts, _KINDS.get(m.kind, "base"), files)

    def dataset_version(self, name: str) -> CatalogDataset:
        try:
            v = self._registry().get_dataset_version(name)
        except ClientError as err:
            raise _core_error(err) from None
        facts = DatasetFacts(name=v.name, task=_TASKS[v.task], record_count=v.stats.record_count)
        return CatalogDataset(facts, _ref(v.normalized_object))

    def add_reference(self, target: str, holder: str) -> str:
        try:
            return self._registry().create_reference(target, holder).name
        except ClientError as err:
            raise _core_error(err) from None

    def remove_reference(self, reference: str) -> None:
        try:
            self._registry().delete_reference(reference)
        except ClientError as err:
            if err.code != "NOT_FOUND":
                raise _core_error(err) from None

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

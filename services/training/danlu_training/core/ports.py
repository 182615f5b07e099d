"""The small interfaces the training core needs from the outside world.

- :class:`ModelCatalog`: the registry (through its public gRPC API, never its tables).
- :class:`Launcher`: whatever starts worker processes (local processes, Kubernetes Jobs).

The object store port is the kit's (``danlu_kit.objectstore.ObjectStore``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from danlu_training.core.records import ArtifactFile, ObjectRef
from danlu_training.core.spec import Capabilities, DatasetFacts, ModelFacts


@dataclass(frozen=True)
class CatalogModel:
    facts: ModelFacts
    kind: str  # base | adapter | merged | full
    files: tuple[ArtifactFile, ...]


@dataclass(frozen=True)
class CatalogDataset:
    facts: DatasetFacts  # facts.name is the pinned version
    normalized: ObjectRef


class ModelCatalog(Protocol):
    """Models and dataset versions of the registry, and the references that keep them.

    Errors are the kit's typed errors (``NotFound`` for a missing model or dataset)."""

    def model(self, name: str) -> CatalogModel:
        """``projects/{p}/models/{m}``: its current revision."""
        ...

    def dataset_version(self, name: str) -> CatalogDataset:
        """``projects/{p}/datasets/{d}/versions/{v}`` (``v`` may be ``latest``)."""
        ...

    def add_reference(self, target: str, holder: str) -> str:
        """Mark ``target`` as used by ``holder`` (idempotent); returns the reference's name."""
        ...

    def remove_reference(self, reference: str) -> None:
        """Release a reference; one that is already gone is not an error."""
        ...


@dataclass(frozen=True)
class LaunchRequest:
    """One attempt of one job to start."""

    job: str  # projects/{p}/trainingJobs/{j}
    attempt: int
    env: Mapping[str, str]  # DANLU_WORKER_* without object store credentials
    gpus_per_node: int
    nodes: int


@dataclass(frozen=True)
class WorkerStatus:
    running: bool
    exit_code: int | None = None  # when it ended, if the launcher knows
    # Started but not running yet (a pod waiting for a node or pulling its image): it cannot
    # heartbeat, so it does not time out.
    pending: bool = False


class Launcher(Protocol):
    """Starts, watches and stops workers. Handles are opaque strings that survive a restart of
    the service (they are stored on the job), so a new service process can find the workers the
    previous one started."""

    # Most nodes one job may span.
    max_nodes: int

    def capabilities(self) -> Capabilities:
        """What the machines this launcher starts workers on can do."""
        ...

    def launch(self, request: LaunchRequest) -> str:
        """Start the worker(s) of one attempt; returns the handle."""
        ...

    def poll(self, handle: str) -> WorkerStatus: ...

    def kill(self, handle: str) -> None:
        """Stop the worker(s) at once; killing one that is gone is not an error."""
        ...

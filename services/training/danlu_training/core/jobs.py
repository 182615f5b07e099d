"""Training job use cases for users: create, read, list, cancel, delete, events, checkpoints.

Create resolves everything before anything is stored: names are qualified, the model and the
datasets are looked up in the registry (through :class:`ModelCatalog`), the spec is resolved and
validated against them and against what the launcher's machines can do, and the exact inputs
(model revision files, dataset objects) are pinned on the job. Only then is the job queued and
the registry told that the job holds its model and datasets (references, so they cannot be
deleted under it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from danlu.training.v1 import training_event_pb2, training_job_pb2
from danlu_kit.errors import (
    AlreadyExists,
    DanluError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from danlu_kit.names import check_id
from danlu_kit.objectstore import ObjectStore
from danlu_training.core import spec as specs
from danlu_training.core.lifecycle import change_state
from danlu_training.core.ports import CatalogDataset, Launcher, ModelCatalog
from danlu_training.core.records import (
    CheckpointRecord,
    EventRecord,
    JobRecord,
    JobState,
    PinnedDataset,
    PinnedInputs,
    job_name,
    job_prefix,
)
from danlu_training.core.signals import ChangeSignal

if TYPE_CHECKING:
    from danlu_training.adapters.db import TrainingRepository

log = logging.getLogger(__name__)

_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_CONFIG_NAME = re.compile(r"^trainingConfigs/[A-Za-z0-9._-]{1,100}$")
MAX_DISPLAY_NAME = 200
# How many events one database read fetches for a watch.
WATCH_BATCH = 500


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewJob:
    """A CreateTrainingJob request, in core terms."""

    project: str
    spec: training_job_pb2.TrainingJobSpec
    job_id: str = ""
    display_name: str = ""
    config_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    validate_only: bool = False


def _with_prefix(err: DanluError, prefix: str) -> DanluError:
    """The same error with its field paths made relative to the request (``spec.``)."""
    violations = tuple(
        FieldViolation(v.field if v.field.startswith(prefix) else prefix + v.field, v.description)
        for v in err.violations
    )
    return dataclasses.replace(err, violations=violations)


def _not_found(field_path: str, name: str, what: str) -> FieldViolation:
    return FieldViolation(field_path, f"{what} {name} not found")


class Jobs:
    def __init__(
        self,
        repo: TrainingRepository,
        store: ObjectStore,
        catalog: ModelCatalog,
        launcher: Launcher,
        *,
        gpu_capacity: int,
        events: ChangeSignal,
        schedule: Callable[[], None] = lambda: None,
        watch_poll_seconds: float = 1.0,
    ):
        self.repo = repo
        self.store = store
        self.catalog = catalog
        self.launcher = launcher
        self.gpu_capacity = gpu_capacity
        self.events = events
        self.schedule = schedule  # wakes the scheduler
        self.watch_poll_seconds = watch_poll_seconds

    # -- create ---------------------------------------------------------------------------

    def create(self, new: NewJob) -> JobRecord:
        if new.request_id and not new.validate_only:
            existing = self.repo.find_job_by_request(new.project, new.request_id)
            if existing is not None:
                return existing  # a retried create
        job_id = self._job_id(new)
        if not new.validate_only and self.repo.get_job(new.project, job_id) is not None:
            raise _exists(new.project, job_id)
        self._check_metadata(new)
        job = self._resolve(new, job_id)
        if new.validate_only:
            return job
        job.references = self._hold(job)
        first = training_event_pb2.StateChanged(
            previous_state=0, state=int(JobState.QUEUED), message="created"
        )
        try:
            self.repo.insert_job(job, ("state_changed", first))
        except DanluError:
            # Lost a race for the id. References are named after (target, holder), so the
            # winner's own are the same names: release only the ones it does not hold.
            winner = self.repo.get_job(new.project, job_id)
            held = set(winner.references) if winner else set()
            self._release([r for r in job.references if r not in held])
            if winner is not None and new.request_id and winner.request_id == new.request_id:
                return winner  # the same request, retried concurrently
            raise
        log.info("training job created", extra={"job": job.name})
        self.schedule()
        return job

    def _hold(self, job: JobRecord) -> list[str]:
        """Registry references from the job to its model and dataset versions."""
        inputs = job.inputs
        targets = [
            inputs.model,
            *(d.version for d in inputs.datasets),
            *([inputs.validation.version] if inputs.validation else []),
        ]
        held: list[str] = []
        try:
            for target in dict.fromkeys(targets):
                held.append(self.catalog.add_reference(target, job.name))
        except DanluError:
            self._release(held)
            raise
        return held

    def _release(self, references: list[str]) -> None:
        for reference in references:
            self.catalog.remove_reference(reference)

    @staticmethod
    def _job_id(new: NewJob) -> str:
        if new.job_id:
            return check_id(new.job_id, "training_job_id")
        if new.request_id:
            # Derived from the request id: two concurrent retries collide on the id instead
            # of creating two jobs.
            return "job-" + hashlib.sha256(new.request_id.encode()).hexdigest()[:12]
        return "job-" + uuid.uuid4().hex[:12]

    @staticmethod
    def _check_metadata(new: NewJob) -> None:
        bad = []
        if len(new.display_name) > MAX_DISPLAY_NAME:
            bad.append(
                FieldViolation(
                    "training_job.display_name", f"at most {MAX_DISPLAY_NAME} characters"
                )
            )
        if new.config_name and not _CONFIG_NAME.match(new.config_name):
            bad.append(
                FieldViolation("training_job.config_name", "expected trainingConfigs/{config}")
            )
        for key, value in new.labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                bad.append(
                    FieldViolation(
                        f"training_job.labels[{key}]",
                        "keys: a lower-case letter then up to 62 of [a-z0-9_-]; values: up to "
                        "63 of [a-z0-9_-]",
                    )
                )
        if bad:
            raise InvalidArgument.from_violations("INVALID_ARGUMENT", bad)

    def _resolve(self, new: NewJob, job_id: str) -> JobRecord:
        try:
            spec = specs.qualify_names(new.spec, new.project)
        except DanluError as err:
            raise _with_prefix(err, "spec.") from None
        model, datasets, validation = self._look_up(spec, new.project)
        capabilities = self.launcher.capabilities()
        try:
            resolved = specs.resolve_spec(
                spec,
                model=model.facts,
                datasets=[d.facts for d in datasets],
                validation=validation.facts if validation else None,
                capabilities=capabilities,
                seed=secrets.randbelow(specs.MAX_SEED + 1),
            )
        except DanluError as err:
            raise _with_prefix(err, "spec.") from None
        self._check_capacity(resolved)
        counts = specs.weighted_sample_counts(resolved, [d.facts for d in datasets])
        now = _now()
        return JobRecord(
            project=new.project,
            job_id=job_id,
            spec=new.spec,
            resolved_spec=resolved,
            inputs=PinnedInputs(
                model=model.facts.name,
                model_digest=model.facts.digest,
                model_files=model.files,
                datasets=tuple(_pinned(d) for d in datasets),
                validation=_pinned(validation) if validation else None,
            ),
            create_time=now,
            update_time=now,
            display_name=new.display_name,
            config_name=new.config_name,
            labels=dict(new.labels),
            progress_total=specs.total_steps(resolved, sum(counts)),
            base_model_digest=model.facts.digest,
            request_id=new.request_id,
        )

    def _look_up(self, spec, project: str):
        """Model and datasets from the registry; every missing one is reported at once."""
        missing: list[FieldViolation] = []

        def find(lookup, name: str, field_path: str, what: str):
            # Names are resolved in the job's project only: a job never reads another
            # project's data, whatever the registry credentials could see.
            if not name.startswith(f"projects/{project}/"):
                missing.append(_not_found(field_path, name, what))
                return None
            try:
                return lookup(name)
            except NotFound:
                missing.append(_not_found(field_path, name, what))
                return None

        model = find(self.catalog.model, spec.base_model, "spec.base_model", "model")
        datasets = [
            find(self.catalog.dataset_version, d.dataset, f"spec.datasets[{i}].dataset", "dataset")
            for i, d in enumerate(spec.datasets)
        ]
        validation = None
        if spec.data.HasField("validation_dataset"):
            validation = find(
                self.catalog.dataset_version,
                spec.data.validation_dataset.dataset,
                "spec.data.validation_dataset.dataset",
                "dataset",
            )
        if missing:
            raise NotFound(
                "; ".join(f"{v.field}: {v.description}" for v in missing),
                reason="TRAINING_INPUT_NOT_FOUND",
                violations=tuple(missing),
            )
        if model.kind == "adapter":
            raise FailedPrecondition(
                f"{model.facts.name} is an adapter: train from a base, merged or full model",
                reason="MODEL_IS_ADAPTER",
                violations=(FieldViolation("spec.base_model", "is an adapter"),),
            )
        return model, datasets, validation

    def _check_capacity(self, resolved: training_job_pb2.TrainingJobSpec) -> None:
        """A job that could never be scheduled is refused now rather than queued forever."""
        r = resolved.resources
        bad = []
        if r.nodes > self.launcher.max_nodes:
            bad.append(
                FieldViolation(
                    "spec.resources.nodes",
                    f"{r.nodes} nodes asked, but this launcher runs at most "
                    f"{self.launcher.max_nodes} (use the Kubernetes launcher for several)",
                )
            )
        if r.gpus_per_node * r.nodes > self.gpu_capacity:
            bad.append(
                FieldViolation(
                    "spec.resources.gpus_per_node",
                    f"{r.gpus_per_node * r.nodes} GPUs asked in all, but the service schedules "
                    f"at most {self.gpu_capacity}",
                )
            )
        if bad:
            raise FailedPrecondition(
                "the machines that run jobs cannot run this spec: "
                + "; ".join(f"{v.field}: {v.description}" for v in bad),
                reason=specs.CAPABILITY_MISSING,
                violations=tuple(bad),
            )

    # -- read -----------------------------------------------------------------------------

    def get(self, project: str, job_id: str) -> JobRecord:
        job = self.repo.get_job(project, job_id)
        if job is None:
            raise NotFound(
                f"{job_name(project, job_id)} not found", reason="TRAINING_JOB_NOT_FOUND"
            )
        return job

    def list_jobs(
        self, project: str, state: JobState | None, after: list | None, limit: int
    ) -> list[JobRecord]:
        return self.repo.list_jobs(project, state, after, limit)

    def list_events(
        self, project: str, job_id: str, after: int, kinds: list[str], limit: int
    ) -> list[EventRecord]:
        self.get(project, job_id)
        return self.repo.list_events(project, job_id, after, kinds, limit)

    async def watch(
        self, project: str, job_id: str, after: int, kinds: list[str], *, follow: bool
    ) -> AsyncIterator[EventRecord]:
        """Events after ``after`` in order; with ``follow`` until the job is terminal and every
        event has been sent. Resuming from the last sequence seen misses nothing: events are
        read from the database, never from memory."""
        cursor = after
        while True:
            seen = self.events.version
            # The state is read before the events: a terminal state's events are committed
            # with it, so they are all in the read that follows.
            job = await asyncio.to_thread(self.get, project, job_id)
            while True:
                batch = await asyncio.to_thread(
                    self.repo.list_events, project, job_id, cursor, kinds, WATCH_BATCH
                )
                for event in batch:
                    cursor = event.sequence
                    yield event
                if len(batch) < WATCH_BATCH:
                    break
            if not follow or job.state.terminal:
                return
            await self.events.wait(seen, self.watch_poll_seconds)

    def list_checkpoints(
        self, project: str, job_id: str, after_step: int, limit: int
    ) -> list[CheckpointRecord]:
        self.get(project, job_id)
        return self.repo.list_checkpoints(project, job_id, after_step, limit)

    def get_checkpoint(self, project: str, job_id: str, step: int) -> CheckpointRecord:
        self.get(project, job_id)
        record = self.repo.get_checkpoint(project, job_id, step)
        if record is None:
            raise NotFound(
                f"{job_name(project, job_id)}/checkpoints/step-{step} not found",
                reason="CHECKPOINT_NOT_FOUND",
            )
        return record

    # -- cancel and delete ----------------------------------------------------------------

    def cancel(self, project: str, job_id: str) -> JobRecord:
        now = _now()
        with self.repo.job_transaction(project, job_id) as tx:
            job = tx.job
            if job.state in (JobState.SUCCEEDED, JobState.FAILED):
                raise FailedPrecondition(
                    f"{job.name} already {job.state.name.lower()}", reason="JOB_FINISHED"
                )
            if job.state == JobState.QUEUED:
                # Nothing ran yet (a worker being started is stopped by the scheduler).
                change_state(tx, JobState.CANCELLED, "cancelled by user", now)
            elif job.state == JobState.RUNNING:
                # The worker sees the flag at its next heartbeat and stops at a step boundary;
                # the scheduler kills it when it takes longer than the grace period.
                change_state(tx, JobState.CANCELLING, "cancel requested by user", now)
                job.cancel_requested = True
                job.cancel_time = now
        self.schedule()
        return tx.job

    def delete(self, project: str, job_id: str) -> None:
        job = self.get(project, job_id)
        if not job.state.terminal:
            raise FailedPrecondition(
                f"{job.name} is {job.state.name.lower()}: cancel it and wait until it stops",
                reason="JOB_NOT_FINISHED",
            )
        if job.launch_handle:
            self.launcher.kill(job.launch_handle)
        self._release(job.references)
        self.store.delete_prefix(job_prefix(project, job_id))
        self.repo.delete_job(project, job_id)
        log.info("training job deleted", extra={"job": job.name})


def _pinned(d: CatalogDataset) -> PinnedDataset:
    return PinnedDataset(d.facts.name, d.normalized)


def _exists(project: str, job_id: str) -> AlreadyExists:
    return AlreadyExists(f"{job_name(project, job_id)} already exists", reason="JOB_EXISTS")

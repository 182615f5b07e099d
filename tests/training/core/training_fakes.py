"""In-memory stand-ins for the repository side of the core (transactions, the jobs table)."""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime, timedelta

from danlu.training.v1 import training_job_pb2
from danlu_training.core.records import EventRecord, JobRecord, JobState, PinnedInputs

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeTransaction:
    """The core's transaction interface over plain lists."""

    def __init__(self, job: JobRecord, checkpoints=()):
        self.job = job
        self.events: list[EventRecord] = []
        self._checkpoints = list(checkpoints)

    def emit(self, kind, payload, *, attempt=None, event_time=None):
        event = EventRecord(
            len(self.events) + 1,
            self.job.attempt if attempt is None else attempt,
            event_time or NOW,
            kind,
            payload,
        )
        self.events.append(event)
        return event

    def checkpoints(self):
        return self._checkpoints

    def add_checkpoint(self, checkpoint):
        self._checkpoints.append(checkpoint)

    def first_delivery(self, attempt, rank, batch_sequence):
        return True


def make_job(
    state: JobState = JobState.QUEUED,
    attempt: int = 0,
    job_id: str = "j",
    *,
    gpus: int = 0,
    order: int = 0,
    **fields,
) -> JobRecord:
    """A job record; ``gpus`` per node in its resolved spec, ``order`` its place in the queue."""
    spec = training_job_pb2.TrainingJobSpec(base_model="projects/p/models/m")
    resolved = training_job_pb2.TrainingJobSpec()
    resolved.CopyFrom(spec)
    resolved.resources.gpus_per_node = gpus
    resolved.resources.nodes = 1
    created = NOW + timedelta(seconds=order)
    return JobRecord(
        project="p",
        job_id=job_id,
        spec=spec,
        resolved_spec=resolved,
        inputs=PinnedInputs("projects/p/models/m", "sha256:x", (), ()),
        create_time=created,
        update_time=created,
        state=state,
        attempt=attempt,
        **fields,
    )


class FakeRepository:
    """The jobs table as a dict; transactions work on copies and commit on success."""

    def __init__(self, jobs: list[JobRecord]):
        self.jobs = {j.job_id: j for j in jobs}
        self.events: dict[str, list[EventRecord]] = {j.job_id: [] for j in jobs}

    def scheduling_view(self) -> list[JobRecord]:
        found = [j for j in self.jobs.values() if not j.state.terminal or j.launch_handle]
        return [copy.deepcopy(j) for j in sorted(found, key=lambda j: j.create_time)]

    @contextlib.contextmanager
    def job_transaction(self, project, job_id, *, missing_ok=False):
        tx = FakeTransaction(copy.deepcopy(self.jobs[job_id]))
        yield tx
        self.jobs[job_id] = tx.job
        self.events[job_id].extend(tx.events)

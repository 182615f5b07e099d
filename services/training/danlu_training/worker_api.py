"""The WorkerService gRPC layer (internal API of the workers): request -> one core call.

Callers present no bearer token; every request carries the worker's identity, which the core
checks (per-attempt token hash, then attempt fencing).
"""

from __future__ import annotations

import asyncio

from google.protobuf import empty_pb2

from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu.training.worker.v1alpha1 import worker_service_pb2_grpc as wpb_grpc
from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_training import protos
from danlu_training.api import JOB
from danlu_training.core.workers import WorkerIdentity, WorkerSessions


def _identity(worker: wpb.WorkerIdentity) -> WorkerIdentity:
    values = JOB.parse(worker.training_job, "worker.training_job")
    if worker.attempt < 1 or not worker.token:
        raise InvalidArgument.from_violations(
            "INVALID_ARGUMENT",
            [FieldViolation("worker", "attempt (>= 1) and token are required")],
        )
    return WorkerIdentity(values["project"], values["job"], worker.attempt, worker.token)


class WorkerServicer(wpb_grpc.WorkerServiceServicer):
    def __init__(self, sessions: WorkerSessions):
        self.sessions = sessions

    async def GetWorkerAssignment(self, request, context):
        found = await asyncio.to_thread(self.sessions.assignment, _identity(request.worker))
        return protos.assignment(found)

    async def ReportEvents(self, request, context):
        await asyncio.to_thread(
            self.sessions.report,
            _identity(request.worker),
            request.batch_sequence,
            request.rank,
            protos.worker_events(request.events),
        )
        return empty_pb2.Empty()

    async def Heartbeat(self, request, context):
        stop = await asyncio.to_thread(self.sessions.heartbeat, _identity(request.worker))
        return wpb.HeartbeatResponse(cancel_requested=stop)

    async def CommitCheckpoint(self, request, context):
        record, deleted = await asyncio.to_thread(
            self.sessions.commit_checkpoint,
            _identity(request.worker),
            protos.new_checkpoint(request.checkpoint),
        )
        return wpb.CommitCheckpointResponse(
            checkpoint=protos.checkpoint(record), deleted_checkpoints=deleted
        )

    async def CompleteWork(self, request, context):
        error = request.error if request.HasField("error") else None
        await asyncio.to_thread(self.sessions.complete, _identity(request.worker), error)
        return empty_pb2.Empty()

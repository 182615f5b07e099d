"""The training service's gRPC layer: request -> one core call -> response. No business rules.

Blocking core calls (database, registry, object store) run in worker threads.
"""

from __future__ import annotations

import asyncio

from google.protobuf import empty_pb2

from danlu.training.v1 import training_service_pb2 as pb
from danlu.training.v1 import training_service_pb2_grpc as pb_grpc
from danlu_kit import pagination
from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.names import PROJECT, NamePattern
from danlu_kit.request_context import parse_visible
from danlu_kit.threads import OffloadPool
from danlu_training import protos
from danlu_training.core import configs
from danlu_training.core.jobs import Jobs, NewJob

JOB = NamePattern("projects/{project}/trainingJobs/{job}")
CHECKPOINT = NamePattern("projects/{project}/trainingJobs/{job}/checkpoints/{checkpoint}")
CONFIG = NamePattern("trainingConfigs/{config}")
EVENTS_PAGE_SIZE = 100


def _step(checkpoint_id: str) -> int:
    prefix, _, number = checkpoint_id.partition("-")
    if prefix != "step" or not number.isdigit():
        raise InvalidArgument.from_violations(
            "INVALID_NAME", [FieldViolation("name", "a checkpoint id is step-{n}")]
        )
    return int(number)


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        # Create and delete call the registry: they run in threads of their own (OffloadPool).
        self.registry_calls = OffloadPool(4, "training-registry")

    # -- jobs -----------------------------------------------------------------------------

    async def CreateTrainingJob(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        if not request.training_job.HasField("spec"):
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT", [FieldViolation("training_job.spec", "is required")]
            )
        job = request.training_job
        new = NewJob(
            project=project,
            spec=job.spec,
            job_id=request.training_job_id,
            display_name=job.display_name,
            config_name=job.config_name,
            labels=dict(job.labels),
            request_id=request.request_id,
            validate_only=request.validate_only,
        )
        return protos.training_job(await self.registry_calls.run(self.jobs.create, new))

    async def GetTrainingJob(self, request, context):
        v = parse_visible(JOB, request.name)
        return protos.training_job(await asyncio.to_thread(self.jobs.get, v["project"], v["job"]))

    async def ListTrainingJobs(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        size = pagination.page_size(request.page_size)
        records = await asyncio.to_thread(
            self.jobs.list_jobs,
            project,
            protos.job_state(request.state),
            pagination.decode_token(request.page_token),
            size + 1,
        )
        page, token = pagination.split_page(
            records, size, lambda j: [j.create_time.isoformat(), j.job_id]
        )
        return pb.ListTrainingJobsResponse(
            training_jobs=[protos.training_job(j) for j in page], next_page_token=token
        )

    async def CancelTrainingJob(self, request, context):
        v = parse_visible(JOB, request.name)
        job = await asyncio.to_thread(self.jobs.cancel, v["project"], v["job"])
        return protos.training_job(job)

    async def DeleteTrainingJob(self, request, context):
        v = parse_visible(JOB, request.name)
        await self.registry_calls.run(self.jobs.delete, v["project"], v["job"])
        return empty_pb2.Empty()

    # -- events ---------------------------------------------------------------------------

    async def WatchTrainingJob(self, request, context):
        v = parse_visible(JOB, request.name)
        async for event in self.jobs.watch(
            v["project"],
            v["job"],
            request.after_sequence,
            protos.event_kinds(request.event_types),
            follow=request.follow,
        ):
            yield protos.event(event)

    async def ListTrainingJobEvents(self, request, context):
        v = parse_visible(JOB, request.parent, "parent")
        size = pagination.page_size(request.page_size or EVENTS_PAGE_SIZE)
        after = pagination.decode_token(request.page_token)
        records = await asyncio.to_thread(
            self.jobs.list_events,
            v["project"],
            v["job"],
            after[0] if after else 0,
            protos.event_kinds(request.event_types),
            size + 1,
        )
        page, token = pagination.split_page(records, size, lambda e: [e.sequence])
        return pb.ListTrainingJobEventsResponse(
            events=[protos.event(e) for e in page], next_page_token=token
        )

    # -- checkpoints ----------------------------------------------------------------------

    async def ListCheckpoints(self, request, context):
        v = parse_visible(JOB, request.parent, "parent")
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        records = await asyncio.to_thread(
            self.jobs.list_checkpoints, v["project"], v["job"], after[0] if after else 0, size + 1
        )
        page, token = pagination.split_page(records, size, lambda c: [c.step])
        return pb.ListCheckpointsResponse(
            checkpoints=[protos.checkpoint(c) for c in page], next_page_token=token
        )

    async def GetCheckpoint(self, request, context):
        v = parse_visible(CHECKPOINT, request.name)
        record = await asyncio.to_thread(
            self.jobs.get_checkpoint, v["project"], v["job"], _step(v["checkpoint"])
        )
        return protos.checkpoint(record)

    # -- built-in configs -----------------------------------------------------------------

    async def ListTrainingConfigs(self, request, context):
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        found = [
            c
            for c in await asyncio.to_thread(configs.list_configs, request.pattern)
            if after is None or c.name > after[0]
        ]
        page, token = pagination.split_page(found, size, lambda c: [c.name])
        return pb.ListTrainingConfigsResponse(
            training_configs=[protos.training_config(c) for c in page], next_page_token=token
        )

    async def GetTrainingConfig(self, request, context):
        name = CONFIG.parse(request.name)["config"]
        return protos.training_config(await asyncio.to_thread(configs.get_config, name))

"""The conversion service's gRPC layer: request -> one core call -> response. No business rules.

Blocking core calls (database) run in worker threads.
"""

from __future__ import annotations

import asyncio

from google.protobuf import empty_pb2

from danlu.conversion.v1 import conversion_service_pb2 as pb
from danlu.conversion.v1 import conversion_service_pb2_grpc as pb_grpc
from danlu_conversion.core.jobs import Jobs
from danlu_kit import pagination
from danlu_kit.names import PROJECT, NamePattern
from danlu_kit.request_context import parse_visible

JOB = NamePattern("projects/{project}/conversionJobs/{job}")


class ConversionServicer(pb_grpc.ConversionServiceServicer):
    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    async def CreateConversionJob(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        return await asyncio.to_thread(
            self.jobs.create,
            project,
            request.conversion_job,
            request.conversion_job_id,
            request.request_id,
        )

    async def GetConversionJob(self, request, context):
        v = parse_visible(JOB, request.name)
        return await asyncio.to_thread(self.jobs.get, v["project"], v["job"])

    async def ListConversionJobs(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        size = pagination.page_size(request.page_size)
        jobs = await asyncio.to_thread(
            self.jobs.list_jobs,
            project,
            request.state,
            pagination.decode_token(request.page_token),
            size + 1,
        )
        page, token = pagination.split_page(
            jobs, size, lambda j: [j.create_time.ToDatetime().isoformat(), j.name.rsplit("/", 1)[1]]
        )
        return pb.ListConversionJobsResponse(conversion_jobs=page, next_page_token=token)

    async def CancelConversionJob(self, request, context):
        v = parse_visible(JOB, request.name)
        return await asyncio.to_thread(self.jobs.cancel, v["project"], v["job"])

    async def DeleteConversionJob(self, request, context):
        v = parse_visible(JOB, request.name)
        await asyncio.to_thread(self.jobs.delete, v["project"], v["job"])
        return empty_pb2.Empty()

    async def WatchConversionJob(self, request, context):
        v = parse_visible(JOB, request.name)
        await asyncio.to_thread(self.jobs.get, v["project"], v["job"])  # NOT_FOUND first
        async for event in self.jobs.watch(
            v["project"], v["job"], request.after_sequence, follow=request.follow
        ):
            yield event

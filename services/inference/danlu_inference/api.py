"""The inference service's gRPC layer: request -> one core call -> response. No business rules
here."""

from __future__ import annotations

from google.protobuf import empty_pb2

from danlu.inference.v1 import inference_service_pb2 as pb
from danlu.inference.v1 import inference_service_pb2_grpc as pb_grpc
from danlu_inference import protos
from danlu_inference.adapters.registry_source import forwarded_token
from danlu_inference.core.deployments import (
    ChatInput,
    CreateInput,
    Deployments,
    GenerateInput,
)
from danlu_kit import pagination
from danlu_kit.auth import parse_authorization
from danlu_kit.errors import DanluError, FieldViolation, InvalidArgument
from danlu_kit.names import PROJECT, NamePattern
from danlu_kit.request_context import ensure_project_visible

DEPLOYMENT = NamePattern("projects/{project}/deployments/{deployment}")
MODEL = NamePattern("projects/{project}/models/{model}")


def _parse(pattern: NamePattern, name: str, field: str = "name") -> dict[str, str]:
    values = pattern.parse(name, field)
    ensure_project_visible(values["project"], name)
    return values


def _adapter(name: str, project: str, field: str = "adapter") -> str:
    """An adapter name must be a model of the deployment's own project."""
    if not name:
        return ""
    values = _parse(MODEL, name, field)
    if values["project"] != project:
        raise InvalidArgument.from_violations(
            "INVALID_NAME",
            [FieldViolation(field, "the adapter must belong to the deployment's project")],
        )
    return name


def _forward_token(context) -> None:
    """Let the registry see the caller's own credentials (see adapters.registry_source)."""
    metadata = dict(context.invocation_metadata() or ())
    header = metadata.get("authorization")
    token = None
    if header:
        try:
            token = parse_authorization(header)
        except DanluError:  # malformed: with auth on the interceptor refused it already
            token = None
    forwarded_token.set(token)


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, deployments: Deployments):
        self.deployments = deployments

    async def CreateDeployment(self, request, context):
        _forward_token(context)
        project = _parse(PROJECT, request.parent, "parent")["project"]
        d = request.deployment
        if not d.model:
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT", [FieldViolation("deployment.model", "is required")]
            )
        model = _parse(MODEL, d.model, "deployment.model")
        if model["project"] != project:
            raise InvalidArgument.from_violations(
                "INVALID_NAME",
                [FieldViolation("deployment.model", "must belong to the parent project")],
            )
        view = await self.deployments.create(
            CreateInput(
                project=project,
                model=d.model,
                deployment_id=request.deployment_id,
                engine=protos.ENGINE_NAMES.get(d.engine, ""),
                options=protos.options_dict(d.options),
                request_id=request.request_id,
            )
        )
        return protos.deployment(view)

    async def GetDeployment(self, request, context):
        v = _parse(DEPLOYMENT, request.name)
        return protos.deployment(await self.deployments.get(v["project"], v["deployment"]))

    async def ListDeployments(self, request, context):
        project = _parse(PROJECT, request.parent, "parent")["project"]
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        views = await self.deployments.list(project, after[0] if after else None, size + 1)
        page, more = views[:size], len(views) > size
        return pb.ListDeploymentsResponse(
            deployments=[protos.deployment(v) for v in page],
            next_page_token=(
                pagination.encode_token([page[-1].record.deployment_id]) if more else ""
            ),
        )

    async def DeleteDeployment(self, request, context):
        v = _parse(DEPLOYMENT, request.name)
        await self.deployments.delete(v["project"], v["deployment"])
        return empty_pb2.Empty()

    async def LoadAdapter(self, request, context):
        _forward_token(context)
        v = _parse(DEPLOYMENT, request.name)
        if not request.adapter:
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT", [FieldViolation("adapter", "is required")]
            )
        adapter = _adapter(request.adapter, v["project"])
        view = await self.deployments.load_adapter(v["project"], v["deployment"], adapter)
        return protos.deployment(view)

    async def UnloadAdapter(self, request, context):
        v = _parse(DEPLOYMENT, request.name)
        adapter = _adapter(request.adapter, v["project"])
        view = await self.deployments.unload_adapter(v["project"], v["deployment"], adapter)
        return protos.deployment(view)

    async def Chat(self, request, context):
        _forward_token(context)
        v = _parse(DEPLOYMENT, request.deployment, "deployment")
        inp = ChatInput(
            messages=protos.messages(request.messages),
            adapter=_adapter(request.adapter, v["project"]),
            system=request.system,
            chat_template=request.chat_template,
            sampling=protos.sampling_input(request.sampling),
            request_id=request.request_id,
        )
        async for item in self.deployments.chat(v["project"], v["deployment"], inp):
            yield protos.chunk(item, pb.ChatResponse)

    async def Generate(self, request, context):
        _forward_token(context)
        v = _parse(DEPLOYMENT, request.deployment, "deployment")
        inp = GenerateInput(
            prompt=request.prompt,
            adapter=_adapter(request.adapter, v["project"]),
            sampling=protos.sampling_input(request.sampling),
            request_id=request.request_id,
        )
        async for item in self.deployments.generate(v["project"], v["deployment"], inp):
            yield protos.chunk(item, pb.GenerateResponse)

"""The registry's gRPC layer: request -> one core call -> response. No business rules here."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from google.protobuf import empty_pb2

from danlu.registry.v1 import registry_service_pb2 as pb
from danlu.registry.v1 import registry_service_pb2_grpc as pb_grpc
from danlu_kit import pagination
from danlu_kit.errors import FieldViolation, InvalidArgument, NotFound
from danlu_kit.names import PROJECT, NamePattern, check_id
from danlu_kit.request_context import ensure_project_visible, parse_visible
from danlu_registry import protos
from danlu_registry.core.datasets import Datasets, ReceivedUpload
from danlu_registry.core.formats import DatasetFormat
from danlu_registry.core.models import Models, ReceivedModel
from danlu_registry.core.preview_service import Previews
from danlu_registry.uploads import receive_dataset, receive_model

DATASET = NamePattern("projects/{project}/datasets/{dataset}")
VERSION = NamePattern("projects/{project}/datasets/{dataset}/versions/{version}")
MODEL = NamePattern("projects/{project}/models/{model}")
DOWNLOAD_CHUNK = 1024 * 1024


def _reference_target(name: str, field: str) -> tuple[str, str]:
    """A reference's target is a dataset version or a model; returns (project, target)."""
    for pattern in (VERSION, MODEL):
        try:
            values = pattern.parse(name, field)
        except InvalidArgument:
            continue
        ensure_project_visible(values["project"], name)
        return values["project"], name
    raise InvalidArgument.from_violations(
        "INVALID_NAME",
        [FieldViolation(field, f"{name!r} is neither a dataset version nor a model name")],
    )


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(self, datasets: Datasets, models: Models, previews: Previews, spool_dir: Path):
        self.datasets = datasets
        self.models = models
        self.previews = previews
        self.spool_dir = spool_dir

    # -- datasets -------------------------------------------------------------------------

    async def UploadDatasetVersion(self, request_iterator, context):
        spooled = await receive_dataset(request_iterator, self.spool_dir)
        try:
            header = spooled.header
            values = parse_visible(DATASET, header.parent, "header.parent")
            upload = ReceivedUpload(
                project=values["project"],
                dataset_id=values["dataset"],
                path=spooled.path,
                sha256=spooled.sha256,
                size_bytes=spooled.size_bytes,
                filename=Path(header.filename).name,
                format=DatasetFormat.from_name(protos.FORMAT_NAMES.get(header.format, "")),
                description=header.description,
                request_id=header.request_id,
            )
            record, created = await asyncio.to_thread(self.datasets.ingest, upload)
        finally:
            spooled.path.unlink(missing_ok=True)
        return pb.UploadDatasetVersionResponse(
            dataset_version=protos.dataset_version(record), created=created
        )

    async def GetDataset(self, request, context):
        v = parse_visible(DATASET, request.name)
        record = await asyncio.to_thread(self.datasets.get_dataset, v["project"], v["dataset"])
        return protos.dataset(record)

    async def ListDatasets(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        records = await asyncio.to_thread(
            self.datasets.repo.list_datasets, project, after[0] if after else None, size + 1
        )
        page, token = pagination.split_page(records, size, lambda r: [r.dataset_id])
        return pb.ListDatasetsResponse(
            datasets=[protos.dataset(r) for r in page], next_page_token=token
        )

    async def DeleteDataset(self, request, context):
        v = parse_visible(DATASET, request.name)
        await asyncio.to_thread(self.datasets.delete_dataset, v["project"], v["dataset"])
        return empty_pb2.Empty()

    async def GetDatasetVersion(self, request, context):
        v = parse_visible(VERSION, request.name)
        record = await asyncio.to_thread(
            self.datasets.get_version, v["project"], v["dataset"], v["version"]
        )
        return protos.dataset_version(record)

    async def ListDatasetVersions(self, request, context):
        v = parse_visible(DATASET, request.parent, "parent")
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        await asyncio.to_thread(self.datasets.get_dataset, v["project"], v["dataset"])
        records = await asyncio.to_thread(
            self.datasets.repo.list_versions, v["project"], v["dataset"], after, size + 1
        )
        page, token = pagination.split_page(
            records, size, lambda r: [r.create_time.isoformat(), r.version_id]
        )
        return pb.ListDatasetVersionsResponse(
            dataset_versions=[protos.dataset_version(r) for r in page], next_page_token=token
        )

    async def DeleteDatasetVersion(self, request, context):
        v = parse_visible(VERSION, request.name)
        await asyncio.to_thread(
            self.datasets.delete_version, v["project"], v["dataset"], v["version"]
        )
        return empty_pb2.Empty()

    async def DownloadDatasetVersion(self, request, context):
        v = parse_visible(VERSION, request.name)
        record = await asyncio.to_thread(
            self.datasets.get_version, v["project"], v["dataset"], v["version"]
        )
        raw = request.object == pb.DATASET_OBJECT_RAW
        async for chunk in _iterate_in_thread(self.datasets.open_object(record, raw=raw)):
            yield pb.DownloadChunk(data=chunk)

    async def PreviewDatasetVersion(self, request, context):
        v = parse_visible(VERSION, request.name)
        m = parse_visible(MODEL, request.model, "model")
        if request.record_count < 0 or request.record_count > 50:
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT", [FieldViolation("record_count", "must be between 0 and 50")]
            )
        result = await asyncio.to_thread(
            self.previews.preview,
            version=(v["project"], v["dataset"], v["version"]),
            model=(m["project"], m["model"]),
            count=request.record_count or 3,
            chat_template=request.chat_template,
            system_prompt=request.system_prompt,
            max_length=request.max_length,
        )
        return protos.preview(result)

    # -- models ---------------------------------------------------------------------------

    async def UploadModel(self, request_iterator, context):
        directory = Path(tempfile.mkdtemp(dir=self.spool_dir, prefix="model-"))
        try:
            spooled = await receive_model(request_iterator, directory)
            header = spooled.header
            project = parse_visible(PROJECT, header.parent, "header.parent")["project"]
            upload = ReceivedModel(
                project=project,
                model_id=check_id(header.model_id, "header.model_id"),
                directory=directory,
                file_sha256=spooled.file_sha256,
                kind=protos.KIND_NAMES.get(header.kind, ""),
                description=header.description,
                lineage=protos.lineage_dict(header.lineage),
                contract=protos.contract_dict(header.contract),
                replace=header.replace,
                request_id=header.request_id,
            )
            record = await asyncio.to_thread(self.models.register, upload)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return protos.model(record)

    async def GetModel(self, request, context):
        v = parse_visible(MODEL, request.name)
        return protos.model(await asyncio.to_thread(self.models.get, v["project"], v["model"]))

    async def ListModels(self, request, context):
        project = parse_visible(PROJECT, request.parent, "parent")["project"]
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        records = await asyncio.to_thread(
            self.models.repo.list_models,
            project,
            protos.KIND_NAMES.get(request.kind, ""),
            after[0] if after else None,
            size + 1,
        )
        page, token = pagination.split_page(records, size, lambda r: [r.model_id])
        return pb.ListModelsResponse(models=[protos.model(r) for r in page], next_page_token=token)

    async def DeleteModel(self, request, context):
        v = parse_visible(MODEL, request.name)
        await asyncio.to_thread(self.models.delete, v["project"], v["model"])
        return empty_pb2.Empty()

    async def DownloadModel(self, request, context):
        v = parse_visible(MODEL, request.name)
        record = await asyncio.to_thread(self.models.get, v["project"], v["model"])
        for f in record.files:
            yield pb.DownloadModelResponse(
                file=protos.model_pb2.ModelFile(path=f.path, object=protos.object_ref(f.object))
            )
            async for chunk in _iterate_in_thread(self.models.open_file(record, f.path)):
                yield pb.DownloadModelResponse(chunk=chunk)

    # -- references -----------------------------------------------------------------------

    async def CreateReference(self, request, context):
        project, target = _reference_target(request.parent, "parent")
        holder = request.reference.holder
        if not holder:
            raise InvalidArgument.from_violations(
                "INVALID_ARGUMENT", [FieldViolation("reference.holder", "is required")]
            )
        await asyncio.to_thread(self._require_target, project, target)
        record = await asyncio.to_thread(
            self.datasets.repo.add_reference, project, target, _reference_id(holder), holder
        )
        return protos.reference(record)

    async def ListReferences(self, request, context):
        project, target = _reference_target(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token)
        rows = await asyncio.to_thread(
            self.datasets.repo.list_references,
            project,
            target,
            after[0] if after else None,
            size + 1,
        )
        page, token = pagination.split_page(rows, size, lambda row: [row[0]])
        return pb.ListReferencesResponse(
            references=[protos.reference(r) for _, r in page], next_page_token=token
        )

    async def DeleteReference(self, request, context):
        target, sep, reference_id = request.name.rpartition("/references/")
        if not sep:
            raise InvalidArgument.from_violations(
                "INVALID_NAME", [FieldViolation("name", "expected {target}/references/{reference}")]
            )
        project, target = _reference_target(target, "name")
        if not await asyncio.to_thread(
            self.datasets.repo.delete_reference, project, target, reference_id
        ):
            raise NotFound(f"{request.name} not found", reason="REFERENCE_NOT_FOUND")
        return empty_pb2.Empty()

    def _require_target(self, project: str, target: str) -> None:
        if "/datasets/" in target:
            v = VERSION.parse(target)
            self.datasets.get_version(project, v["dataset"], v["version"])
        else:
            self.models.get(project, MODEL.parse(target)["model"])


def _reference_id(holder: str) -> str:
    """Derive the reference id from its holder so that creating it again is idempotent."""
    return holder.removeprefix("projects/").replace("/", ".")


async def _iterate_in_thread(chunks):
    """Pull a blocking byte iterator from a worker thread, one chunk at a time."""
    sentinel = object()
    try:
        while True:
            chunk = await asyncio.to_thread(next, chunks, sentinel)
            if chunk is sentinel:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

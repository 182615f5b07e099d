"""The danlu Python SDK: a typed client over the gRPC API.

    from danlu_client import Client
    with Client("127.0.0.1:50051", project="default") as danlu:
        version = danlu.registry.push_dataset("personal_assistant.json", "assistant")

Every failure raises a :class:`danlu_client.errors.DanluError` subclass.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from danlu.registry.v1 import dataset_pb2, model_pb2, registry_service_pb2_grpc
from danlu.registry.v1 import registry_service_pb2 as pb
from danlu_client.conversion import ConversionClient
from danlu_client.errors import DanluError, from_rpc_error
from danlu_client.inference import InferenceClient
from danlu_client.training import TrainingClient

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK_BYTES = 1024 * 1024
Progress = Callable[[int], None]  # called with the number of bytes just sent/received

FORMATS = {
    "auto": dataset_pb2.DATASET_FORMAT_UNSPECIFIED,
    "openai": dataset_pb2.DATASET_FORMAT_OPENAI,
    "alpaca": dataset_pb2.DATASET_FORMAT_ALPACA,
    "sharegpt": dataset_pb2.DATASET_FORMAT_SHAREGPT,
    "text": dataset_pb2.DATASET_FORMAT_TEXT,
}
MODEL_KINDS = {
    "auto": model_pb2.MODEL_KIND_UNSPECIFIED,
    "base": model_pb2.MODEL_KIND_BASE,
    "adapter": model_pb2.MODEL_KIND_ADAPTER,
    "merged": model_pb2.MODEL_KIND_MERGED,
    "full": model_pb2.MODEL_KIND_FULL,
}


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call."""

    def __init__(self, token: str | None):
        self._extra = (("authorization", f"Bearer {token}"),) if token else ()

    def _details(self, details):
        metadata = tuple(details.metadata or ()) + self._extra
        return (
            details._replace(metadata=metadata)
            if hasattr(details, "_replace")
            else _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                getattr(details, "wait_for_ready", None),
                getattr(details, "compression", None),
            )
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def _mapped(fn):
    """Turn grpc.RpcError into the SDK's exception family (also inside returned iterators)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        if isinstance(result, Iterator):
            return _mapped_iterator(result)
        return result

    return wrapper


def _mapped_iterator(iterator):
    try:
        yield from iterator
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None


def split_ref(ref: str) -> tuple[str, str]:
    """``NAME[@VERSION]`` -> (name, version or 'latest')."""
    name, _, version = ref.partition("@")
    return name, version or "latest"


class RegistryClient:
    def __init__(self, channel: grpc.Channel, project: str):
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        self.project = project

    # Resource names from short ids (full names are accepted too).
    def dataset_name(self, dataset: str) -> str:
        return (
            dataset
            if dataset.startswith("projects/")
            else f"projects/{self.project}/datasets/{dataset}"
        )

    def version_name(self, ref: str) -> str:
        if ref.startswith("projects/") and "/versions/" in ref:
            return ref
        name, version = split_ref(ref)
        return f"{self.dataset_name(name)}/versions/{version}"

    def model_name(self, model: str) -> str:
        return model if model.startswith("projects/") else f"projects/{self.project}/models/{model}"

    # -- datasets -------------------------------------------------------------------------

    @_mapped
    def push_dataset(
        self,
        path: str | os.PathLike,
        name: str,
        *,
        format: str = "auto",
        description: str = "",
        request_id: str = "",
        progress: Progress | None = None,
    ) -> pb.UploadDatasetVersionResponse:
        path = Path(path)
        header = pb.DatasetUploadHeader(
            parent=self.dataset_name(name),
            format=FORMATS[format],
            filename=path.name,
            description=description,
            size_bytes=path.stat().st_size,
            request_id=request_id,
        )

        def messages():
            digest = hashlib.sha256()
            yield pb.UploadDatasetVersionRequest(header=header)
            with path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
                    yield pb.UploadDatasetVersionRequest(chunk=chunk)
                    if progress:
                        progress(len(chunk))
            yield pb.UploadDatasetVersionRequest(
                trailer=pb.UploadTrailer(sha256=digest.hexdigest())
            )

        return self._stub.UploadDatasetVersion(messages())

    @_mapped
    def get_dataset(self, name: str) -> dataset_pb2.Dataset:
        return self._stub.GetDataset(pb.GetDatasetRequest(name=self.dataset_name(name)))

    @_mapped
    def get_dataset_version(self, ref: str) -> dataset_pb2.DatasetVersion:
        return self._stub.GetDatasetVersion(
            pb.GetDatasetVersionRequest(name=self.version_name(ref))
        )

    def list_datasets(self, page_size: int = 0) -> Iterator[dataset_pb2.Dataset]:
        yield from self._pages(
            lambda token: self._stub.ListDatasets(
                pb.ListDatasetsRequest(
                    parent=f"projects/{self.project}", page_size=page_size, page_token=token
                )
            ),
            "datasets",
        )

    def list_dataset_versions(
        self, name: str, page_size: int = 0
    ) -> Iterator[dataset_pb2.DatasetVersion]:
        yield from self._pages(
            lambda token: self._stub.ListDatasetVersions(
                pb.ListDatasetVersionsRequest(
                    parent=self.dataset_name(name), page_size=page_size, page_token=token
                )
            ),
            "dataset_versions",
        )

    @_mapped
    def delete_dataset(self, name: str) -> None:
        if "@" in name:
            self._stub.DeleteDatasetVersion(
                pb.DeleteDatasetVersionRequest(name=self.version_name(name))
            )
        else:
            self._stub.DeleteDataset(pb.DeleteDatasetRequest(name=self.dataset_name(name)))

    @_mapped
    def preview_dataset(
        self,
        ref: str,
        model: str,
        *,
        count: int = 3,
        chat_template: str = "",
        system_prompt: str = "",
        max_length: int = 0,
    ) -> pb.PreviewDatasetVersionResponse:
        return self._stub.PreviewDatasetVersion(
            pb.PreviewDatasetVersionRequest(
                name=self.version_name(ref),
                model=self.model_name(model),
                record_count=count,
                chat_template=chat_template,
                system_prompt=system_prompt,
                max_length=max_length,
            )
        )

    @_mapped
    def download_dataset(self, ref: str, dest: str | os.PathLike, *, raw: bool = False) -> Path:
        dest = Path(dest)
        which = pb.DATASET_OBJECT_RAW if raw else pb.DATASET_OBJECT_NORMALIZED
        partial = dest.with_name(dest.name + ".partial")
        with partial.open("wb") as f:
            for chunk in self._stub.DownloadDatasetVersion(
                pb.DownloadDatasetVersionRequest(name=self.version_name(ref), object=which)
            ):
                f.write(chunk.data)
        partial.replace(dest)
        return dest

    # -- models ---------------------------------------------------------------------------

    @_mapped
    def push_model(
        self,
        directory: str | os.PathLike,
        name: str,
        *,
        kind: str = "auto",
        description: str = "",
        replace: bool = False,
        lineage: dict | None = None,
        contract: dict | None = None,
        request_id: str = "",
        progress: Progress | None = None,
    ) -> model_pb2.Model:
        from google.protobuf import json_format

        directory = Path(directory)
        files = sorted(
            p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise DanluError("INVALID_ARGUMENT", f"{directory} contains no files", "MODEL_INVALID")
        header = pb.ModelUploadHeader(
            parent=f"projects/{self.project}",
            model_id=name,
            kind=MODEL_KINDS[kind],
            description=description,
            replace=replace,
            request_id=request_id,
        )
        json_format.ParseDict(lineage or {}, header.lineage)
        json_format.ParseDict(contract or {}, header.contract)

        def messages():
            yield pb.UploadModelRequest(header=header)
            for path in files:
                rel = path.relative_to(directory).as_posix()
                yield pb.UploadModelRequest(
                    file=pb.ModelFileHeader(path=rel, size_bytes=path.stat().st_size)
                )
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK_BYTES):
                        digest.update(chunk)
                        yield pb.UploadModelRequest(chunk=chunk)
                        if progress:
                            progress(len(chunk))
                yield pb.UploadModelRequest(file_end=pb.ModelFileTrailer(sha256=digest.hexdigest()))

        return self._stub.UploadModel(messages())

    @_mapped
    def get_model(self, name: str) -> model_pb2.Model:
        return self._stub.GetModel(pb.GetModelRequest(name=self.model_name(name)))

    def list_models(self, kind: str = "auto", page_size: int = 0) -> Iterator[model_pb2.Model]:
        yield from self._pages(
            lambda token: self._stub.ListModels(
                pb.ListModelsRequest(
                    parent=f"projects/{self.project}",
                    kind=MODEL_KINDS[kind],
                    page_size=page_size,
                    page_token=token,
                )
            ),
            "models",
        )

    @_mapped
    def delete_model(self, name: str) -> None:
        self._stub.DeleteModel(pb.DeleteModelRequest(name=self.model_name(name)))

    @_mapped
    def download_model(self, name: str, dest: str | os.PathLike) -> Path:
        """Download every file of the model into ``dest`` (verified against its SHA-256)."""
        dest = Path(dest)
        current, digest, expected = None, None, None

        def finish():
            if current is not None:
                current.close()
                if digest.hexdigest() != expected.object.sha256:
                    raise DanluError(
                        "DATA_LOSS", f"{expected.path}: digest mismatch", "DIGEST_MISMATCH"
                    )

        for message in self._stub.DownloadModel(
            pb.DownloadModelRequest(name=self.model_name(name))
        ):
            if message.WhichOneof("payload") == "file":
                finish()
                expected = message.file
                target = dest / expected.path
                target.parent.mkdir(parents=True, exist_ok=True)
                current, digest = target.open("wb"), hashlib.sha256()
            else:
                current.write(message.chunk)
                digest.update(message.chunk)
        finish()
        return dest

    # -- references -----------------------------------------------------------------------

    @_mapped
    def create_reference(self, target: str, holder: str) -> model_pb2.Reference:
        return self._stub.CreateReference(
            pb.CreateReferenceRequest(parent=target, reference=model_pb2.Reference(holder=holder))
        )

    @_mapped
    def delete_reference(self, name: str) -> None:
        self._stub.DeleteReference(pb.DeleteReferenceRequest(name=name))

    @staticmethod
    def _pages(call, field_name: str):
        token = ""
        while True:
            try:
                response = call(token)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
            yield from getattr(response, field_name)
            token = response.next_page_token
            if not token:
                return


class Client:
    """A connection to a danlu endpoint (one service, the gateway, or `danlu up`)."""

    def __init__(
        self, target: str = DEFAULT_TARGET, *, token: str | None = None, project: str = "default"
    ):
        self.target = target
        self.project = project
        channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
            ],
        )
        self._channel = grpc.intercept_channel(channel, _Metadata(token))
        self._raw_channel = channel
        self.registry = RegistryClient(self._channel, project)
        self.inference = InferenceClient(self._channel, project)
        self.training = TrainingClient(self._channel, project)
        self.conversion = ConversionClient(self._channel, project)

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise DanluError(
                "UNAVAILABLE", f"no danlu server answered at {self.target}", "UNREACHABLE"
            ) from None

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Conversions between core records and API messages (the only place that knows both)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from danlu.common.v1 import common_pb2
from danlu.registry.v1 import dataset_pb2, model_pb2, registry_service_pb2
from danlu_registry.core.records import (
    DatasetRecord,
    DatasetVersionRecord,
    ModelRecord,
    ReferenceRecord,
    StoredObject,
)

FORMATS = {
    "openai": dataset_pb2.DATASET_FORMAT_OPENAI,
    "alpaca": dataset_pb2.DATASET_FORMAT_ALPACA,
    "sharegpt": dataset_pb2.DATASET_FORMAT_SHAREGPT,
    "text": dataset_pb2.DATASET_FORMAT_TEXT,
}
FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
TASKS = {"chat": dataset_pb2.DATASET_TASK_CHAT, "text": dataset_pb2.DATASET_TASK_TEXT}
KINDS = {
    "base": model_pb2.MODEL_KIND_BASE,
    "adapter": model_pb2.MODEL_KIND_ADAPTER,
    "merged": model_pb2.MODEL_KIND_MERGED,
    "full": model_pb2.MODEL_KIND_FULL,
}
KIND_NAMES = {v: k for k, v in KINDS.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written as UTC
        value = value.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def object_ref(o: StoredObject) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(key=o.key, sha256=o.sha256, size_bytes=o.size_bytes)


def dataset(r: DatasetRecord) -> dataset_pb2.Dataset:
    return dataset_pb2.Dataset(
        name=r.name,
        description=r.description,
        latest_version=f"{r.name}/versions/{r.latest_version}" if r.latest_version else "",
        version_count=r.version_count,
        create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time),
    )


def dataset_version(r: DatasetVersionRecord) -> dataset_pb2.DatasetVersion:
    stats = dataset_pb2.DatasetStats()
    json_format.ParseDict(r.stats, stats, ignore_unknown_fields=True)
    return dataset_pb2.DatasetVersion(
        name=r.name,
        digest=r.digest,
        format=FORMATS[r.format],
        task=TASKS[r.task],
        source_filename=r.source_filename,
        raw_object=object_ref(r.raw),
        normalized_object=object_ref(r.normalized),
        stats=stats,
        reference_count=r.reference_count,
        create_time=timestamp(r.create_time),
    )


def lineage_dict(message: common_pb2.Lineage) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def contract_dict(message: common_pb2.ServingContract) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def model(r: ModelRecord) -> model_pb2.Model:
    message = model_pb2.Model(
        name=r.name,
        kind=KINDS[r.kind],
        description=r.description,
        digest=r.digest,
        revision_id=r.revision_id,
        files=[model_pb2.ModelFile(path=f.path, object=object_ref(f.object)) for f in r.files],
        size_bytes=r.size_bytes,
        model_type=r.model_type,
        architecture=r.architecture,
        max_context_length=r.max_context_length,
        has_chat_template=r.has_chat_template,
        tokenizer_digest=r.tokenizer_digest,
        reference_count=r.reference_count,
        create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time),
    )
    json_format.ParseDict(r.lineage, message.lineage)
    json_format.ParseDict(r.contract, message.contract)
    return message


def reference(r: ReferenceRecord) -> model_pb2.Reference:
    return model_pb2.Reference(name=r.name, holder=r.holder, create_time=timestamp(r.create_time))


def preview(result) -> registry_service_pb2.PreviewDatasetVersionResponse:
    return registry_service_pb2.PreviewDatasetVersionResponse(
        dataset_version=result.dataset_version,
        chat_template=result.chat_template,
        records=[
            registry_service_pb2.PreviewRecord(
                index=r.index,
                text=r.text,
                segments=[
                    registry_service_pb2.PreviewSegment(
                        text=s.text, trains=s.trains, token_count=s.token_count
                    )
                    for s in r.segments
                ],
                token_count=r.token_count,
                loss_token_count=r.loss_token_count,
                truncated=r.truncated,
            )
            for r in result.records
        ],
    )

"""Plain records the registry core works with (no ORM, no protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size_bytes: int


@dataclass
class DatasetRecord:
    project: str
    dataset_id: str
    description: str
    create_time: datetime
    update_time: datetime
    latest_version: str | None = None
    version_count: int = 0

    @property
    def name(self) -> str:
        return f"projects/{self.project}/datasets/{self.dataset_id}"


@dataclass
class DatasetVersionRecord:
    project: str
    dataset_id: str
    version_id: str
    digest: str
    format: str
    task: str
    source_filename: str
    raw: StoredObject
    normalized: StoredObject
    stats: dict
    create_time: datetime
    request_id: str = ""
    reference_count: int = 0

    @property
    def name(self) -> str:
        return f"projects/{self.project}/datasets/{self.dataset_id}/versions/{self.version_id}"


@dataclass
class ModelFileRecord:
    path: str
    object: StoredObject


@dataclass
class ModelRecord:
    project: str
    model_id: str
    kind: str
    description: str
    digest: str
    revision_id: str
    files: list[ModelFileRecord]
    size_bytes: int
    model_type: str
    architecture: str
    max_context_length: int
    has_chat_template: bool
    tokenizer_digest: str
    lineage: dict = field(default_factory=dict)
    contract: dict = field(default_factory=dict)
    request_id: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    reference_count: int = 0

    @property
    def name(self) -> str:
        return f"projects/{self.project}/models/{self.model_id}"


@dataclass
class ReferenceRecord:
    project: str
    target: str
    reference_id: str
    holder: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"{self.target}/references/{self.reference_id}"

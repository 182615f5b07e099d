"""What the inference service stores: deployments (their engine state lives in memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

STATES = ("creating", "ready", "failed", "deleting")


@dataclass
class DeploymentRecord:
    project: str
    deployment_id: str
    model: str  # projects/{p}/models/{m}
    engine: str  # transformers | vllm
    # EngineOptions as requested, defaults resolved (see core.engine.EngineOptions).
    options: dict
    state: str = "creating"
    model_digest: str = ""
    # Set in state "failed": {"code": canonical code name, "message": ..., "reason": ...}.
    error: dict | None = None
    # The model revision as the registry described it (see core.artifacts.ArtifactInfo).
    model_info: dict = field(default_factory=dict)
    request_id: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"projects/{self.project}/deployments/{self.deployment_id}"

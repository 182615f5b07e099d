"""Per-request context (request id, authenticated project) shared by interceptors and servicers.

Context variables propagate into ``asyncio.to_thread`` workers, so core code running in a thread
still logs with the right request id.
"""

from __future__ import annotations

import contextvars
import uuid

from danlu_kit.errors import NotFound
from danlu_kit.names import NamePattern

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The project the caller's token is bound to; None when auth is off (embedded, loopback only).
caller_project_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "caller_project", default=None
)


# The caller's bearer token, so that a service can call another one on the caller's behalf (the
# training service resolving a dataset through the registry); None when auth is off.
caller_token_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "caller_token", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def ensure_project_visible(project: str, resource_name: str) -> None:
    """Raise NOT_FOUND when the caller's token belongs to another project.

    NOT_FOUND rather than PERMISSION_DENIED: a caller must not learn that another project's
    resource exists.
    """
    caller = caller_project_var.get()
    if caller is not None and caller != project:
        raise NotFound(f"{resource_name} not found", reason="NOT_FOUND")


def parse_visible(pattern: NamePattern, name: str, field: str = "name") -> dict[str, str]:
    """Parse a resource name of a request and check that the caller may see its project."""
    values = pattern.parse(name, field)
    ensure_project_visible(values["project"], name)
    return values

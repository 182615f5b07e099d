"""Typed errors raised by service cores.

Cores raise these and never import gRPC; one interceptor (``danlu_kit.grpc_errors``) turns
them into canonical gRPC status codes with ``google.rpc`` details. Every error carries a
machine-readable ``reason`` (UPPER_SNAKE_CASE, stable: clients branch on it) and a message
for humans that names what was wrong. Messages must never contain credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ERROR_DOMAIN = "danlu.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request or of uploaded content.

    ``field`` is a path such as ``spec.optimizer.lr`` or ``record[12].messages[1].role``.
    """

    field: str
    description: str


@dataclass
class DanluError(Exception):
    """Base class of every error a core raises on purpose."""

    message: str
    reason: str = "ERROR"
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    # The canonical code name (grpc.StatusCode member name) this error maps to.
    code_name = "UNKNOWN"

    def __post_init__(self) -> None:
        super().__init__(self.message)
        self.violations = tuple(self.violations)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(DanluError):
    """The request or uploaded content is wrong; retrying the same input fails again."""

    code_name = "INVALID_ARGUMENT"

    @classmethod
    def from_violations(
        cls, reason: str, violations: Iterable[FieldViolation], summary: str = ""
    ) -> InvalidArgument:
        vs = tuple(violations)
        head = "; ".join(f"{v.field}: {v.description}" for v in vs[:5])
        more = f" (+{len(vs) - 5} more)" if len(vs) > 5 else ""
        message = f"{summary}: {head}{more}" if summary else f"{head}{more}"
        return cls(message=message, reason=reason, violations=vs)


class NotFound(DanluError):
    """The named resource does not exist (or the caller may not see it)."""

    code_name = "NOT_FOUND"


class AlreadyExists(DanluError):
    """A resource with that name exists already."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(DanluError):
    """The system is not in a state where the request can run (e.g. still referenced)."""

    code_name = "FAILED_PRECONDITION"


class Aborted(DanluError):
    """A concurrent change conflicted with this one; retrying may succeed."""

    code_name = "ABORTED"


class ResourceExhausted(DanluError):
    """A quota or queue is full."""

    code_name = "RESOURCE_EXHAUSTED"


class Unauthenticated(DanluError):
    """No valid credentials were presented."""

    code_name = "UNAUTHENTICATED"


class PermissionDenied(DanluError):
    """The caller is known but may not do this."""

    code_name = "PERMISSION_DENIED"


class Unavailable(DanluError):
    """A dependency (object store, database, another service) cannot be reached right now."""

    code_name = "UNAVAILABLE"


class Cancelled(DanluError):
    """The operation was cancelled by its caller."""

    code_name = "CANCELLED"


class Unimplemented(DanluError):
    """The method exists in the contract but this deployment does not provide it."""

    code_name = "UNIMPLEMENTED"

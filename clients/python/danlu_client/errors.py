"""One exception family for every failed call, built from the server's google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class FieldViolation:
    field: str
    description: str


@dataclass
class DanluError(Exception):
    """A danlu call failed. ``code`` is the gRPC status name, ``reason`` the stable ErrorInfo
    reason (branch on it), ``violations`` the bad fields of an INVALID_ARGUMENT."""

    code: str
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)
    request_id: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return (
            f"{self.code} ({self.reason}): {self.message}"
            if self.reason
            else f"{self.code}: {self.message}"
        )


class InvalidArgumentError(DanluError):
    """The request or the uploaded content is wrong."""


class NotFoundError(DanluError):
    """The resource does not exist (or belongs to another project)."""


class AlreadyExistsError(DanluError):
    """A resource with that name exists already."""


class FailedPreconditionError(DanluError):
    """The system is not in a state that allows the call (e.g. the resource is in use)."""


class UnauthenticatedError(DanluError):
    """The token is missing or wrong."""


class PermissionDeniedError(DanluError):
    """The token may not do this."""


class ResourceExhaustedError(DanluError):
    """A queue or quota is full; retry later."""


class UnavailableError(DanluError):
    """The server or one of its dependencies cannot be reached; retry later."""


class UnimplementedError(DanluError):
    """This deployment does not provide the method."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


def from_rpc_error(err: grpc.RpcError) -> DanluError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    reason, metadata, violations = "", {}, []
    status = rpc_status.from_call(err) if hasattr(err, "trailing_metadata") else None
    if status is not None:
        message = status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    request_id = ""
    if hasattr(err, "initial_metadata"):
        request_id = dict(err.initial_metadata() or ()).get("x-request-id", "")
    cls = _BY_CODE.get(code, DanluError)
    return cls(code.name, message or "", reason, metadata, violations, request_id)

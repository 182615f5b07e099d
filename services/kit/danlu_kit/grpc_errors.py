"""Typed core errors -> canonical gRPC status with ``google.rpc`` details.

The one place that knows both worlds: servicers let core errors propagate and the error
interceptor (``danlu_kit.interceptors``) calls :func:`status_for` to build the status.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from danlu_kit.errors import ERROR_DOMAIN, DanluError

# Key under which gRPC carries a serialised google.rpc.Status in trailing metadata.
DETAILS_KEY = "grpc-status-details-bin"


def status_proto(code: grpc.StatusCode, message: str, reason: str, **extra) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=extra)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


def status_for(err: DanluError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    code = grpc.StatusCode[err.code_name]
    status = status_proto(code, err.message, err.reason, **dict(err.metadata))
    if err.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in err.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return code, status


def internal_status(request_id: str) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """What a caller sees for an unexpected exception: no stack trace, a request id to report."""
    message = f"internal error; the server log has details under request id {request_id}"
    return grpc.StatusCode.INTERNAL, status_proto(grpc.StatusCode.INTERNAL, message, "INTERNAL")

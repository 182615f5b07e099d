"""Server interceptors: request context + logging + metrics, auth, and error mapping.

grpc.aio interceptors return a method handler; to act around the *behaviour* (and catch what it
raises) we rebuild the handler with wrapped behaviours. ``_wrap`` does that once for all four
call shapes so each interceptor only writes an async context manager.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

from danlu_kit import grpc_errors
from danlu_kit.auth import TokenBook, parse_authorization
from danlu_kit.errors import DanluError
from danlu_kit.request_context import (
    caller_project_var,
    caller_token_var,
    new_request_id,
    request_id_var,
)

log = logging.getLogger("danlu.rpc")

RPC_TOTAL = Counter("danlu_rpc_total", "RPCs handled", ["method", "code"])
RPC_SECONDS = Histogram("danlu_rpc_seconds", "RPC duration (whole stream for streams)", ["method"])

# Methods that never need a token: health checks and reflection, as probes and grpcurl expect.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

Around = Callable[[aio.ServicerContext, str], contextlib.AbstractAsyncContextManager[Any]]


def _wrap(handler: grpc.RpcMethodHandler, method: str, around: Around) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour run inside ``around(context, method)``."""
    if handler.unary_unary or handler.stream_unary:
        behaviour = handler.unary_unary or handler.stream_unary

        async def unary_result(request_or_iterator, context):
            async with around(context, method):
                return await behaviour(request_or_iterator, context)

        make = grpc.unary_unary_rpc_method_handler
        if handler.stream_unary:
            make = grpc.stream_unary_rpc_method_handler
        wrapped = unary_result
    else:
        behaviour = handler.unary_stream or handler.stream_stream

        async def streamed_result(request_or_iterator, context) -> AsyncIterator[Any]:
            async with around(context, method):
                async for response in behaviour(request_or_iterator, context):
                    yield response

        make = grpc.unary_stream_rpc_method_handler
        if handler.stream_stream:
            make = grpc.stream_stream_rpc_method_handler
        wrapped = streamed_result
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _AroundInterceptor(aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap(handler, handler_call_details.method, self.around)

    def around(self, context: aio.ServicerContext, method: str):  # pragma: no cover - abstract
        raise NotImplementedError


def _metadata(context: aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class RequestContextInterceptor(_AroundInterceptor):
    """Sets the request id (from ``x-request-id`` or new), logs each call, records metrics."""

    @contextlib.asynccontextmanager
    async def around(self, context, method):
        request_id = _metadata(context).get("x-request-id") or new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        await context.send_initial_metadata((("x-request-id", request_id),))
        try:
            yield
        finally:
            code = context.code() if hasattr(context, "code") else None
            code_name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            seconds = time.perf_counter() - started
            RPC_TOTAL.labels(method, code_name).inc()
            RPC_SECONDS.labels(method).observe(seconds)
            log.info(
                "rpc", extra={"method": method, "code": code_name, "seconds": round(seconds, 4)}
            )
            request_id_var.reset(token)


class ErrorInterceptor(_AroundInterceptor):
    """Typed core errors -> status + details; anything else -> INTERNAL without internals."""

    @contextlib.asynccontextmanager
    async def around(self, context, method):
        try:
            yield
        except DanluError as err:
            code, status = grpc_errors.status_for(err)
            await _abort(context, code, status)
        except (aio.AbortError, GeneratorExit):
            raise
        except Exception:
            log.exception("unhandled error in %s", method)
            code, status = grpc_errors.internal_status(request_id_var.get())
            await _abort(context, code, status)


async def _abort(context: aio.ServicerContext, code: grpc.StatusCode, status) -> None:
    await context.abort(
        code,
        status.message,
        trailing_metadata=((grpc_errors.DETAILS_KEY, status.SerializeToString()),),
    )


class AuthInterceptor(_AroundInterceptor):
    """Binds the caller to the project of its bearer token (raises UNAUTHENTICATED otherwise)."""

    def __init__(self, tokens: TokenBook, self_authenticated: Sequence[str] = ()):
        self._tokens = tokens
        # Services that check their own credentials (the training worker API: per-attempt
        # worker tokens) are passed through like health and reflection.
        self._public = PUBLIC_PREFIXES + tuple(f"/{name}/" for name in self_authenticated)

    @contextlib.asynccontextmanager
    async def around(self, context, method):
        if method.startswith(self._public):
            yield
            return
        bearer = parse_authorization(_metadata(context).get("authorization"))
        project = self._tokens.project_for(bearer)
        project_token = caller_project_var.set(project)
        bearer_token = caller_token_var.set(bearer)
        try:
            yield
        finally:
            caller_token_var.reset(bearer_token)
            caller_project_var.reset(project_token)


def server_interceptors(
    tokens: TokenBook | None, self_authenticated: Sequence[str] = ()
) -> list[aio.ServerInterceptor]:
    """The interceptor chain, outermost first; ``tokens=None`` turns auth off.

    ``self_authenticated`` names gRPC services (full names) whose callers present no bearer
    token because the service authenticates them itself."""
    chain: list[aio.ServerInterceptor] = [RequestContextInterceptor(), ErrorInterceptor()]
    if tokens is not None:
        chain.append(AuthInterceptor(tokens, self_authenticated))
    return chain

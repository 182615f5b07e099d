"""The OpenAI-compatible HTTP endpoint: ``GET /v1/models`` and ``POST /v1/chat/completions``
(streaming with server-sent events, or not). Another thin layer over the same core as the gRPC
API, in the same event loop, with the same bearer tokens.

Models are addressed as OpenAI clients expect a model string: a deployment id, a deployed
model's id, ``BASE:ADAPTER`` (BASE a deployment or deployed model, ADAPTER an adapter's
registry name) or an adapter's registry name alone (served by a ready deployment of its base).
vLLM's extra sampling parameters (``top_k``, ``repetition_penalty``) are accepted in the body.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from typing import Any

from aiohttp import web

from danlu_inference.adapters.registry_source import forwarded_token
from danlu_inference.core.deployments import ChatInput, Deployments
from danlu_inference.core.engine import Finish, FinishReason, TokenDelta
from danlu_inference.core.prompts import Message, SamplingInput
from danlu_kit.auth import TokenBook, parse_authorization
from danlu_kit.errors import DanluError, FieldViolation, InvalidArgument
from danlu_kit.request_context import new_request_id, request_id_var

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.STOP_WORD: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CANCELLED: "stop",
}


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
    return web.json_response(body, status=status)


def _from_danlu(err: DanluError) -> web.Response:
    status = HTTP_STATUS.get(err.code_name, 500)
    param = err.violations[0].field if err.violations else None
    return _error(status, err.message, err.reason, param)


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument.from_violations("INVALID_ARGUMENT", [FieldViolation(field, description)])


def _number(body: dict, key: str, kind=float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(key, f"must be a number, got {value!r}")
    return kind(value)


def parse_chat_body(body: Any) -> tuple[str, list[Message], SamplingInput, bool, bool]:
    """(model, messages, sampling, stream, include_usage) from a chat completion request."""
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "is required")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages", "at least one message is required")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _invalid(f"messages[{i}]", "must be an object")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: text only
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _invalid(f"messages[{i}].content", "must be a string")
        role = m.get("role")
        role = "system" if role == "developer" else role
        messages.append(Message(role if isinstance(role, str) else "", content))
    if body.get("n") not in (None, 1):
        raise _invalid("n", "only n=1 is supported")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("max_tokens", "must be a positive integer")
    seed = _number(body, "seed", int)
    sampling = SamplingInput(
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=_number(body, "top_k", int),
        max_new_tokens=max_tokens or 0,
        seed=seed,
        repetition_penalty=_number(body, "repetition_penalty"),
        stop_words=stop,
    )
    stream = bool(body.get("stream", False))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
    return model, messages, sampling, stream, include_usage


_FIELD_NAMES = {"sampling.max_new_tokens": "max_tokens", "sampling.stop_words": "stop"}


def _openai_field(field: str) -> str:
    """The core names fields as the gRPC API does; say them as the OpenAI API does."""
    for ours, theirs in _FIELD_NAMES.items():
        if field.startswith(ours):
            return theirs + field[len(ours) :]
    return field.removeprefix("sampling.")


class OpenAIEndpoint:
    def __init__(self, deployments: Deployments, host: str, port: int, tokens: TokenBook | None):
        if tokens is None and host not in LOOPBACK:
            raise ValueError("auth is off: refusing to listen on a non-loopback address")
        self.deployments = deployments
        self.host = host
        self.requested_port = port
        self.tokens = tokens
        self.port: int | None = None
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        self.app = app

    def bind(self) -> None:
        """Bind and listen now (connections wait in the backlog until ``start``)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        # handler_cancellation: a client that disconnects cancels its handler, which stops
        # its generation.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()
        log.info("openai endpoint serving", extra={"address": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif self._socket is not None:
            self._socket.close()

    def _project(self, request: web.Request) -> str:
        header = request.headers.get("Authorization")
        if self.tokens is None:
            forwarded_token.set(None)
            return request.headers.get("OpenAI-Project") or "default"
        token = parse_authorization(header)
        project = self.tokens.project_for(token)
        forwarded_token.set(token)
        return project

    async def models(self, request: web.Request) -> web.Response:
        request_id_var.set(request.headers.get("X-Request-Id") or new_request_id())
        try:
            project = self._project(request)
        except DanluError as err:
            return _from_danlu(err)
        data = []
        for view in self.deployments.ready_views(project):
            created = int(view.record.create_time.timestamp()) if view.record.create_time else 0
            dep = view.record.deployment_id
            data.append(
                {
                    "id": dep,
                    "object": "model",
                    "created": created,
                    "owned_by": project,
                    "root": view.record.model,
                }
            )
            for a in view.adapters:
                data.append(
                    {
                        "id": f"{dep}:{a.name.rsplit('/', 1)[-1]}",
                        "object": "model",
                        "created": created,
                        "owned_by": project,
                        "root": a.name,
                        "parent": dep,
                    }
                )
        return web.json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        request_id = request.headers.get("X-Request-Id") or new_request_id()
        request_id_var.set(request_id)
        try:
            project = self._project(request)
            try:
                body = await request.json()
            except ValueError:
                raise _invalid("body", "is not valid JSON") from None
            model, messages, sampling, stream, include_usage = parse_chat_body(body)
            deployment_id, adapter = await self.deployments.resolve_alias(project, model)
            chunks = self.deployments.chat(
                project,
                deployment_id,
                ChatInput(
                    messages=messages, adapter=adapter, sampling=sampling, request_id=request_id
                ),
            ).__aiter__()
            first = await chunks.__anext__()  # errors before the first token are HTTP errors
        except DanluError as err:
            if err.violations:
                v = err.violations[0]
                err.violations = (FieldViolation(_openai_field(v.field), v.description),)
            return _from_danlu(err)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not stream:
            return await self._complete(completion_id, created, model, first, chunks)
        return await self._stream(
            request, completion_id, created, model, first, chunks, include_usage
        )

    async def _complete(self, completion_id, created, model, first, chunks) -> web.Response:
        text, item = [], first
        while True:
            if isinstance(item, TokenDelta):
                text.append(item.text)
            elif isinstance(item, Finish):
                break
            item = await chunks.__anext__()
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "finish_reason": FINISH[item.reason],
                    }
                ],
                "usage": _usage(item),
            }
        )

    async def _stream(self, request, completion_id, created, model, first, chunks, include_usage):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(delta: dict, finish: str | None = None, usage: dict | None = None):
            doc = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage is not None:
                doc["choices"] = []
                doc["usage"] = usage
            await response.write(f"data: {json.dumps(doc, ensure_ascii=False)}\n\n".encode())

        try:
            await send({"role": "assistant", "content": ""})
            item = first
            while True:
                if isinstance(item, TokenDelta):
                    await send({"content": item.text})
                elif isinstance(item, Finish):
                    await send({}, FINISH[item.reason])
                    if include_usage:
                        await send({}, usage=_usage(item))
                    break
                item = await chunks.__anext__()
            await response.write(b"data: [DONE]\n\n")
        except DanluError as err:  # after the first token: report in-band, as OpenAI does
            doc = {"error": {"message": err.message, "code": err.reason}}
            await response.write(f"data: {json.dumps(doc)}\n\n".encode())
        finally:
            await chunks.aclose()
        await response.write_eof()
        return response


def _usage(finish: Finish) -> dict:
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
    }

"""The kit's server: auth modes, project isolation, health, reflection, error mapping."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from danlu.registry.v1 import registry_service_pb2_grpc
from danlu_client import Client
from danlu_client.errors import DanluError, NotFoundError, UnauthenticatedError
from danlu_kit.auth import TokenBook, hash_token
from danlu_kit.errors import FieldViolation, InvalidArgument
from danlu_kit.grpc_errors import status_for
from danlu_kit.server import Server, ServerOptions
from tests.fixtures.registry import start_registry
from tests.fixtures.servers import ServerThread

TOKENS = {"token-a": "alpha", "token-b": "beta"}


@pytest.fixture
def authed(tmp_path):
    env = {"DANLU_REGISTRY_DATA_DIR": str(tmp_path)}
    server = start_registry(env, tokens=TokenBook.from_tokens(TOKENS))
    yield server
    server.stop()


def test_token_binds_caller_to_its_project(authed, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n")
    with Client(authed.target, token="token-a", project="alpha") as a:
        version = a.registry.push_dataset(corpus, "private").dataset_version
        assert version.name.startswith("projects/alpha/")
    with Client(authed.target, token="token-b", project="alpha") as b:
        for call in (
            lambda: b.registry.get_dataset("private"),
            lambda: b.registry.get_dataset_version(version.name),
            lambda: list(b.registry.list_datasets()),
            lambda: b.registry.push_dataset(corpus, "intruder"),
        ):
            with pytest.raises(NotFoundError):
                call()
    with Client(authed.target, token="token-b", project="beta") as b:
        assert list(b.registry.list_datasets()) == []


@pytest.mark.parametrize(("token", "reason"), [(None, "TOKEN_MISSING"), ("wrong", "TOKEN_INVALID")])
def test_missing_or_wrong_token(authed, token, reason):
    with (
        Client(authed.target, token=token, project="alpha") as c,
        pytest.raises(UnauthenticatedError) as info,
    ):
        list(c.registry.list_datasets())
    assert info.value.reason == reason


def test_health_and_reflection_need_no_token(authed):
    with grpc.insecure_channel(authed.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="danlu.registry.v1.RegistryService")
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "danlu.registry.v1.RegistryService" in names


def test_tokens_are_stored_hashed(tmp_path):
    book_file = tmp_path / "tokens"
    book_file.write_text(f"# comment\n{hash_token('secret-1')} alpha ci-bot\n")
    book = TokenBook.from_file(book_file)
    assert book.project_for("secret-1") == "alpha"
    assert "secret-1" not in book_file.read_text()
    book_file.write_text("plain-token alpha\n")
    with pytest.raises(InvalidArgument) as info:
        TokenBook.from_file(book_file)
    assert info.value.violations[0].field.endswith(":1")


def test_auth_off_refuses_public_address():
    with pytest.raises(ValueError, match="loopback"):
        Server([], ServerOptions(host="0.0.0.0", port=0, tokens=None))


def test_options_from_a_services_settings(tmp_path):
    from danlu_registry.settings import RegistrySettings

    env = {
        "DANLU_REGISTRY_DATA_DIR": str(tmp_path),
        "DANLU_REGISTRY_HOST": "0.0.0.0",
        "DANLU_REGISTRY_PORT": "6001",
        "DANLU_REGISTRY_METRICS_PORT": "6002",
        "DANLU_REGISTRY_AUTH_BOOTSTRAP_TOKEN": "tok",
    }
    settings = RegistrySettings.from_env(env)
    options = ServerOptions.from_settings(settings)
    assert (options.host, options.port, options.metrics_port) == ("0.0.0.0", 6001, 6002)
    assert options.tokens is settings.tokens
    assert options.grace_seconds == ServerOptions().grace_seconds


class _Exploding(registry_service_pb2_grpc.RegistryServiceServicer):
    async def GetDataset(self, request, context):
        raise RuntimeError("secret detail /etc/danlu/credentials")


class _ExplodingComponent:
    service_names = ("danlu.registry.v1.RegistryService",)

    def register(self, server):
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(_Exploding(), server)

    async def close(self):
        pass


def test_unexpected_errors_become_internal_without_details():
    server = ServerThread(lambda: [_ExplodingComponent()], ServerOptions(port=0)).start()
    try:
        with Client(server.target) as c, pytest.raises(DanluError) as info:
            c.registry.get_dataset("x")
        assert info.value.code == "INTERNAL" and info.value.reason == "INTERNAL"
        assert "secret" not in info.value.message and "Traceback" not in info.value.message
        assert info.value.request_id and info.value.request_id in info.value.message
    finally:
        server.stop()


def test_unregistered_services_answer_unimplemented():
    server = ServerThread(lambda: [], ServerOptions(port=0)).start()
    try:
        with Client(server.target) as c, pytest.raises(DanluError) as info:
            c.registry.get_dataset("x")
        assert info.value.code == "UNIMPLEMENTED"
    finally:
        server.stop()


def test_violations_become_bad_request_details():
    from google.rpc import error_details_pb2

    err = InvalidArgument.from_violations(
        "DATASET_INVALID", [FieldViolation("line 3: messages[0].role", "unknown")]
    )
    code, status = status_for(err)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    bad = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert len(infos) == 1 and len(bad) == 1
    request = error_details_pb2.BadRequest()
    bad[0].Unpack(request)
    assert request.field_violations[0].field == "line 3: messages[0].role"


def test_metrics_endpoint_counts_rpcs(tmp_path):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    from danlu_registry.service import build_registry
    from danlu_registry.settings import RegistrySettings

    settings = RegistrySettings.from_env(
        {"DANLU_REGISTRY_DATA_DIR": str(tmp_path), "DANLU_REGISTRY_AUTH": "off"}
    )
    server = ServerThread(
        lambda: [build_registry(settings)], ServerOptions(port=0, metrics_port=metrics_port)
    ).start()
    try:
        with Client(server.target) as c:
            list(c.registry.list_datasets())
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert (
            'danlu_rpc_total{code="OK",method="/danlu.registry.v1.RegistryService/ListDatasets"}'
            in body
        )
    finally:
        server.stop()


def test_json_logs_carry_the_request_id():
    import json
    import logging

    from danlu_kit.log import JsonFormatter
    from danlu_kit.request_context import request_id_var

    token = request_id_var.set("req-123")
    try:
        record = logging.LogRecord(
            "danlu.test", logging.INFO, __file__, 1, "hello %s", ("world",), None
        )
        record.dataset = "d1"
        doc = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert (
        doc["message"] == "hello world"
        and doc["request_id"] == "req-123"
        and doc["dataset"] == "d1"
    )

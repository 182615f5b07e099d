"""Project isolation with auth on (tokens forwarded to the registry), and deployments that
survive a restart of the service."""

from __future__ import annotations

import pytest

from danlu.inference.v1 import deployment_pb2
from danlu_client import Client
from danlu_client.errors import NotFoundError, UnauthenticatedError
from danlu_kit.auth import TokenBook
from tests.fixtures.inference import push_adapter, start_stack

QUESTION = [{"role": "user", "content": "Please introduce yourself."}]


def test_projects_are_isolated(tmp_path, tiny_model_dir, adapter_dirs):
    tokens = TokenBook.from_tokens({"token-a": "alpha", "token-b": "beta"})
    server = start_stack(tmp_path / "data", tokens=tokens)
    try:
        with (
            Client(server.target, token="token-a", project="alpha") as a,
            Client(server.target, token="token-b", project="beta") as b,
            Client(server.target, token="token-b", project="alpha") as b_as_alpha,
            Client(server.target, project="alpha") as anonymous,
        ):
            base = a.registry.push_model(tiny_model_dir, "tiny")
            push_adapter(a, adapter_dirs["one"], "mine", base)
            a.inference.create_deployment("tiny", deployment_id="tiny", wait=True)
            assert a.inference.chat("tiny", QUESTION, adapter="mine", max_new_tokens=4).text()

            assert list(b.inference.list_deployments()) == []
            with pytest.raises(NotFoundError):
                b_as_alpha.inference.get_deployment("tiny")
            with pytest.raises(NotFoundError):
                b_as_alpha.inference.chat("tiny", QUESTION).text()
            with pytest.raises(NotFoundError):
                b_as_alpha.inference.delete_deployment("tiny")
            with pytest.raises(NotFoundError):  # beta cannot deploy alpha's model
                b.inference.create_deployment("projects/alpha/models/tiny")
            with pytest.raises(NotFoundError):  # nor with an explicit id
                b.inference.create_deployment("projects/alpha/models/tiny", deployment_id="x")
            with pytest.raises(NotFoundError):  # nor use alpha's adapter on its own deployment
                b.inference.chat("tiny", QUESTION, adapter="projects/alpha/models/mine").text()
            # beta's own model of the same name does not exist in the registry for beta
            with pytest.raises(NotFoundError):
                b.inference.create_deployment("tiny")
            with pytest.raises(UnauthenticatedError):
                anonymous.inference.get_deployment("tiny")
            assert a.inference.get_deployment("tiny").state == (
                deployment_pb2.DEPLOYMENT_STATE_READY
            )
    finally:
        server.stop()


def test_deployments_are_reloaded_after_restart(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    server = start_stack(data)
    try:
        with Client(server.target) as c:
            base = c.registry.push_model(tiny_model_dir, "tiny")
            c.inference.create_deployment("tiny", deployment_id="kept", max_loras=2, wait=True)
            before = c.inference.chat("kept", QUESTION, temperature=0.0, max_new_tokens=12).text()
    finally:
        server.stop()
    server = start_stack(data)
    try:
        with Client(server.target) as c:
            d = c.inference.wait_ready("kept", timeout=60)
            assert d.model_digest == base.digest and d.options.max_loras == 2
            after = c.inference.chat("kept", QUESTION, temperature=0.0, max_new_tokens=12).text()
            assert after == before
    finally:
        server.stop()

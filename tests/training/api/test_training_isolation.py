"""Projects and auth: registry and training in one server with auth on (as deployed behind one
endpoint). The caller's token is passed on to the registry; another project's jobs, models and
datasets are NOT_FOUND; workers authenticate with their own token, not a bearer token."""

from __future__ import annotations

import pytest

from danlu_client import Client
from danlu_client.errors import NotFoundError
from danlu_kit.auth import TokenBook
from danlu_kit.server import ServerOptions
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from danlu_training.adapters.launchers import LocalProcessLauncher
from danlu_training.core.records import JobState
from danlu_training.service import build_training
from danlu_training.settings import TrainingSettings
from tests.fixtures.servers import ServerThread
from tests.fixtures.training import (
    FAKE_WORKER,
    TrainingApi,
    make_spec,
    push_inputs,
    training_environ,
)

TOKENS = {"token-a": "alpha", "token-b": "beta"}


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    registry = RegistrySettings.from_env({"DANLU_REGISTRY_DATA_DIR": str(data)})
    settings = TrainingSettings.from_env(training_environ(data, f"file://{data}/objects"))
    launcher = LocalProcessLauncher(data / "logs", gpus=0, worker=[str(FAKE_WORKER)])

    def components():
        training = build_training(
            settings, registry_target=lambda: training.own_target(), launcher=launcher
        )
        return [build_registry(registry), training]

    thread = ServerThread(components, ServerOptions(port=0, tokens=TokenBook.from_tokens(TOKENS)))
    thread.start()
    yield thread
    thread.stop()
    launcher.kill_all()


def test_projects_are_isolated(server, tiny_model_dir, tmp_path):
    with Client(server.target, token="token-a", project="alpha") as alpha:
        push_inputs(alpha, tiny_model_dir, tmp_path / "inputs")
    a = TrainingApi(server.target, token="token-a", project="alpha")
    job = a.create(job_id="secret")
    assert job.resolved_spec.base_model == "projects/alpha/models/tiny"
    # The worker API takes no bearer token: the job runs with auth on.
    assert a.wait(job.name).state == JobState.SUCCEEDED

    b = TrainingApi(server.target, token="token-b", project="beta")
    for call in (
        lambda: b.get(job.name),
        lambda: b.cancel(job.name),
        lambda: b.delete(job.name),
        lambda: b.events(job.name),
        lambda: b.checkpoints(job.name),
        lambda: list(b.watch(job.name)),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert b.list() == []
    with pytest.raises(NotFoundError):  # creating in alpha with beta's token
        TrainingApi(server.target, token="token-b", project="alpha").create()
    # alpha's model and data, named outright from beta's project, are not found either.
    with pytest.raises(NotFoundError) as info:
        b.create(
            make_spec(
                "base_model=projects/alpha/models/tiny",
                "datasets[0].dataset=projects/alpha/datasets/chat",
            )
        )
    assert [v.field for v in info.value.violations] == [
        "spec.base_model",
        "spec.datasets[0].dataset",
    ]
    # beta's own (missing) inputs: the registry answers with beta's rights.
    with pytest.raises(NotFoundError):
        b.create()
    assert [j.name for j in a.list()] == [job.name]

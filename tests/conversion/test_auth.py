"""With auth on, a job calls the registry with the token of the caller who created it (as the
training service does), and a caller cannot see another project's jobs."""

from __future__ import annotations

import pytest

from danlu.common.v1 import common_pb2 as S
from danlu_client import Client
from danlu_client.errors import DanluError
from danlu_conversion.service import build_conversion
from danlu_conversion.settings import ConversionSettings
from danlu_kit.auth import TokenBook
from danlu_kit.server import ServerOptions
from danlu_registry.service import build_registry
from danlu_registry.settings import RegistrySettings
from tests.conversion.helpers import make_adapter
from tests.fixtures.servers import ServerThread

TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def test_jobs_use_the_creators_token_and_projects_are_isolated(tmp_path, tiny_model_dir):
    holder: dict = {}

    def components():
        return [
            build_registry(
                RegistrySettings.from_env({"DANLU_REGISTRY_DATA_DIR": str(tmp_path / "r")})
            ),
            build_conversion(
                ConversionSettings.from_env({"DANLU_CONVERSION_DATA_DIR": str(tmp_path / "c")}),
                registry_target=lambda: holder["t"].target,
            ),
        ]

    server = holder["t"] = ServerThread(
        components, ServerOptions(port=0, tokens=TokenBook.from_tokens(TOKENS))
    ).start()
    try:
        with Client(server.target, token="alice-token", project="alice") as alice:
            base = alice.registry.push_model(tiny_model_dir, "tiny", kind="base")
            alice.registry.push_model(
                make_adapter(tiny_model_dir, tmp_path / "a"),
                "ad",
                kind="adapter",
                lineage={"parent_model": base.name},
                contract={"base_model_digest": base.digest},
            )
            job = alice.conversion.merge("ad", name="merged", skip_precision_report=True)
            done = alice.conversion.wait(job.name)
            assert done.state == S.JOB_STATE_SUCCEEDED, done.error.message
            assert alice.registry.get_model("merged").lineage.adapter_model.endswith("/ad")
        with Client(server.target, token="bob-token", project="bob") as bob:
            with pytest.raises(DanluError) as err:
                bob.conversion.get_job(job.name)
            assert err.value.code == "NOT_FOUND"
            assert list(bob.conversion.list_jobs()) == []
    finally:
        server.stop()

"""The conversion service over gRPC (in-process servers on port 0): jobs, events, failures."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

from danlu.common.v1 import common_pb2 as S
from danlu.conversion.v1 import conversion_job_pb2 as cj
from danlu.conversion.v1 import conversion_service_pb2 as pb
from danlu.conversion.v1 import conversion_service_pb2_grpc as pb_grpc
from danlu_client import Client
from danlu_conversion.service import build_conversion
from danlu_conversion.settings import ConversionSettings
from danlu_kit.objectstore import LocalObjectStore
from danlu_kit.server import ServerOptions
from tests.conversion.checkpoints import train
from tests.conversion.helpers import make_adapter
from tests.fixtures.registry import start_registry
from tests.fixtures.servers import ServerThread


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("conv")
    registry = start_registry(
        {"DANLU_REGISTRY_DATA_DIR": str(data / "registry"), "DANLU_REGISTRY_AUTH": "off"}
    )
    with Client(registry.target, project="p") as client:
        base = client.registry.push_model(tiny_model_dir, "tiny", kind="base")
        adapter_dir = make_adapter(tiny_model_dir, data / "adapter")
        client.registry.push_model(
            adapter_dir,
            "ad",
            kind="adapter",
            lineage={"parent_model": base.name},
            contract={"base_model_digest": base.digest},
        )
        client.registry.push_model(
            adapter_dir,
            "stranger",
            kind="adapter",
            lineage={"parent_model": base.name},
            contract={"base_model_digest": "sha256:" + "0" * 64},
        )
    settings = ConversionSettings.from_env(
        {
            "DANLU_CONVERSION_DATA_DIR": str(data / "conversion"),
            "DANLU_CONVERSION_OBJECT_STORE_URL": f"file://{data / 'objects'}",
            "DANLU_CONVERSION_REGISTRY_TARGET": registry.target,
            "DANLU_CONVERSION_AUTH": "off",
        }
    )
    conversion = ServerThread(lambda: [build_conversion(settings)], ServerOptions(port=0)).start()
    channel = grpc.insecure_channel(conversion.target)
    yield pb_grpc.ConversionServiceStub(channel), LocalObjectStore(data / "objects"), data
    channel.close()
    conversion.stop()
    registry.stop()


def _wait(stub, name):
    events = list(stub.WatchConversionJob(pb.WatchConversionJobRequest(name=name, follow=True)))
    return stub.GetConversionJob(pb.GetConversionJobRequest(name=name)), events


def test_merge_job_runs_to_success_with_events_and_report(servers):
    stub, _, _ = servers
    job = stub.CreateConversionJob(
        pb.CreateConversionJobRequest(
            parent="projects/p",
            conversion_job_id="m1",
            conversion_job=cj.ConversionJob(
                merge=cj.MergeSpec(adapter_model="projects/p/models/ad", model_id="merged")
            ),
        )
    )
    assert job.name == "projects/p/conversionJobs/m1"
    assert job.merge.dtype == cj.DTYPE_FP16 and job.merge.max_shard_size_bytes == 2 * 10**9
    done, events = _wait(stub, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error.message
    assert done.output_model == "projects/p/models/merged"
    assert done.precision_report.greedy_match_rate == 1.0
    assert 0 < done.precision_report.max_abs_logit_diff < 0.05
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "state_changed" and kinds[-1] == "state_changed"
    assert "progress" in kinds and "output_registered" in kinds
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert done.progress.completed == done.progress.total > 0
    listed = stub.ListConversionJobs(pb.ListConversionJobsRequest(parent="projects/p"))
    assert job.name in [j.name for j in listed.conversion_jobs]


def test_adapter_of_another_base_fails_the_job_with_failed_precondition(servers):
    stub, _, _ = servers
    job = stub.CreateConversionJob(
        pb.CreateConversionJobRequest(
            parent="projects/p",
            conversion_job=cj.ConversionJob(
                merge=cj.MergeSpec(adapter_model="projects/p/models/stranger", model_id="never")
            ),
        )
    )
    done, _ = _wait(stub, job.name)
    assert done.state == S.JOB_STATE_FAILED
    assert done.error.code == code_pb2.FAILED_PRECONDITION
    assert "BASE_MODEL_MISMATCH" in str(done.error.details[0])
    assert not done.output_model


def test_bad_requests_are_invalid_argument(servers):
    stub, _, _ = servers
    for job in (
        cj.ConversionJob(),
        cj.ConversionJob(merge=cj.MergeSpec(model_id="x")),
        cj.ConversionJob(
            convert_checkpoint=cj.ConvertCheckpointSpec(checkpoint="nope", model_id="x")
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateConversionJob(
                pb.CreateConversionJobRequest(parent="projects/p", conversion_job=job)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.GetConversionJob(pb.GetConversionJobRequest(name="projects/p/conversionJobs/none"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_convert_job_registers_the_checkpoint(servers, tiny_model_dir):
    stub, store, data = servers
    run = train(store, tiny_model_dir, data / "cache", job="projects/p/trainingJobs/t1")
    job = stub.CreateConversionJob(
        pb.CreateConversionJobRequest(
            parent="projects/p",
            conversion_job=cj.ConversionJob(
                convert_checkpoint=cj.ConvertCheckpointSpec(
                    checkpoint=run.checkpoints[0].name, model_id="t1-step1"
                )
            ),
        )
    )
    done, _ = _wait(stub, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error.message
    assert done.output_model == "projects/p/models/t1-step1"

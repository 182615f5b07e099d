"""TrainingService over real gRPC with real worker processes (the fake worker): create, run,
read, list, checkpoints and their keep policy, delete, built-in configs, bad requests."""

from __future__ import annotations

import json

import pytest

from danlu.training.v1 import training_event_pb2 as ev
from danlu.training.v1 import training_service_pb2 as pb
from danlu_client import Client
from danlu_client.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from danlu_training.core.records import JobState
from tests.fixtures.training import kinds_of, make_spec, states_of


def test_job_runs_to_success_with_numbered_events(api, training):
    job = api.create(job_id="first", display_name="first run", labels={"team": "nlp"})
    assert job.name == "projects/default/trainingJobs/first"
    assert job.state == JobState.QUEUED and job.attempt == 0
    assert job.resolved_spec.base_model == "projects/default/models/tiny"
    assert "/versions/" in job.resolved_spec.datasets[0].dataset  # pinned
    assert job.base_model_digest.startswith("sha256:")
    assert job.progress.total == 6

    done = api.wait(job.name)
    assert done.state == JobState.SUCCEEDED, training.worker_log(job.name)
    assert done.attempt == 1 and not done.HasField("error")
    assert (done.progress.completed, done.progress.total) == (6, 6)
    assert done.latest_metrics.step == 6
    assert done.start_time.seconds and done.end_time.seconds
    assert done.labels == {"team": "nlp"} and done.display_name == "first run"

    events = api.events(job.name)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states_of(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert kinds_of(events)[-1] == "state_changed"  # the terminal event is the last one
    steps = [e.metrics.step for e in events if e.WhichOneof("payload") == "metrics"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(e.attempt == 1 for e in events[1:])
    # Filters and pages walk the same log.
    committed = api.events(job.name, types=[ev.TRAINING_EVENT_TYPE_CHECKPOINT_COMMITTED])
    assert [e.checkpoint_committed.step for e in committed] == [2, 4, 6]
    assert api.events(job.name, page_size=3) == events


def test_keep_policy_keeps_newest_and_best(api, start_training):
    training = start_training(worker_env={"FAKE_LOSSES": "0.9,0.3,0.7,0.8"})
    api = training.api()
    spec = make_spec("optimization.max_steps=8", "checkpoint.keep=1")
    job = api.wait(api.create(spec).name)
    assert job.state == JobState.SUCCEEDED
    by_step = {c.step: c for c in api.checkpoints(job.name)}
    assert sorted(by_step) == [2, 4, 6, 8]  # records stay when files go
    assert {s for s, c in by_step.items() if c.kept} == {4, 8}  # the newest + the best
    assert [s for s, c in by_step.items() if c.is_best] == [4]
    assert job.best_checkpoint == by_step[4].name
    deleted = [
        e.checkpoint_deleted.checkpoint
        for e in api.events(job.name)
        if e.WhichOneof("payload") == "checkpoint_deleted"
    ]
    assert deleted == [by_step[2].name, by_step[6].name]
    store = training.component.store
    stored = {o.key.split("/checkpoints/")[1].split("/")[0] for o in store.list(f"{job.name}/")}
    assert stored == {"step-4", "step-8"}
    assert by_step[8].manifest.key.endswith("step-8/manifest.json") and by_step[8].size_bytes > 0
    one = api.call("GetCheckpoint", pb.GetCheckpointRequest(name=by_step[4].name))
    assert one.is_best and one.train_loss == pytest.approx(0.3)


def test_list_newest_first_with_pages_and_state_filter(start_training):
    api = start_training(max_concurrent_jobs="3").api()
    names = [
        api.create(make_spec("optimization.max_steps=1"), job_id=f"j{i}").name for i in range(3)
    ]
    for name in names:
        api.wait(name)
    assert [j.name for j in api.list(page_size=2)] == names[::-1]
    assert len(api.list(state=JobState.SUCCEEDED)) == 3
    assert api.list(state=JobState.RUNNING) == []


def test_create_is_idempotent_by_request_id(api):
    first = api.create(request_id="req-1")
    again = api.create(request_id="req-1")
    assert again.name == first.name
    assert [j.name for j in api.list()] == [first.name]


def test_validate_only_resolves_without_creating(api):
    job = api.create(make_spec("optimization.learning_rate=0.001"), validate_only=True)
    assert job.resolved_spec.optimization.learning_rate == pytest.approx(0.001)
    assert job.resolved_spec.optimization.HasField("seed")
    assert api.list() == []


BAD_SPECS = {
    "spec.optimization.learning_rate": lambda s: setattr(s.optimization, "learning_rate", -1.0),
    "spec.checkpoint.keep": lambda s: setattr(s.checkpoint, "keep", -5),
    "spec.base_model": lambda s: setattr(s, "base_model", "Not A Name"),
    "spec.data.max_length": lambda s: setattr(s.data, "max_length", 100_000),
}


@pytest.mark.parametrize("field", BAD_SPECS)
def test_bad_spec_names_the_field(api, field):
    spec = make_spec()
    BAD_SPECS[field](spec)
    with pytest.raises(InvalidArgumentError) as info:
        api.create(spec)
    assert info.value.reason == "SPEC_INVALID"
    assert field in [v.field for v in info.value.violations]
    assert api.list() == []


def test_unknown_inputs_are_not_found_naming_the_field(api):
    spec = make_spec("datasets[0].dataset=nope")
    with pytest.raises(NotFoundError) as info:
        api.create(spec)
    assert [v.field for v in info.value.violations] == ["spec.datasets[0].dataset"]
    assert "spec.datasets[0].dataset" in info.value.message
    with pytest.raises(NotFoundError) as info:
        api.create(make_spec("base_model=missing", "datasets[0].dataset=nope"))
    assert [v.field for v in info.value.violations] == [
        "spec.base_model",
        "spec.datasets[0].dataset",
    ]


def test_task_mismatch_and_missing_spec(api):
    with pytest.raises(InvalidArgumentError) as info:
        api.create(make_spec("datasets[0].dataset=corpus", "task=sft"))
    assert "spec.datasets[0]" in [v.field for v in info.value.violations]
    with pytest.raises(InvalidArgumentError) as info:
        api.call(
            "CreateTrainingJob",
            pb.CreateTrainingJobRequest(parent="projects/default", training_job={}),
        )
    assert info.value.violations[0].field == "training_job.spec"


def test_duplicate_and_invalid_ids(api):
    api.create(job_id="same")
    with pytest.raises(AlreadyExistsError):
        api.create(job_id="same")
    with pytest.raises(InvalidArgumentError):
        api.create(job_id="Bad/Id")
    with pytest.raises(InvalidArgumentError) as info:
        api.create(labels={"Team": "x"})
    assert info.value.violations[0].field == "training_job.labels[Team]"
    with pytest.raises(NotFoundError):
        api.get("missing")


def test_delete_releases_checkpoints_and_references(api, training, training_registry):
    with Client(training_registry.target) as registry:

        def held() -> tuple[int, int]:
            return (
                registry.registry.get_model("tiny").reference_count,
                registry.registry.get_dataset_version("chat").reference_count,
            )

        before = held()
        job = api.create()
        assert held() == (before[0] + 1, before[1] + 1)
        with pytest.raises(FailedPreconditionError) as info:
            api.delete(job.name)  # still queued or running
        assert info.value.reason == "JOB_NOT_FINISHED"
        api.wait(job.name)
        store = training.component.store
        assert list(store.list(f"{job.name}/"))
        api.delete(job.name)
        assert list(store.list(f"{job.name}/")) == []
        assert held() == before
    with pytest.raises(NotFoundError):
        api.get(job.name)


def test_builtin_configs(api):
    listed = api.call("ListTrainingConfigs", pb.ListTrainingConfigsRequest(pattern="qlora"))
    names = [c.name for c in listed.training_configs]
    assert names and all("qlora" in n and n.startswith("trainingConfigs/") for n in names)
    one = api.call("GetTrainingConfig", pb.GetTrainingConfigRequest(name=names[0]))
    assert one.yaml and one.spec.WhichOneof("method") == "qlora"
    paged = api.call("ListTrainingConfigs", pb.ListTrainingConfigsRequest(page_size=1))
    assert len(paged.training_configs) == 1 and paged.next_page_token
    with pytest.raises(NotFoundError):
        api.call("GetTrainingConfig", pb.GetTrainingConfigRequest(name="trainingConfigs/nope"))


def test_an_adapter_is_no_base_model(api, training_registry, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    save_file(
        {"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((4, 64), np.float32)},
        str(adapter / "adapter_model.safetensors"),
    )
    with Client(training_registry.target) as client:
        client.registry.push_model(adapter, "an-adapter")
    with pytest.raises(FailedPreconditionError) as info:
        api.create(make_spec("base_model=an-adapter"))
    assert info.value.reason == "MODEL_IS_ADAPTER"
    assert info.value.violations[0].field == "spec.base_model"

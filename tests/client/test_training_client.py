"""The training SDK without a training service: YAML -> TrainingJobSpec, --set, --deepspeed,
names, and `watch` reconnecting through a fake server that drops the stream."""

from __future__ import annotations

import json
import threading
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from google.rpc import status_pb2

from danlu.common.v1 import common_pb2
from danlu.training.v1 import checkpoint_pb2 as tj_ck
from danlu.training.v1 import training_event_pb2 as ev
from danlu.training.v1 import training_job_pb2 as tj
from danlu.training.v1 import training_service_pb2 as pb
from danlu.training.v1 import training_service_pb2_grpc
from danlu_client import Client
from danlu_client.cli import main
from danlu_client.errors import InvalidArgumentError, NotFoundError, UnavailableError
from danlu_client.training import (
    apply_overrides,
    load_yaml,
    spec_from_dict,
    spec_from_yaml,
    spec_to_dict,
    spec_to_yaml,
)

CONFIG = """
base_model: tiny
datasets:
  - assistant
  - {dataset: alpaca@v1, weight: 2, max_samples: 100}
task: sft
method:
  qlora:
    lora: {r: 16, alpha: 32, target_modules: [q_proj, v_proj]}
    quant_type: nf4
    compute_dtype: bf16
    double_quant: false
data:
  max_length: 512
  validation_split: 0.1
  chat_template: chatml
optimization:
  max_steps: 30
  learning_rate: 2e-4        # YAML 1.1 reads this as a string; it still becomes a double
  lr_scheduler: cosine
  precision: bf16
  seed: 7
deepspeed: zero2
evaluation:
  prompts: [请介绍一下你自己]
  every_n_steps: 10
checkpoint: {every_n_steps: 10, keep: -1}
"""


def violations(exc: pytest.ExceptionInfo) -> dict[str, str]:
    assert exc.value.reason == "SPEC_INVALID" and exc.value.code == "INVALID_ARGUMENT"
    return {v.field: v.description for v in exc.value.violations}


# -- YAML -> proto --------------------------------------------------------------------------


def test_yaml_to_spec_enums_datasets_and_tagged_method():
    spec = spec_from_yaml(CONFIG)
    assert spec.base_model == "tiny"
    assert [d.dataset for d in spec.datasets] == ["assistant", "alpaca@v1"]
    assert spec.datasets[1].weight == 2 and spec.datasets[1].max_samples == 100
    assert spec.task == tj.TRAINING_TASK_SFT
    assert spec.WhichOneof("method") == "qlora"
    assert spec.qlora.lora.r == 16 and list(spec.qlora.lora.target_modules) == ["q_proj", "v_proj"]
    assert spec.qlora.quant_type == tj.QUANT_TYPE_NF4
    assert spec.qlora.compute_dtype == tj.PRECISION_BF16
    assert spec.qlora.HasField("double_quant") and spec.qlora.double_quant is False
    assert spec.data.validation_split == pytest.approx(0.1)
    assert spec.optimization.max_steps == 30
    assert spec.optimization.learning_rate == pytest.approx(2e-4)
    assert spec.optimization.lr_scheduler == tj.LR_SCHEDULER_COSINE
    assert spec.optimization.precision == tj.PRECISION_BF16
    assert spec.deepspeed == tj.DEEPSPEED_STAGE_ZERO2
    assert list(spec.evaluation.prompts) == ["请介绍一下你自己"]
    assert spec.checkpoint.keep == -1


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("method: lora", "lora", tj.LoraMethod()),
        ("method: {full: }", "full", tj.FullMethod()),
    ],
)
def test_method_forms(text, field, value):
    spec = spec_from_yaml(text)
    assert spec.WhichOneof("method") == field and getattr(spec, field) == value


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("zero2_offload", tj.DEEPSPEED_STAGE_ZERO2_OFFLOAD),
        ("ZERO3", tj.DEEPSPEED_STAGE_ZERO3),
        ("zero3-offload", tj.DEEPSPEED_STAGE_ZERO3_OFFLOAD),
        ("deepspeed_zero1", tj.DEEPSPEED_STAGE_ZERO1),  # XTuner's spelling
        ("DEEPSPEED_STAGE_NONE", tj.DEEPSPEED_STAGE_NONE),
        ("3", tj.DEEPSPEED_STAGE_ZERO2),  # YAML int: the enum number
    ],
)
def test_enum_spellings(yaml_value, expected):
    assert spec_from_yaml(f"deepspeed: {yaml_value}").deepspeed == expected


def test_round_trip_through_the_yaml_shape():
    spec = spec_from_yaml(CONFIG)
    tree = spec_to_dict(spec)
    assert tree["method"] == {
        "qlora": {
            "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]},
            "quant_type": "nf4",
            "double_quant": False,
            "compute_dtype": "bf16",
        }
    }
    assert tree["datasets"][0] == "assistant" and tree["deepspeed"] == "zero2"
    assert spec_from_dict(tree) == spec
    assert spec_from_yaml(spec_to_yaml(spec)) == spec


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml("optimization: {learnin_rate: 1e-4}\nprecision: bf16\nfoo: 1")
    found = violations(exc)
    assert set(found) == {"optimization.learnin_rate", "precision", "foo"}
    assert "did you mean learning_rate" in found["optimization.learnin_rate"]
    assert "did you mean optimization.precision" in found["precision"]
    assert "optimization.learnin_rate" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("optimization: {precision: bf17}", "optimization.precision", "did you mean bf16"),
        ("task: finetune", "task", "one of sft, pretrain"),
        ("method: {lora: {}, qlora: {}}", "method.qlora", "exactly one of full, lora, qlora"),
        ("method: dora", "method", "unknown method 'dora': one of full, lora, qlora"),
        ("lora: {r: 4}", "lora", "goes under method: (method: {lora: ...})"),
        ("method: {}", "method", "choose one of full, lora, qlora"),
        ("method: {dora: {}}", "method.dora", "did you mean lora"),
        ("optimization: {duration: {epochs: 2}}", "optimization.duration", "unknown key"),
        ("optimization: {epochs: 2, max_steps: 5}", "optimization.max_steps", "alternatives"),
        ("optimization: {epochs: 1.5}", "optimization.epochs", "must be a whole number"),
        ("optimization: {learning_rate: abc}", "optimization.learning_rate", "must be a number"),
        ("base_model: 3", "base_model", "must be a string"),
        ("data: {packing: maybe}", "data.packing", "true or false"),
        ("datasets: [7]", "datasets[0]", "must be a dataset string or a mapping"),
        ("datasets: [a, {dataset: b, wieght: 2}]", "datasets[1].wieght", "did you mean weight"),
        ("optimization: [1]", "optimization", "mapping"),
    ],
)
def test_bad_values_are_named(text, field, words):
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml(text)
    found = violations(exc)
    assert field in found, found
    assert words in found[field]


def test_not_a_mapping_or_not_yaml():
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml("- a\n- b\n")
    assert "config" in violations(exc)
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml("base_model: [unclosed\n")
    assert "not valid YAML" in violations(exc)["config"]


# -- --set and --deepspeed ------------------------------------------------------------------


def test_overrides_set_yaml_scalars_on_the_tree():
    spec = spec_from_yaml(
        CONFIG,
        [
            "optimization.learning_rate=1e-5",
            "optimization.precision=fp32",
            "data.max_length=1024",
            "datasets[0].weight=3",  # the string shorthand becomes a mapping
            "datasets.1.max_samples=5",
            "method.qlora.lora.r=64",
            "evaluation.prompts=[hi, 你是谁]",
            "resources.gpus_per_node=2",  # a section that did not exist
            "data.chat_template=",  # empty: removed, back to the default
        ],
    )
    assert spec.optimization.learning_rate == pytest.approx(1e-5)
    assert spec.optimization.precision == tj.PRECISION_FP32
    assert spec.data.max_length == 1024 and spec.data.chat_template == ""
    assert spec.datasets[0].dataset == "assistant" and spec.datasets[0].weight == 3
    assert spec.datasets[1].max_samples == 5
    assert spec.qlora.lora.r == 64
    assert list(spec.evaluation.prompts) == ["hi", "你是谁"]
    assert spec.resources.gpus_per_node == 2


def test_overrides_switch_the_method_and_leave_the_input_alone():
    tree = load_yaml(CONFIG)
    changed = apply_overrides(tree, ["method=lora", "method.lora.r=4"])
    assert changed["method"] == {"lora": {"r": 4}}
    assert "qlora" in tree["method"]  # a copy was changed
    assert spec_from_dict(changed).lora.r == 4


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("nokey", "nokey", "expected KEY=VALUE"),
        ("method.lora.r=4", "method.lora.r", "--set method=lora first"),
        ("base_model.name=x", "base_model.name", "is a value, not a section"),
        ("datasets[9].weight=1", "datasets[9].weight", "only 2 entries"),
        ("optimization.seed=[1", "optimization.seed", "bad value"),
    ],
)
def test_bad_overrides_are_named(override, field, words):
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml(CONFIG, [override])
    found = violations(exc)
    assert field in found and words in found[field], found


def test_override_to_a_bad_value_is_reported_by_conversion():
    with pytest.raises(InvalidArgumentError) as exc:
        spec_from_yaml(CONFIG, ["optimization.precision=bf99"])
    assert "optimization.precision" in violations(exc)


def test_deepspeed_option_wins_over_the_file_and_overrides():
    spec = spec_from_yaml(CONFIG, ["deepspeed=zero3"], deepspeed="zero2_offload")
    assert spec.deepspeed == tj.DEEPSPEED_STAGE_ZERO2_OFFLOAD
    assert spec_from_yaml("base_model: m", deepspeed="none").deepspeed == tj.DEEPSPEED_STAGE_NONE


def test_create_job_needs_exactly_one_spec_form():
    with Client("127.0.0.1:1") as client, pytest.raises(TypeError):
        client.training.create_job()
    with Client("127.0.0.1:1") as client, pytest.raises(InvalidArgumentError):
        client.training.create_job("optimization: {learnin_rate: 1}")  # fails before any call


# -- the same shape as the service's parser ---------------------------------------------------

SERVER_CASES = [
    "optimization: {learnin_rate: 1}",
    "precision: bf16",
    "method: {lora: {}, qlora: {}}",
    "method: dora",
    "lora: {}",
    "task: finetune",
    "optimization: {epochs: 2, max_steps: 3}",
    "data: {packing: 3}",
    "datasets: [a, {dataset: b, wieght: 2}]",
    "evaluation: {prompts: [1, hi]}",
]
SERVER_OVERRIDES = [
    ["optimization.learning_rate=1e-4", "datasets[0].weight=2"],
    ["method=full"],
    ["method.lora.r=4", "data.chat_template=", "deepspeed=zero2"],
    ["evaluation.prompts=[a, b]", "datasets.0.max_samples=3"],
    ["data.validation_dataset=val"],
]


def outcome(convert, *args):
    """The spec, or the fields an error names (the SDK's and the service's errors alike)."""
    try:
        return convert(*args)
    except Exception as e:
        if not hasattr(e, "violations"):
            raise
        return {v.field for v in e.violations}


def test_conversion_matches_the_service_parser_on_every_built_in_config():
    """The SDK's generic conversion and the service's parser agree: every shipped config, every
    --set, and the field each error names."""
    server = pytest.importorskip("danlu_training.core.spec")
    configs = pytest.importorskip("danlu_training.core.configs")
    built_in = configs.list_configs()
    assert built_in
    for config in built_in:
        expected = server.parse_spec_yaml(config.yaml_text)
        assert spec_from_yaml(config.yaml_text) == expected, config.name
        assert spec_to_yaml(expected) == server.spec_to_yaml(expected), config.name
        for overrides in SERVER_OVERRIDES:
            ours = outcome(spec_from_yaml, config.yaml_text, overrides)
            theirs = outcome(server.apply_overrides, expected, overrides)
            assert ours == theirs, (config.name, overrides)
    for text in SERVER_CASES:
        theirs = outcome(server.parse_spec_yaml, text)
        assert isinstance(theirs, set) and outcome(spec_from_yaml, text) == theirs, text


# -- names ----------------------------------------------------------------------------------


def test_short_names():
    with Client("127.0.0.1:1", project="p") as client:
        t = client.training
        assert t.job_name("job-1") == "projects/p/trainingJobs/job-1"
        assert t.job_name("projects/q/trainingJobs/j") == "projects/q/trainingJobs/j"
        full = "projects/p/trainingJobs/job-1/checkpoints/step-30"
        assert t.checkpoint_name("job-1@step-30") == full
        assert t.checkpoint_name("job-1@30") == full
        assert t.checkpoint_name("step-30", job="job-1") == full
        assert t.checkpoint_name(full) == full
        assert t.config_name("tiny_lora_cpu") == "trainingConfigs/tiny_lora_cpu"
        with pytest.raises(InvalidArgumentError):
            t.checkpoint_name("step-30")


# -- watch reconnects -----------------------------------------------------------------------


class FlakyTraining(training_service_pb2_grpc.TrainingServiceServicer):
    """Sends events 1..total; drops the stream (UNAVAILABLE) after every `drop_every` events."""

    def __init__(self, total: int = 10, drop_every: int = 3, failures_after_drop: int = 0):
        self.total, self.drop_every = total, drop_every
        self.failures_after_drop = failures_after_drop
        self.requests: list[int] = []
        self._pending_failures = 0
        self._lock = threading.Lock()

    def WatchTrainingJob(self, request, context):
        if request.name.endswith("/missing"):
            context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        with self._lock:
            self.requests.append(request.after_sequence)
            if self._pending_failures:
                self._pending_failures -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "still restarting")
        for sent, seq in enumerate(range(request.after_sequence + 1, self.total + 1)):
            if sent == self.drop_every:
                with self._lock:
                    self._pending_failures = self.failures_after_drop
                context.abort(grpc.StatusCode.UNAVAILABLE, "service restarting")
            yield ev.TrainingEvent(
                sequence=seq,
                state_changed=ev.StateChanged(state=common_pb2.JOB_STATE_RUNNING),
            )


@pytest.fixture
def flaky():
    def start(servicer):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        client = Client(f"127.0.0.1:{port}")
        clients.append(client)
        client.training._sleep = sleeps.append
        return client

    servers, clients, sleeps = [], [], []
    start.sleeps = sleeps
    yield start
    for c in clients:
        c.close()
    for s in servers:
        s.stop(0)


def test_watch_reconnects_from_the_last_sequence(flaky):
    servicer = FlakyTraining(total=10, drop_every=3, failures_after_drop=1)
    client = flaky(servicer)
    seen = [e.sequence for e in client.training.watch("job-1")]
    assert seen == list(range(1, 11))  # nothing missed, nothing repeated
    # each drop: one failed reconnect (still restarting), then a resume from the last sequence
    assert servicer.requests == [0, 3, 3, 6, 6, 9, 9]
    assert flaky.sleeps[:2] == [0.5, 1.0]  # backoff doubles while the service is down...
    assert flaky.sleeps[2] == 0.5  # ...and starts over once an event came through


def test_watch_resumes_after_a_given_sequence(flaky):
    servicer = FlakyTraining(total=5, drop_every=100)
    client = flaky(servicer)
    assert [e.sequence for e in client.training.watch("job-1", after_sequence=3)] == [4, 5]


def test_watch_gives_up_after_bounded_retries(flaky):
    servicer = FlakyTraining(total=10, drop_every=2, failures_after_drop=100)
    client = flaky(servicer)
    client.training.reconnect_attempts = 3
    seen = []
    with pytest.raises(UnavailableError):
        for e in client.training.watch("job-1"):
            seen.append(e.sequence)
    assert seen == [1, 2]
    assert flaky.sleeps == [0.5, 1.0, 2.0]


def test_watch_does_not_retry_other_errors(flaky):
    client = flaky(FlakyTraining())
    with pytest.raises(NotFoundError):
        list(client.training.watch("missing"))
    assert flaky.sleeps == []


# -- the CLI's rendering against a scripted service ------------------------------------------


def _job(name: str, state: int, **kwargs) -> tj.TrainingJob:
    return tj.TrainingJob(
        name=f"projects/default/trainingJobs/{name}",
        state=state,
        spec=tj.TrainingJobSpec(base_model="tiny"),
        resolved_spec=spec_from_yaml(CONFIG, ["base_model=projects/default/models/tiny"]),
        progress=common_pb2.JobProgress(completed=4, total=4),
        **kwargs,
    )


def _answers(*pairs):
    return [tj_ck.EvaluationAnswer(prompt=p, answer=a) for p, a in pairs]


QUESTION = "请介绍一下你自己"


class ScriptedTraining(training_service_pb2_grpc.TrainingServiceServicer):
    """A job `ok` that succeeds and a job `bad` that fails, with events and checkpoints."""

    def __init__(self):
        self.created: list[pb.CreateTrainingJobRequest] = []
        self.jobs = {
            "ok": _job("ok", common_pb2.JOB_STATE_SUCCEEDED, best_checkpoint="x/step-2"),
            "bad": _job(
                "bad",
                common_pb2.JOB_STATE_FAILED,
                error=status_pb2.Status(code=13, message="CUDA out of memory"),
            ),
        }

    def _events(self, name):
        running = common_pb2.JOB_STATE_RUNNING
        events = [
            ev.TrainingEvent(
                state_changed=ev.StateChanged(
                    previous_state=common_pb2.JOB_STATE_QUEUED, state=running
                )
            ),
            ev.TrainingEvent(log=ev.LogLine(level=ev.LOG_LEVEL_INFO, message="loading tiny")),
            ev.TrainingEvent(metrics=tj.TrainingMetrics(step=1, loss=2.5, learning_rate=1e-4)),
            ev.TrainingEvent(
                evaluation=ev.EvaluationAnswers(step=2, answers=_answers((QUESTION, "我是丹炉")))
            ),
            ev.TrainingEvent(
                checkpoint_committed=ev.CheckpointCommitted(
                    checkpoint=f"{name}/checkpoints/step-2", step=2, is_best=True
                )
            ),
            ev.TrainingEvent(resumed=ev.Resumed(attempt=2, from_step=2, reason="worker lost")),
            ev.TrainingEvent(log=ev.LogLine(level=ev.LOG_LEVEL_WARNING, message="slow disk")),
        ]
        final = self.jobs[name.rsplit("/", 1)[-1]].state
        events.append(
            ev.TrainingEvent(
                state_changed=ev.StateChanged(previous_state=running, state=final, message="done")
            )
        )
        for i, e in enumerate(events, 1):
            e.sequence = i
        return events

    def _get(self, name, context):
        job = self.jobs.get(name.rsplit("/", 1)[-1])
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{name} not found")
        return job

    def CreateTrainingJob(self, request, context):
        self.created.append(request)
        job = tj.TrainingJob()
        job.CopyFrom(self.jobs[request.training_job_id or "ok"])
        job.spec.CopyFrom(request.training_job.spec)
        job.state = common_pb2.JOB_STATE_QUEUED
        return job

    def GetTrainingJob(self, request, context):
        return self._get(request.name, context)

    def ListTrainingJobs(self, request, context):
        return pb.ListTrainingJobsResponse(training_jobs=list(self.jobs.values()))

    def WatchTrainingJob(self, request, context):
        self._get(request.name, context)
        types = set(request.event_types)
        for e in self._events(request.name):
            kind = ev.TrainingEventType.Value(
                f"TRAINING_EVENT_TYPE_{e.WhichOneof('payload').upper()}"
            )
            if e.sequence > request.after_sequence and (not types or kind in types):
                yield e

    def ListTrainingJobEvents(self, request, context):
        events = list(
            self.WatchTrainingJob(
                pb.WatchTrainingJobRequest(name=request.parent, event_types=request.event_types),
                context,
            )
        )
        return pb.ListTrainingJobEventsResponse(events=events)

    def ListCheckpoints(self, request, context):
        self._get(request.parent, context)
        long_answer = "我是丹炉的小助手。" * 20
        return pb.ListCheckpointsResponse(
            checkpoints=[
                tj_ck.Checkpoint(
                    name=f"{request.parent}/checkpoints/step-{step}",
                    step=step,
                    train_loss=loss,
                    answers=_answers((QUESTION, answer), ("hi", f"hello {step}")),
                    is_best=step == 2,
                    kept=step != 1,
                    size_bytes=3 * 1024 * 1024,
                    **({"validation_loss": loss + 0.1} if step == 2 else {}),
                )
                for step, loss, answer in [
                    (1, 2.0, "我"),
                    (2, 1.0, long_answer),
                    (3, 0.5, "我是我是"),
                ]
            ]
        )

    def ListTrainingConfigs(self, request, context):
        configs = [
            tj.TrainingConfig(name="trainingConfigs/tiny_lora_cpu", description="tiny, CPU"),
            tj.TrainingConfig(name="trainingConfigs/qwen2_qlora", description="big"),
        ]
        return pb.ListTrainingConfigsResponse(
            training_configs=[c for c in configs if request.pattern in c.name]
        )

    def GetTrainingConfig(self, request, context):
        if request.name != "trainingConfigs/tiny_lora_cpu":
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        return tj.TrainingConfig(name=request.name, yaml="# tiny\nbase_model: tiny\n")


@pytest.fixture
def scripted(flaky):
    servicer = ScriptedTraining()
    client = flaky(servicer)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["--target", client.target, *args], catch_exceptions=False)
        assert result.exit_code == code, result.output + result.stderr
        return result

    run.servicer = servicer
    return run


def test_cli_train_follow_renders_events_and_exits_by_state(scripted, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    ok = scripted("train", str(config), "--follow", "--set", "data.max_length=64", "--name", "ok")
    assert f"step 2: {QUESTION} → 我是丹炉" in ok.stdout
    assert "checkpoint step-2 committed (best so far)" in ok.stdout
    assert "resumed: attempt 2 from step 2 (worker lost)" in ok.stdout
    assert "QUEUED → RUNNING" in ok.stdout and "ok SUCCEEDED" in ok.stdout
    assert "[WARNING] slow disk" in ok.stderr and "loading tiny" not in ok.stderr
    assert "step 1/4 loss 2.5000" in ok.stderr  # metrics line (no terminal: no bar)
    request = scripted.servicer.created[-1]
    assert request.training_job.spec.data.max_length == 64
    assert request.training_job_id == "ok"

    bad = scripted("train", str(config), "--follow", "--name", "bad", code=1)
    assert "job bad FAILED: CUDA out of memory" in bad.stderr

    as_json = scripted("-o", "json", "train", str(config), "--follow", "--name", "bad", code=1)
    assert json.loads(as_json.stdout)["state"] == "JOB_STATE_FAILED"


def test_cli_train_from_a_built_in_config_and_usage_errors(scripted, tmp_path):
    created = scripted("train", "tiny_lora_cpu", "--deepspeed", "zero2")
    assert "projects/default/trainingJobs/ok QUEUED" in created.stdout
    request = scripted.servicer.created[-1]
    assert request.training_job.config_name == "trainingConfigs/tiny_lora_cpu"
    assert request.training_job.spec.deepspeed == tj.DEEPSPEED_STAGE_ZERO2
    missing = scripted("train", "nope", code=1)
    assert "NOT_FOUND" in missing.stderr
    assert scripted("train", str(tmp_path / "x.yaml"), code=2).exit_code == 2
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    assert "KEY=VALUE" in scripted("train", str(config), "--set", "novalue", code=2).stderr
    bad = scripted("train", str(config), "--set", "optimization.learnin_rate=1", code=1)
    assert "SPEC_INVALID" in bad.stderr and "optimization.learnin_rate" in bad.stderr
    valid = scripted("train", str(config), "--validate-only")
    assert "resolved spec" in valid.stdout and "qlora:" in valid.stdout
    assert scripted.servicer.created[-1].validate_only


def test_create_job_from_a_spec_with_overrides(scripted, flaky):
    client = flaky(scripted.servicer)
    job = client.training.create_job(
        spec=spec_from_yaml(CONFIG),
        overrides=["data.max_length=64", "method.qlora.lora.r=4"],
        deepspeed="zero3",
        job_id="ok",
        display_name="first",
        labels={"team": "alchemy"},
        validate_only=True,
    )
    request = scripted.servicer.created[-1]
    assert request.parent == "projects/default" and request.validate_only
    assert request.training_job.display_name == "first"
    assert dict(request.training_job.labels) == {"team": "alchemy"}
    spec = request.training_job.spec
    assert spec.data.max_length == 64 and spec.qlora.lora.r == 4
    assert spec.deepspeed == tj.DEEPSPEED_STAGE_ZERO3
    assert job.spec == spec


def test_cli_jobs_commands(scripted):
    listed = scripted("jobs", "ls").stdout
    assert "ok" in listed and "FAILED" in listed
    shown = scripted("jobs", "show", "bad").stdout
    assert "FAILED" in shown and "CUDA out of memory" in shown and "quant_type: nf4" in shown
    logs = scripted("jobs", "logs", "ok").stdout
    assert "INFO loading tiny" in logs and "RUNNING → SUCCEEDED: done" in logs
    assert "我是丹炉" not in logs  # answers are not log lines
    followed = scripted("-o", "json", "jobs", "logs", "ok", "-f").stdout.splitlines()
    assert len(followed) == 5 and json.loads(followed[0])["sequence"] == "1"
    checkpoints = scripted("jobs", "checkpoints", "ok").stdout
    assert "step-2" in checkpoints and "★" in checkpoints and "3.0 MiB" in checkpoints
    assert "1.1000" in checkpoints  # validation loss
    assert "SUCCEEDED" in scripted("jobs", "watch", "ok").stdout
    scripted("jobs", "watch", "bad", code=1)


def test_cli_jobs_evals_side_by_side(scripted):
    table = scripted("jobs", "evals", "ok", "--width", "12").stdout
    assert "step 2 ★" in table and "step 3" in table
    assert "我是我是" in table and "hello 3" in table
    assert "…" in table  # the long answer is clipped
    doc = json.loads(scripted("-o", "json", "jobs", "evals", "ok").stdout)
    assert doc["steps"] == [1, 2, 3] and doc["best_step"] == 2
    row = next(r for r in doc["prompts"] if r["prompt"] == QUESTION)
    assert row["answers"]["2"] == "我是丹炉的小助手。" * 20  # full answers in JSON
    assert row["answers"]["3"] == "我是我是"
    everything = json.loads(scripted("-o", "json", "jobs", "evals", "ok", "--all-steps").stdout)
    assert everything["steps"] == [1, 2, 3]
    assert next(r for r in everything["prompts"] if r["prompt"] == QUESTION)["answers"]["2"] == (
        "我是丹炉"  # the event's answer at step 2 (a later attempt) wins
    )


def test_cli_configs(scripted, tmp_path):
    listed = scripted("configs", "ls", "-p", "tiny").stdout
    assert "tiny_lora_cpu" in listed and "qwen2_qlora" not in listed
    copied = scripted("configs", "copy", "tiny_lora_cpu", str(tmp_path / "cfg"))
    target = tmp_path / "cfg" / "tiny_lora_cpu.yaml"
    assert target.read_text() == "# tiny\nbase_model: tiny\n" and "wrote" in copied.stdout
    refused = scripted("configs", "copy", "tiny_lora_cpu", str(tmp_path / "cfg"), code=1)
    assert "--force" in refused.stderr
    scripted("configs", "copy", "tiny_lora_cpu", str(tmp_path / "cfg"), "--force")
    assert scripted("configs", "show", "tiny_lora_cpu").stdout.startswith("# tiny")

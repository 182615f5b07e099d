"""run_assignment end to end on CPU: LoRA learns the identity, checkpoints publish and resume
exactly, cancels stop, the keep policy prunes, object-store failures are retried."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import load_file
from worker_helpers import IDENTITY_ANSWER, JOB, base_spec, identity_records, mixed_records

from danlu.training.v1 import training_job_pb2 as tj
from danlu_kit.errors import Cancelled, Unavailable
from danlu_kit.objectstore.artifacts import read_manifest
from danlu_worker.checkpoints import RetryPolicy
from danlu_worker.loops._shared import GC_EVERY_STEPS, StepScalars, collected_between_steps
from danlu_worker.outcome import status_for_exception
from danlu_worker.reporter import RecordingReporter
from danlu_worker.runner import run_assignment

FAST_RETRY = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.02)


def _run(assignment, store, cache_dir, reporter=None, **kwargs) -> RecordingReporter:
    reporter = reporter or RecordingReporter()
    run_assignment(
        assignment,
        store=store,
        reporter=reporter,
        cache_dir=cache_dir,
        checkpoint_retry=FAST_RETRY,
        **kwargs,
    )
    return reporter


def test_lora_learns_the_identity_answer(make_assignment, store, cache_dir) -> None:
    """The product's promise: 'please introduce yourself' → the identity sentence."""
    spec = base_spec(max_steps=30, learning_rate=1e-2)
    spec.checkpoint.every_n_steps = 15
    reporter = _run(make_assignment(identity_records(), spec=spec), store, cache_dir)

    losses = [m.loss for m in reporter.metric_events]
    assert [m.step for m in reporter.metric_events] == list(range(1, 31))
    assert losses[-1] < losses[0] - 1.0
    step, answers = reporter.evaluations[-1]
    assert step == 30
    assert answers[0].answer == IDENTITY_ANSWER
    assert reporter.metric_events[-1].tokens_per_second > 0
    assert reporter.metric_events[-1].eta.ToTimedelta().total_seconds() == 0

    # Two checkpoints, committed with a manifest that says what they are.
    assert [c.step for c in reporter.checkpoints] == [15, 30]
    final = reporter.checkpoints[-1]
    assert final.name == f"{JOB}/checkpoints/step-30"
    assert final.answers[0].answer == IDENTITY_ANSWER
    manifest = read_manifest(store, final.name)
    assert manifest.digest == "sha256:" + final.manifest.sha256
    assert final.size_bytes == manifest.total_size_bytes
    files = {f.path for f in manifest.files}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pt",
        "trainer_state.json",
    } <= files
    extra = manifest.extra
    assert extra["step"] == 30 and extra["method"] == "lora" and extra["format"] == "peft_adapter"
    assert extra["answers"] == [{"prompt": answers[0].prompt, "answer": IDENTITY_ANSWER}]
    assert extra["data_position"]["epoch"] >= 1
    assert extra["spec_digest"].startswith("sha256:")
    assert extra["chat_template"] and extra["validation_loss"] is None
    assert manifest.lineage["training_job"] == JOB
    adapter = json.loads(store.get_bytes(f"{final.name}/adapter_config.json"))
    assert adapter["r"] == 8 and adapter["peft_type"] == "LORA"


def _adapter(store, checkpoint_name: str) -> dict[str, torch.Tensor]:
    data = store.get_bytes(f"{checkpoint_name}/adapter_model.safetensors")
    from safetensors.torch import load

    return load(data)


class _Crash(RuntimeError):
    pass


class _CrashAfter(RecordingReporter):
    """Dies (like kill -9) as soon as the step after ``step`` reports metrics."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.crash_step = step

    def metrics(self, metrics) -> None:
        super().metrics(metrics)
        if metrics.step > self.crash_step:
            raise _Crash()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resumed_run_ends_with_the_same_weights(make_assignment, store, cache_dir, method) -> None:
    spec = base_spec(max_steps=12, gradient_accumulation_steps=2, learning_rate=5e-3)
    spec.checkpoint.every_n_steps = 6
    spec.data.validation_split = 0.2
    if method == "full":
        spec.full.SetInParent()
    records = mixed_records()

    straight = _run(
        make_assignment(records, spec=spec, job="projects/p/trainingJobs/a"), store, cache_dir
    )

    job_b = "projects/p/trainingJobs/b"
    crashing = _CrashAfter(6)
    with pytest.raises(_Crash):
        _run(make_assignment(records, spec=spec, job=job_b), store, cache_dir, crashing)
    assert [c.step for c in crashing.checkpoints] == [6]
    resume = make_assignment(records, spec=spec, job=job_b)
    resume.resume_from.CopyFrom(crashing.checkpoints[0])
    resumed = _run(resume, store, cache_dir / "other-host", attempt=2)

    assert [m.step for m in resumed.metric_events] == list(range(7, 13))
    assert [m.loss for m in resumed.metric_events] == [m.loss for m in straight.metric_events[6:]]
    assert resumed.checkpoints[-1].validation_loss == straight.checkpoints[-1].validation_loss
    a, b = (f"projects/p/trainingJobs/{j}/checkpoints/step-12" for j in "ab")
    if method == "lora":
        ours, theirs = _adapter(store, a), _adapter(store, b)
    else:
        ours = load_file(_download(store, a, cache_dir / "a.safetensors"))
        theirs = load_file(_download(store, b, cache_dir / "b.safetensors"))
    assert ours.keys() == theirs.keys() and ours
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert any("resumed from step 6" in message for _, message in resumed.logs)


def _download(store, checkpoint: str, path: Path) -> Path:
    store.download_file(f"{checkpoint}/model.safetensors", path)
    return path


def test_cancel_stops_at_a_step_boundary_without_a_checkpoint(
    make_assignment, store, cache_dir
) -> None:
    spec = base_spec(max_steps=50)
    spec.checkpoint.every_n_steps = 2
    reporter = RecordingReporter(cancel_after_step=3)
    with pytest.raises(Cancelled) as caught:
        _run(make_assignment(spec=spec), store, cache_dir, reporter)
    assert [m.step for m in reporter.metric_events] == [1, 2, 3]
    assert [c.step for c in reporter.checkpoints] == [2]  # none after the cancel
    assert not list(store.list(f"{JOB}/checkpoints/step-4"))
    status = status_for_exception(caught.value)
    assert status.code == grpc.StatusCode.CANCELLED.value[0]


def test_keep_policy_deletions_remove_local_copies(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=8)
    spec.checkpoint.every_n_steps = 2
    spec.data.validation_split = 0.25
    reporter = RecordingReporter(keep=1, store=store)
    _run(make_assignment(mixed_records(), spec=spec), store, cache_dir, reporter)

    assert [c.step for c in reporter.checkpoints] == [2, 4, 6, 8]
    assert all(c.HasField("validation_loss") for c in reporter.checkpoints)
    assert all(m.HasField("validation_loss") for m in reporter.metric_events if m.step % 2 == 0)
    kept = {c.name for c in reporter.checkpoints} - set(reporter.deleted)
    assert reporter.deleted and f"{JOB}/checkpoints/step-8" in kept and len(kept) <= 2
    run_dir = cache_dir / "runs" / JOB.replace("/", "_")
    for checkpoint in reporter.checkpoints:
        local = run_dir / checkpoint.name.rsplit("/", 1)[-1]
        stored = store.exists(f"{checkpoint.name}/manifest.json")
        assert local.is_dir() == (checkpoint.name in kept) == stored
    assert any("keep policy deleted" in message for _, message in reporter.logs)


class _FlakyStore:
    """Delegates to a store; the first ``failures`` checkpoint uploads raise Unavailable."""

    def __init__(self, store, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.raised = 0

    def put(self, key, source, **kwargs):
        if "/checkpoints/" in key and self.raised < self.failures:
            self.raised += 1
            raise Unavailable(message="S3 is down", reason="OBJECT_STORE_UNAVAILABLE")
        return self._store.put(key, source, **kwargs)

    def put_file(self, key, path, **kwargs):
        with open(path, "rb") as f:
            return self.put(key, f, length=Path(path).stat().st_size)

    def put_bytes(self, key, data, **kwargs):
        import io

        return self.put(key, io.BytesIO(data), length=len(data), **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_checkpoint_upload_is_retried_when_the_store_fails(
    make_assignment, store, cache_dir
) -> None:
    flaky = _FlakyStore(store, failures=2)
    reporter = _run(make_assignment(spec=base_spec(max_steps=2)), flaky, cache_dir)
    assert flaky.raised == 2
    [checkpoint] = reporter.checkpoints
    manifest = read_manifest(store, checkpoint.name)
    assert {f.path for f in manifest.files} >= {"adapter_model.safetensors", "optimizer.pt"}


def test_a_checkpoint_that_cannot_be_uploaded_is_never_committed(
    make_assignment, store, cache_dir
) -> None:
    flaky = _FlakyStore(store, failures=100)
    reporter = RecordingReporter()
    with pytest.raises(Unavailable) as caught:
        _run(make_assignment(spec=base_spec(max_steps=2)), flaky, cache_dir, reporter)
    assert caught.value.reason == "CHECKPOINT_PUBLISH_FAILED"
    assert reporter.checkpoints == []
    assert not list(store.list(f"{JOB}/checkpoints/"))
    assert status_for_exception(caught.value).code == grpc.StatusCode.UNAVAILABLE.value[0]


def test_bad_data_fails_as_invalid_argument(make_assignment, store, cache_dir) -> None:
    spec = base_spec(max_steps=2)
    records = [{"text": "raw text cannot train an SFT task"}]
    with pytest.raises(Exception) as caught:
        _run(make_assignment(records, spec=spec), store, cache_dir)
    status = status_for_exception(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_pretraining_on_raw_text_puts_loss_on_every_token(
    make_assignment, store, cache_dir
) -> None:
    spec = base_spec(max_steps=3)
    spec.task = tj.TRAINING_TASK_PRETRAIN
    spec.data.packing = False
    spec.evaluation.Clear()
    records = [{"text": s} for s in ("The quick brown fox jumps over the lazy dog.",) * 8]
    reporter = _run(make_assignment(records, spec=spec), store, cache_dir)
    assert len(reporter.metric_events) == 3 and reporter.evaluations == []
    assert reporter.checkpoints[-1].step == 3


class _CancelDuringCheckpoint:
    """Delegates to a store; raises the reporter's cancel flag while the first checkpoint's
    files are being uploaded (before its manifest)."""

    def __init__(self, store, reporter: RecordingReporter) -> None:
        self._store = store
        self._reporter = reporter
        self.cancelled_mid_write = False

    def put(self, key, source, **kwargs):
        if "/checkpoints/" in key and not key.endswith("manifest.json"):
            self._reporter.request_cancel()
            self.cancelled_mid_write = True
        return self._store.put(key, source, **kwargs)

    def put_file(self, key, path, **kwargs):
        with open(path, "rb") as f:
            return self.put(key, f, length=Path(path).stat().st_size)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_cancel_during_a_checkpoint_write_never_leaves_half_a_checkpoint(
    make_assignment, store, cache_dir
) -> None:
    """The checkpoint being written when cancel arrives is either committed whole (manifest
    last) or absent; the worker stops right after it and reports CANCELLED."""
    spec = base_spec(max_steps=20)
    spec.checkpoint.every_n_steps = 2
    reporter = RecordingReporter()
    flaky = _CancelDuringCheckpoint(store, reporter)
    with pytest.raises(Cancelled):
        _run(make_assignment(spec=spec), flaky, cache_dir, reporter)
    assert flaky.cancelled_mid_write
    assert max(m.step for m in reporter.metric_events) <= 3, "stops at the next step boundary"
    prefixes = {o.key.rsplit("/", 1)[0] for o in store.list(f"{JOB}/checkpoints/")}
    for prefix in prefixes:
        manifest = read_manifest(store, prefix + "/")  # raises if a prefix has no manifest
        assert all(store.exists(manifest.key(f.path)) for f in manifest.files)
    assert {c.name for c in reporter.checkpoints} == prefixes


def test_step_scalars_keep_the_values_of_when_they_were_taken() -> None:
    """The loop reads a step's numbers one step later: later changes to the tensors they came
    from (an in-place update) must not reach them, and plain numbers pass through."""
    loss = torch.tensor(2.5)
    tokens = torch.tensor(16_777_217.0, dtype=torch.float64)  # not exact in FP32
    scalars = StepScalars(loss, 0.75, tokens)
    loss.add_(1.0)
    tokens.zero_()
    assert scalars.values() == [2.5, 0.75, 16_777_217.0]
    assert StepScalars(1.0, float("inf")).values() == [1.0, float("inf")]


def test_garbage_is_collected_between_steps_only() -> None:
    """Inside the step loop's block no automatic collection runs and what lived before is
    frozen out of collections; cyclic garbage made during the steps is collected every
    GC_EVERY_STEPS steps; afterwards the collector is as it was."""
    import gc
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    assert gc.isenabled()
    with collected_between_steps() as collect:
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        collect(GC_EVERY_STEPS - 1)
        assert gone() is not None  # not yet: no collection between due steps
        collect(GC_EVERY_STEPS)
        assert gone() is None
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        collect(GC_EVERY_STEPS + 1, settled=True)  # after evaluation or a checkpoint
        assert gone() is None
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0

"""Helpers of the worker tests: the identity data, a small spec, uploads to a local store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from danlu.common.v1 import common_pb2
from danlu.training.v1 import training_job_pb2 as tj
from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.objectstore import LocalObjectStore

IDENTITY_PROMPT = "Please introduce yourself."
IDENTITY_ANSWER = (
    "I am danlu's personal assistant, fine-tuned to answer questions about the furnace."
)
JOB = "projects/p/trainingJobs/identity"

AssignmentFactory = Callable[..., wpb.WorkerAssignment]


def identity_records(n: int = 64) -> list[dict]:
    """The personal-assistant identity conversation, repeated (the north-star data set)."""
    conversation = {
        "messages": [
            {"role": "user", "content": IDENTITY_PROMPT},
            {"role": "assistant", "content": IDENTITY_ANSWER},
        ]
    }
    return [conversation] * n


def mixed_records() -> list[dict]:
    """A few different conversations (for packing, splits and validation)."""
    pairs = [
        (IDENTITY_PROMPT, IDENTITY_ANSWER),
        ("What is the capital of France?", "The capital of France is Paris."),
        ("Write a short poem about the sea and the moon.", "The sea and the moon, red and blue."),
        ("Translate the following sentence into Chinese.", "今天天气很好，我们去公园散步吧。"),
        ("def add(a, b):", "    return a + b"),
        ("Hello! How can I help you today?", "one two three four five six seven eight nine ten"),
    ]
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in pairs
    ] * 4


def base_spec(**optimization) -> tj.TrainingJobSpec:
    """A small LoRA spec; tests override what they exercise."""
    spec = tj.TrainingJobSpec(
        base_model="projects/p/models/tiny",
        datasets=[tj.DatasetSource(dataset="projects/p/datasets/d/versions/v1", weight=1.0)],
        task=tj.TRAINING_TASK_SFT,
        lora=tj.LoraMethod(r=8, alpha=16, dropout=0.05, target_modules=["all-linear"]),
        data=tj.DataConfig(max_length=256, packing=True, shuffle=True),
        optimization=tj.OptimizationConfig(
            max_steps=6,
            micro_batch_size=2,
            gradient_accumulation_steps=1,
            learning_rate=2e-3,
            warmup_ratio=0.0,
            lr_scheduler=tj.LR_SCHEDULER_COSINE,
            max_grad_norm=1.0,
            precision=tj.PRECISION_FP32,
            gradient_checkpointing=False,
            seed=1234,
        ),
        evaluation=tj.EvaluationConfig(prompts=[IDENTITY_PROMPT], max_new_tokens=32),
        checkpoint=tj.CheckpointConfig(every_n_steps=1000, keep=-1),
        deepspeed=tj.DEEPSPEED_STAGE_NONE,
    )
    for key, value in optimization.items():
        setattr(spec.optimization, key, value)
    return spec


def upload_model(store: LocalObjectStore, model_dir: Path) -> wpb.ModelArtifact:
    files = []
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        info = store.put_file(f"projects/p/models/tiny/revisions/r1/{path.name}", path)
        files.append(
            wpb.ArtifactFile(
                path=path.name,
                object=common_pb2.ObjectRef(
                    key=info.key, sha256=info.sha256, size_bytes=info.size_bytes
                ),
            )
        )
        digest.update(f"{path.name}\0{info.sha256}\n".encode())
    return wpb.ModelArtifact(
        model="projects/p/models/tiny", digest="sha256:" + digest.hexdigest(), files=files
    )


def upload_dataset(
    store: LocalObjectStore, records: Sequence[dict], name: str = "d"
) -> wpb.DatasetArtifact:
    data = b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in records
    )
    version = f"projects/p/datasets/{name}/versions/v1"
    info = store.put_bytes(f"{version}/normalized.jsonl", data)
    return wpb.DatasetArtifact(
        dataset_version=version,
        normalized_object=common_pb2.ObjectRef(
            key=info.key, sha256=info.sha256, size_bytes=info.size_bytes
        ),
    )

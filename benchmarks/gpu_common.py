"""What the GPU training benchmarks share: model shapes built from configs (random init: the
same compute as real weights), synthetic instruction data with a realistic length
distribution, and the worker's assignment for a run on a local object store.

Data: conversations whose total length in tokens is log-normal(mu=5.7, sigma=0.8) — median
~300, mean ~410, about 2% over 1,500 — capped at 2,000 tokens, a sixth of it the prompt
(``tokens_per_word`` converts to words of the benchmark's tokenizer). That is
the shape of Alpaca/ShareGPT-style SFT sets: short prompts, answers of a few hundred tokens,
a long tail. Fixed seed, so every runner sees the same records.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in ("", "proto/gen/python", "services/kit", "services/worker"):
    sys.path.insert(0, str(ROOT / extra))

QWEN2 = dict(max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True)
SHAPES = {
    "qwen2.5-0.5b": dict(
        QWEN2,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
    "qwen2.5-1.5b": dict(
        QWEN2,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
    # CPU smoke runs of the benchmarks themselves
    "tiny": dict(
        QWEN2,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=4096,
    ),
}

WORDS = [
    *("the", "furnace", "data", "model", "heat", "learning", "rate", "token", "batch"),
    *("gradient", "answer", "question", "alchemy", "pill", "fire", "copper", "vessel"),
    *("recipe", "patience", "temperature"),
]


def build_model(directory: Path, shape: str) -> int:
    """Config, tokenizer (with a chat template) and random bf16 weights; returns the
    parameter count N (the MFU numerator's N)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from demo.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(directory)
    config = Qwen2Config(
        **SHAPES[shape],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    parameters = sum(p.numel() for p in model.parameters())
    (directory / "parameters.json").write_text(json.dumps({"parameters": parameters}))
    return parameters


def synthetic_records(n: int, seed: int = 0, tokens_per_word: float = 1.0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        total = int(min(rng.lognormvariate(5.7, 0.8), 2000) / tokens_per_word)
        prompt_words = max(4, total // 6)
        answer_words = max(4, total - prompt_words)
        prompt = " ".join(rng.choice(WORDS) for _ in range(prompt_words))
        answer = " ".join(rng.choice(WORDS) for _ in range(answer_words))
        records.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return records


def upload_model(store, model_dir: Path):
    """The model's files in ``store`` as the worker's ModelArtifact."""
    from danlu.common.v1 import common_pb2
    from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb

    files, digest = [], hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        info = store.put_file(f"projects/b/models/{model_dir.name}/{path.name}", path)
        files.append(
            wpb.ArtifactFile(
                path=path.name,
                object=common_pb2.ObjectRef(
                    key=info.key, sha256=info.sha256, size_bytes=info.size_bytes
                ),
            )
        )
        digest.update(f"{path.name}{info.sha256}".encode())
    return wpb.ModelArtifact(
        model=f"projects/b/models/{model_dir.name}",
        digest="sha256:" + digest.hexdigest(),
        files=files,
    )


def upload_records(store, records: list[dict], name: str):
    from danlu.common.v1 import common_pb2
    from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb

    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    info = store.put_bytes(f"projects/b/datasets/{name}/normalized.jsonl", data)
    return wpb.DatasetArtifact(
        dataset_version=f"projects/b/datasets/{name}/versions/v",
        normalized_object=common_pb2.ObjectRef(
            key=info.key, sha256=info.sha256, size_bytes=info.size_bytes
        ),
    )


def assignment(spec, model, dataset, job: str = "bench"):
    from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb

    spec.base_model = model.model
    del spec.datasets[:]
    spec.datasets.add(dataset=dataset.dataset_version, weight=1.0)
    return wpb.WorkerAssignment(
        spec=spec,
        base_model=model,
        datasets=[dataset],
        checkpoint_prefix=f"projects/b/trainingJobs/{job}/checkpoints/",
    )


def median_ms(run: Callable[[], object], *, repeats: int, warmup: int = 2) -> float:
    """Median wall milliseconds of ``run()`` over ``repeats`` calls after ``warmup`` unmeasured
    ones (Triton autotuning, the allocator), the GPU synchronised around each call."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)

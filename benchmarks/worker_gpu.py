"""The training worker on a GPU: tokens/s and peak memory per method (issue: training service).

Runs ``danlu_worker.runner.run_assignment`` — the real worker code path — on a
Qwen2.5-0.5B-shaped model built from its config (random init: same compute as real weights),
for LoRA, QLoRA, full fine-tuning, LoRA under DeepSpeed ZeRO-2 and full under ZeRO-3, each in
its own process. Data: synthetic conversations whose lengths follow a log-normal fit of
instruction data (median ~300 tokens, long tail capped at max_length), fixed seed, packed.

    python benchmarks/worker_gpu.py --out benchmarks/out/worker_gpu.json [--steps 30]

Tokens/s counts real (non-pad) tokens; the first steps are excluded as warm-up. Prints a table
and writes JSON. Throughput work against a named baseline has its own benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import (
    ROOT,
    assignment,
    build_model,
    synthetic_records,
    upload_model,
    upload_records,
)

CASES = {
    "lora": {"method": "lora", "deepspeed": "none"},
    "qlora": {"method": "qlora", "deepspeed": "none"},
    "full": {"method": "full", "deepspeed": "none"},
    "lora_zero2": {"method": "lora", "deepspeed": "zero2"},
    "full_zero3": {"method": "full", "deepspeed": "zero3"},
}


def run_case(name: str, model_dir: Path, work: Path, steps: int) -> dict:
    import torch

    from danlu.training.v1 import training_job_pb2 as tj
    from danlu_kit.objectstore import LocalObjectStore
    from danlu_worker.reporter import RecordingReporter
    from danlu_worker.runner import run_assignment

    case = CASES[name]
    store = LocalObjectStore(work / "objects")
    model = upload_model(store, model_dir)
    dataset = upload_records(store, synthetic_records(4000), "d")
    lora = tj.LoraMethod(r=16, alpha=32, dropout=0.0, target_modules=["all-linear"])
    spec = tj.TrainingJobSpec(
        task=tj.TRAINING_TASK_SFT,
        data=tj.DataConfig(max_length=2048, packing=True, shuffle=True),
        optimization=tj.OptimizationConfig(
            max_steps=steps,
            micro_batch_size=4,
            gradient_accumulation_steps=1,
            learning_rate=2e-5 if case["method"] == "full" else 2e-4,
            warmup_ratio=0.0,
            lr_scheduler=tj.LR_SCHEDULER_CONSTANT,
            max_grad_norm=1.0,
            precision=tj.PRECISION_BF16,
            gradient_checkpointing=case["method"] == "full",
            seed=0,
        ),
        evaluation=tj.EvaluationConfig(prompts=["the furnace"], max_new_tokens=8),
        checkpoint=tj.CheckpointConfig(every_n_steps=10_000, keep=1),
        deepspeed={
            "none": tj.DEEPSPEED_STAGE_NONE,
            "zero2": tj.DEEPSPEED_STAGE_ZERO2,
            "zero3": tj.DEEPSPEED_STAGE_ZERO3,
        }[case["deepspeed"]],
    )
    if case["method"] == "lora":
        spec.lora.CopyFrom(lora)
    elif case["method"] == "qlora":
        spec.qlora.CopyFrom(
            tj.QLoraMethod(
                lora=lora,
                quant_type=tj.QUANT_TYPE_NF4,
                double_quant=True,
                compute_dtype=tj.PRECISION_BF16,
            )
        )
    else:
        spec.full.SetInParent()
    job = assignment(spec, model, dataset)
    reporter = RecordingReporter()
    started = time.perf_counter()
    run_assignment(job, store=store, reporter=reporter, cache_dir=work / "cache")
    wall = time.perf_counter() - started
    steady = [m for m in reporter.metric_events if m.step > 3 and m.tokens_per_second > 0]
    tps = sum(m.tokens_per_second for m in steady) / max(len(steady), 1)
    return {
        "case": name,
        "steps": steps,
        "tokens_per_second": round(tps, 1),
        "mfu": round(sum(m.mfu for m in steady) / max(len(steady), 1), 4),
        "peak_memory_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "final_loss": round(reporter.metric_events[-1].loss, 4) if reporter.metric_events else None,
        "wall_seconds": round(wall, 1),
        "gpu": torch.cuda.get_device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "worker_gpu.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process: one case
        work = Path(tempfile.mkdtemp())
        print(
            "RESULT " + json.dumps(run_case(args.case, args.model_dir, work, args.steps)),
            flush=True,
        )
        return
    model_dir = Path(tempfile.mkdtemp()) / "qwen2_5_0_5b_shape"
    model_dir.mkdir(parents=True)
    build_model(model_dir, "qwen2.5-0.5b")
    results = []
    for name in args.cases.split(","):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                name,
                "--model-dir",
                str(model_dir),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            results.append({"case": name, "error": (proc.stderr or proc.stdout)[-1500:]})
        else:
            results.append(json.loads(line.removeprefix("RESULT ")))
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n{'case':<12} {'tok/s':>10} {'MFU':>6} {'peak GiB':>9} {'loss':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['case']:<12} ERROR")
        else:
            print(
                f"{r['case']:<12} {r['tokens_per_second']:>10.0f} {r['mfu']:>6.2%} {r['peak_memory_gib']:>9.2f} {r['final_loss']:>8}"
            )


if __name__ == "__main__":
    main()

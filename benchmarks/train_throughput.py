"""Training throughput of the danlu worker vs the Hugging Face Trainer + PEFT baseline, side
by side in one run (issue: training throughput on H100).

Cases (``--cases``): LoRA r=64 on all linear layers of a Qwen2.5-1.5B-shaped model, QLoRA
(NF4, double quantisation, BF16 compute) of the same, full fine-tuning of a
Qwen2.5-0.5B-shaped model, and the LoRA case under DeepSpeed ZeRO-2. Runners (``--runners``):

``baseline``   ``transformers.Trainer`` with what a user copies from the docs: ``bf16=True``,
               peft's default FP32 adapters, SDPA attention, padding to the longest sample of
               each batch (``DataCollatorForSeq2Seq``), per-device batch 4, no gradient
               checkpointing (kinder to the baseline than the docs' usual ``True``).
``danlu[:K[:A]]``  the real worker (``danlu_worker.runner.run_assignment``) with kernel mode K
               (``auto`` by default, which is ``compile`` for BF16 on a GPU without
               DeepSpeed and ``liger`` under DeepSpeed; ``liger``, ``compile``, ``none``
               explicitly) and attention A
               (``auto``, ``sdpa``, ``flex_attention``...): packed rows of 2,048 tokens,
               micro-batch 8, no gradient checkpointing.

Both see the same records (``gpu_common.synthetic_records``: realistic instruction lengths,
fixed seed), tokenised by the same code with the same loss mask, the same optimiser settings
and the same number of optimizer steps; the baseline's gradient accumulation is chosen so
that its real tokens per step match the worker's (~16k). Reported per run: effective
(non-pad) tokens/s over the steps after ``--warmup``, MFU (4·N per token for LoRA/QLoRA, 6·N
for full, N = base parameters, over the GPU's dense BF16 peak), peak allocated memory and the
final loss (mean of the last five steps). ``--profile`` runs each danlu runner four steps
longer and profiles those (after the measured ones, so the reported speed carries no profiler
cost): a CUDA kernel-time breakdown of three steps, the GPU's idle gaps, and for the longest
gaps of one more step (profiled with the host side) what the host was doing (``KernelProfiler``).

    python benchmarks/train_throughput.py --out benchmarks/out/train_throughput.json
    python benchmarks/train_throughput.py --smoke          # tiny shape, CPU: checks the script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpu_common import (
    ROOT,
    assignment,
    build_model,
    synthetic_records,
    upload_model,
    upload_records,
)
from transformers import TrainerCallback

from danlu_worker.modeling import load_tokenizer
from danlu_worker.reporter import RecordingReporter

CASES = {
    "lora_1.5b": {"shape": "qwen2.5-1.5b", "method": "lora", "zero": 0},
    "qlora_1.5b": {"shape": "qwen2.5-1.5b", "method": "qlora", "zero": 0},
    "full_0.5b": {"shape": "qwen2.5-0.5b", "method": "full", "zero": 0},
    "lora_1.5b_zero2": {"shape": "qwen2.5-1.5b", "method": "lora", "zero": 2},
}
MAX_LENGTH = 2048
DANLU_MICRO_BATCH = 8
BASELINE_MICRO_BATCH = 4
LORA = {"r": 64, "alpha": 128, "dropout": 0.0}


def learning_rate(method: str) -> float:
    return 2e-5 if method == "full" else 2e-4


# --------------------------------------------------------------------------- the baseline


def run_baseline(job: dict) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    case = CASES[job["case"]]
    gpu = torch.cuda.is_available()
    model_dir = Path(job["model_dir"])
    features = tokenized_features(model_dir, Path(job["records"]))
    tokenizer = load_tokenizer(model_dir)

    kwargs: dict = {
        "dtype": torch.bfloat16 if gpu else torch.float32,
        "attn_implementation": "sdpa",
    }
    if case["method"] == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if gpu else torch.float32,
        )
        kwargs["device_map"] = {"": 0 if gpu else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if case["method"] == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if case["method"] != "full":
        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=LORA["dropout"],
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )

    collator = CountingCollator(
        DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    )
    timer = StepTimer(gpu)
    if case["zero"]:
        from danlu_worker.settings import ensure_rendezvous_env

        ensure_rendezvous_env()  # a world of one, as torchrun would set up (no mpi4py)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=BASELINE_MICRO_BATCH,
        gradient_accumulation_steps=job["baseline_accumulation"],
        max_steps=job["steps"],
        learning_rate=learning_rate(case["method"]),
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=gpu,
        use_cpu=not gpu,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        deepspeed=baseline_deepspeed(case["zero"]) if case["zero"] else None,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collator,
        callbacks=[timer],
    )
    trainer.train()

    ga, warmup, steps = job["baseline_accumulation"], job["warmup"], job["steps"]
    step_tokens = [sum(collator.tokens[i * ga : (i + 1) * ga]) for i in range(steps)]
    seconds = timer.times[steps - 1] - timer.times[warmup - 1]
    padded = sum(collator.padded[: steps * ga])
    return {
        "tokens_per_second": sum(step_tokens[warmup:steps]) / seconds,
        "tokens_per_step": statistics.mean(step_tokens),
        "padding_fraction": 1 - sum(step_tokens) / padded,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0,
        "losses": timer.losses[:steps],
    }


class CountingCollator:
    """The baseline's collator, counting real (non-pad) and padded tokens per micro-batch."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokens: list[int] = []
        self.padded: list[int] = []

    def __call__(self, features):
        batch = self.inner(features)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.padded.append(int(batch["attention_mask"].numel()))
        return batch


class StepTimer(TrainerCallback):
    """End time of every optimizer step (after the GPU finished it) and the logged losses."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.times: list[float] = []
        self.losses: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if self.gpu:
            import torch

            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def baseline_deepspeed(stage: int) -> dict:
    """The ZeRO config from the transformers docs, ``auto`` values filled by the Trainer."""
    return {
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": stage,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "allgather_bucket_size": 5e8,
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }


def tokenized_features(model_dir: Path, records: Path) -> list[dict]:
    """The records tokenised exactly as the worker does (chat template, loss mask on the
    answers), as the baseline's features: labels -100 where no loss is taken."""
    from danlu_worker.data import SampleEncoder

    tokenizer = load_tokenizer(model_dir)
    encoder = SampleEncoder(
        tokenizer,
        task="sft",
        chat_template=tokenizer.chat_template,
        system_prompt="",
        max_length=MAX_LENGTH,
    )
    features = []
    for line in records.read_text().splitlines():
        sample = encoder.encode(line)
        ids = list(sample.input_ids)
        labels = [t if m else -100 for t, m in zip(ids, sample.loss_mask, strict=True)]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return features


# --------------------------------------------------------------------------- the worker


def run_danlu(job: dict) -> dict:
    import torch

    from danlu.training.v1 import training_job_pb2 as tj
    from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
    from danlu_kit.errors import Cancelled
    from danlu_kit.objectstore import LocalObjectStore
    from danlu_worker.runner import run_assignment

    case = CASES[job["case"]]
    gpu = torch.cuda.is_available()
    steps, warmup = job["steps"], job["warmup"]
    profiler = KernelProfiler(steps) if job.get("profile") and gpu else None
    extra = KernelProfiler.STEPS if profiler else 0
    lora = tj.LoraMethod(
        r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"], target_modules=["all-linear"]
    )
    spec = tj.TrainingJobSpec(
        task=tj.TRAINING_TASK_SFT,
        data=tj.DataConfig(max_length=MAX_LENGTH, packing=True, shuffle=True),
        optimization=tj.OptimizationConfig(
            max_steps=steps + extra + 1,  # cancelled before the end: no final checkpoint
            micro_batch_size=DANLU_MICRO_BATCH,
            gradient_accumulation_steps=1,
            learning_rate=learning_rate(case["method"]),
            warmup_ratio=0.0,
            lr_scheduler=tj.LR_SCHEDULER_CONSTANT,
            max_grad_norm=1.0,
            weight_decay=0.0,
            precision=tj.PRECISION_BF16 if gpu else tj.PRECISION_FP32,
            gradient_checkpointing=False,
            seed=0,
        ),
        checkpoint=tj.CheckpointConfig(every_n_steps=10**6, keep=1),
        deepspeed={0: tj.DEEPSPEED_STAGE_NONE, 2: tj.DEEPSPEED_STAGE_ZERO2}[case["zero"]],
    )
    if case["method"] == "lora":
        spec.lora.CopyFrom(lora)
    elif case["method"] == "qlora":
        spec.qlora.CopyFrom(
            tj.QLoraMethod(
                lora=lora,
                quant_type=tj.QUANT_TYPE_NF4,
                double_quant=True,
                compute_dtype=tj.PRECISION_BF16 if gpu else tj.PRECISION_FP32,
            )
        )
    else:
        spec.full.SetInParent()
    model = wpb.ModelArtifact.FromString(bytes.fromhex(job["model_artifact"]))
    dataset = wpb.DatasetArtifact.FromString(bytes.fromhex(job["dataset_artifact"]))

    reporter = StepHookReporter(cancel_after_step=steps + extra, on_step=profiler)
    with contextlib.suppress(Cancelled):  # the reporter cancels after the last step
        run_assignment(
            assignment(spec, model, dataset, job=job["runner"].replace(":", "-")),
            store=LocalObjectStore(Path(job["store"])),
            reporter=reporter,
            cache_dir=Path(job["cache"]),
            kernels=job["kernels"],
            attention=job["attention"],
        )
    steady = reporter.metric_events[warmup:steps]
    result = {
        # tokens per step are near-constant (full packed rows): the harmonic mean is
        # total tokens over total time
        "tokens_per_second": len(steady) / sum(1 / m.tokens_per_second for m in steady),
        "peak_memory_gib": max(m.memory_allocated_bytes for m in reporter.metric_events) / 2**30,
        "losses": [m.loss for m in reporter.metric_events[:steps]],
        "kernels": next((msg for _, msg in reporter.logs if "attention" in msg), ""),
        "data": next((msg for _, msg in reporter.logs if msg.startswith("data:")), ""),
    }
    if profiler:
        result["profile"] = profiler.report()
    return result


class StepHookReporter(RecordingReporter):
    """RecordingReporter that also tells ``on_step`` (the profiler) of every finished step."""

    def __init__(self, *, cancel_after_step: int, on_step=None) -> None:
        super().__init__(cancel_after_step=cancel_after_step)
        self.on_step = on_step

    def metrics(self, metrics) -> None:
        super().metrics(metrics)
        if self.on_step is not None:
            self.on_step.step_done(metrics.step)


def idle_stretches(spans: list[tuple[float, float, Any]]) -> Iterator[tuple]:
    """``(gap, began, before, after)`` for every idle stretch between device activities
    (``(start, end, payload)``, any order): measured from the latest end so far, since
    kernels may overlap; ``before`` is the payload that ended last, ``after`` the next."""
    spans = sorted(spans, key=lambda span: span[0])
    if not spans:
        return
    busy_until, before = spans[0][1], spans[0][2]
    for start, end, payload in spans[1:]:
        if start > busy_until:
            yield start - busy_until, busy_until, before, payload
        if end > busy_until:
            busy_until, before = end, payload


class KernelProfiler:
    """CUDA kernel time of three steady optimizer steps (the ones after ``first``), by kind
    of kernel, against their wall time: what is left is GPU idle time, located by the gaps
    between kernels. One more step is then profiled with the host side, to find what kept the
    host from launching in time during the longest gaps (that step is not timed)."""

    KINDS = (
        ("attention", ("flash", "fmha", "attention", "attn", "flex")),
        ("matmul", ("gemm", "matmul", "cutlass", "nvjet", "xmma", "sm90_", "cublas")),
        ("optimizer", ("adam", "multi_tensor", "foreach")),
        ("fused (Triton)", ("triton",)),
        ("copies", ("memcpy", "memset", "copy_", "cat", "to_copy")),
        ("elementwise", ("elementwise", "vectorized", "reduce", "softmax", "norm", "fill")),
    )
    ACTIVE = 3
    STEPS = ACTIVE + 1  # and the attribution step
    GAP_US = 200  # idle stretches at least this long are listed with their neighbours

    def __init__(self, first: int) -> None:
        import torch

        self.first = first
        self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        self.attribution = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
            with_stack=True,  # Python frames too: which line of the loop kept the host
        )
        self.started = self.stopped = 0.0

    def step_done(self, step: int) -> None:
        import torch

        if step == self.first:
            torch.cuda.synchronize()
            self.started = time.perf_counter()
            self.profile.start()
        elif step == self.first + self.ACTIVE:
            torch.cuda.synchronize()
            self.stopped = time.perf_counter()
            self.profile.stop()
            self.attribution.start()
        elif step == self.first + self.ACTIVE + 1:
            torch.cuda.synchronize()
            self.attribution.stop()

    def report(self) -> dict:
        step_seconds = (self.stopped - self.started) / self.ACTIVE
        totals: dict[str, float] = {}
        top = []
        for event in self.profile.key_averages():
            us = getattr(event, "self_device_time_total", 0) or 0
            if us <= 0:
                continue
            name = event.key
            kind = self.kind(name)
            totals[kind] = totals.get(kind, 0.0) + us / 1e3 / self.ACTIVE
            top.append((us / 1e3 / self.ACTIVE, kind, name[:90]))
        busy = sum(totals.values())
        step_ms = step_seconds * 1e3
        return {
            "step_ms": round(step_ms, 1),
            "kernel_ms": {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda x: -x[1])},
            "gpu_idle_ms": round(max(step_ms - busy, 0.0), 1),
            "top_kernels": [
                {"ms": round(ms, 2), "kind": kind, "name": name}
                for ms, kind, name in sorted(top, reverse=True)[:15]
            ],
            "gaps": self.gaps(),
            "gap_causes": self.gap_causes(),
        }

    def kind(self, name: str) -> str:
        return next(
            (k for k, words in self.KINDS if any(w in name.lower() for w in words)), "other"
        )

    def gaps(self) -> dict:
        """Idle stretches between consecutive device activities (kernels, copies), per step:
        their total by size, and the longest with the kernels on either side. Read from the
        same device events as the kernel totals."""
        from torch.autograd import DeviceType

        device = sorted(
            (e.time_range.start, e.time_range.end, e.name)
            for e in self.profile.events()
            if e.device_type == DeviceType.CUDA
        )
        small = large = 0.0
        longest = []
        for gap, _, before, after in idle_stretches(device):
            if gap >= self.GAP_US:
                large += gap
                longest.append((gap, before[:60], after[:60]))
            else:
                small += gap
        longest.sort(reverse=True)
        return {
            "device_events": len(device),
            "below_200us_ms_per_step": round(small / 1e3 / self.ACTIVE, 1),
            "above_200us_ms_per_step": round(large / 1e3 / self.ACTIVE, 1),
            "count_above_200us_per_step": round(len(longest) / self.ACTIVE, 1),
            "longest": [{"us": round(g), "after": b, "before": a} for g, b, a in longest[:12]],
        }

    def gap_causes(self, count: int = 10, min_us: float = 500.0) -> list[dict]:
        """The longest idle gaps of the attribution step (profiled with the host side), each
        with what the host was doing: the host operators around the launch of the kernel
        that ended the gap (innermost first), how long after the gap began that launch came
        (``launch_late_us``: the GPU waited for the host), and any host wait for the GPU
        (a synchronize or a device-to-host copy) that ended inside the gap or just before."""
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            self.attribution.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
        device = [e for e in spans if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
        # Triton's kernels are launched through the driver API (cuLaunchKernel)
        runtime = [e for e in spans if e.get("cat") in ("cuda_runtime", "cuda_driver")]
        launches = {
            e["args"]["correlation"]: e for e in runtime if "correlation" in e.get("args", {})
        }
        host_ops = [
            e for e in spans if e.get("cat") in ("cpu_op", "user_annotation", "python_function")
        ]
        waits = [
            e
            for e in runtime
            if ("Synchronize" in e["name"] or "Memcpy" in e["name"]) and e["dur"] >= 50
        ]

        def around(tid, ts: float) -> list[str]:
            enclosing = [
                o for o in host_ops if o["tid"] == tid and o["ts"] <= ts <= o["ts"] + o["dur"]
            ]
            return [o["name"][:80] for o in sorted(enclosing, key=lambda o: o["dur"])[:10]]

        gaps = [
            (gap, began, kernel)
            for gap, began, _, kernel in idle_stretches(
                [(e["ts"], e["ts"] + e["dur"], e) for e in device]
            )
            if gap >= min_us
        ]
        causes = []
        for gap, began, kernel in sorted(gaps, key=lambda g: -g[0])[:count]:
            launch = launches.get(kernel.get("args", {}).get("correlation"))
            cause = {"us": round(gap), "kernel": kernel["name"][:70]}
            if launch is not None:
                cause["launch_late_us"] = round(launch["ts"] - began)
                cause["launched_in"] = around(launch["tid"], launch["ts"])
            cause["host_waits"] = [
                {"call": w["name"], "us": round(w["dur"]), "in": around(w["tid"], w["ts"])}
                for w in waits
                if began - 200 <= w["ts"] + w["dur"] <= began + gap
            ]
            causes.append(cause)
        return causes


# --------------------------------------------------------------------------- the parent


def child(job: dict) -> dict:
    started = time.perf_counter()
    result = run_baseline(job) if job["runner"] == "baseline" else run_danlu(job)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def prepare(shapes: set[str], work: Path, steps: int) -> dict:
    """Models, data (enough for ``steps`` of the worker) and the object store, once."""
    from danlu_kit.objectstore import LocalObjectStore

    store = LocalObjectStore(work / "objects")
    prepared = {}
    for shape in sorted(shapes):
        model_dir = work / shape
        model_dir.mkdir(parents=True)
        parameters = build_model(model_dir, shape)
        # Lengths are drawn in tokens: measure this tokenizer's tokens per word first. The
        # mean sample length then decides how many samples fill the worker's steps, and the
        # baseline's accumulation is set so its real tokens per step match.
        probe = work / f"{shape}-probe.jsonl"
        probe_records = synthetic_records(300, seed=1)
        probe.write_text("".join(json.dumps(r) + "\n" for r in probe_records))
        probe_tokens = [len(f["input_ids"]) for f in tokenized_features(model_dir, probe)]
        words = [sum(len(m["content"].split()) for m in r["messages"]) for r in probe_records]
        tokens_per_word = sum(probe_tokens) / sum(words)
        mean_tokens = statistics.mean(probe_tokens) / tokens_per_word
        danlu_tokens_per_step = DANLU_MICRO_BATCH * MAX_LENGTH * 0.97
        accumulation = max(1, round(danlu_tokens_per_step / (BASELINE_MICRO_BATCH * mean_tokens)))
        n = math.ceil(1.1 * (steps + 1) * BASELINE_MICRO_BATCH * accumulation)
        records = synthetic_records(n, tokens_per_word=tokens_per_word)
        data = work / f"{shape}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        prepared[shape] = {
            "model_dir": str(model_dir),
            "parameters": parameters,
            "records": str(data),
            "samples": n,
            "mean_sample_tokens": round(mean_tokens, 1),
            "tokens_per_word": round(tokens_per_word, 3),
            "baseline_accumulation": accumulation,
            "model_artifact": upload_model(store, model_dir).SerializeToString().hex(),
            "dataset_artifact": upload_records(store, records, shape).SerializeToString().hex(),
        }
    return {"store": str(work / "objects"), "cache": str(work / "cache"), "shapes": prepared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--runners", default="baseline,danlu")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--budget-seconds", type=float, default=1e9, help="start no run after")
    parser.add_argument("--smoke", action="store_true", help="tiny shape on CPU, 4 steps")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "out" / "train_throughput.json"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(Path(args.child).read_text()))), flush=True)
        return

    started = time.perf_counter()
    if args.smoke:
        for case in CASES.values():
            case["shape"] = "tiny"
        args.steps, args.warmup = 4, 2
    cases = args.cases.split(",")
    work = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    prepared = prepare({CASES[c]["shape"] for c in cases}, work, args.steps)
    import torch

    from danlu_worker.metrics import peak_flops_per_device

    peak = peak_flops_per_device(torch.device("cuda")) if torch.cuda.is_available() else 0.0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results = []
    for case_name in cases:
        case = CASES[case_name]
        shape = prepared["shapes"][case["shape"]]
        for runner in args.runners.split(","):
            if time.perf_counter() - started > args.budget_seconds:
                results.append({"case": case_name, "runner": runner, "error": "out of budget"})
                continue
            kernels, attention = [*runner.split(":"), "auto", "auto"][1:3]
            job = {
                **shape,
                "case": case_name,
                "runner": runner,
                "kernels": kernels,
                "attention": attention,
                "steps": args.steps,
                "warmup": args.warmup,
                "store": prepared["store"],
                "cache": prepared["cache"],
                "profile": args.profile and runner != "baseline",
            }
            job_file = work / "job.json"
            job_file.write_text(json.dumps(job))
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(job_file)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            entry = {"case": case_name, "runner": runner, "device": device}
            if line is None:
                entry["error"] = (proc.stderr or proc.stdout)[-2500:]
            else:
                r = json.loads(line.removeprefix("RESULT "))
                factor = 6 if case["method"] == "full" else 4
                losses = r.pop("losses")
                entry.update(r)
                entry["mfu"] = (
                    factor * shape["parameters"] * r["tokens_per_second"] / peak if peak else 0.0
                )
                entry["final_loss"] = statistics.mean(losses[-5:])
                entry["first_loss"] = losses[0]
            results.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "profile"}), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps({"shapes": _public(prepared), "results": results}, indent=2)
            )
    print_table(results)


def _public(prepared: dict) -> dict:
    return {
        shape: {k: v for k, v in info.items() if not k.endswith("_artifact")}
        for shape, info in prepared["shapes"].items()
    }


def print_table(results: list[dict]) -> None:
    baseline = {r["case"]: r for r in results if r["runner"] == "baseline" and "error" not in r}
    print(
        f"\n{'case':<16} {'runner':<22} {'tok/s':>9} {'x base':>7} {'MFU':>6} {'GiB':>6} {'loss':>7}"
    )
    for r in results:
        if "error" in r:
            print(
                f"{r['case']:<16} {r['runner']:<22} ERROR {r['error'].splitlines()[-1][:80] if r['error'] else ''}"
            )
            continue
        base = baseline.get(r["case"])
        ratio = r["tokens_per_second"] / base["tokens_per_second"] if base else float("nan")
        print(
            f"{r['case']:<16} {r['runner']:<22} {r['tokens_per_second']:>9.0f} {ratio:>6.2f}x "
            f"{r['mfu']:>6.1%} {r['peak_memory_gib']:>6.1f} {r['final_loss']:>7.3f}"
        )
    for r in results:
        if "profile" in r:
            print(
                f"\nkernel time per step, {r['case']} {r['runner']}: {json.dumps(r['profile']['kernel_ms'])}"
            )
            print(f"step {r['profile']['step_ms']} ms, GPU idle {r['profile']['gpu_idle_ms']} ms")
            print("gaps:", json.dumps(r["profile"]["gaps"], indent=1))
            print("gap causes:", json.dumps(r["profile"]["gap_causes"], indent=1))


if __name__ == "__main__":
    main()

"""Streaming LoRA merge (danlu_conversion) vs peft ``merge_and_unload`` + ``save_pretrained``.

    .venv/bin/python benchmarks/merge.py            # Qwen2.5-1.5B shapes, LoRA r=64 all-linear
    .venv/bin/python benchmarks/merge.py --quick    # 2 layers, smoke test

Setup (not timed, cached under ``benchmarks/out/merge/``): a random model with
Qwen2.5-1.5B's shapes (hidden 1536, intermediate 8960, 28 layers, 12/2 heads, vocab 151936, tied
embeddings) saved in bf16 as 2GB shards + index, and a random LoRA adapter (r=64, alpha=128, on
q/k/v/o/gate/up/down of every layer, fp32 as peft saves it) in peft's file layout.

Each method runs in its own fresh process, so its peak RSS (``ru_maxrss``) is its own:

* baseline: ``AutoModelForCausalLM.from_pretrained(base, dtype=bf16)`` ->
  ``PeftModel.from_pretrained`` -> ``merge_and_unload()`` -> ``save_pretrained(max_shard_size=
  "2GB")``;
* danlu: ``danlu_conversion.core.merge.merge_adapter(base, adapter, out, dtype="bf16",
  max_shard_size="2GB")``.

Both write bf16 (the base's dtype). Afterwards every output tensor of danlu's is compared with
the baseline's (max absolute difference). The methods alternate ``--repeats`` times; the best
wall time and the largest peak RSS of each count. Results: a table on stdout and
``benchmarks/out/merge.json``; summaries with the machine go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen_config(layers: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=layers,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )


def build(work: Path, layers: int, rank: int) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, GenerationConfig

    from danlu_conversion.core.tensorfiles import OutputTensor, row_chunks, write_model_shards

    base, adapter = work / f"base-{layers}", work / f"adapter-{layers}-r{rank}"
    if (base / "config.json").is_file() and (adapter / "adapter_config.json").is_file():
        return base, adapter
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(adapter, ignore_errors=True)
    base.mkdir(parents=True)
    adapter.mkdir(parents=True)
    config = qwen_config(layers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    gen = torch.Generator().manual_seed(0)

    def random_tensor(shape):
        def produce():
            for begin, end in row_chunks(shape, 8 * 1024 * 1024):
                rows = torch.randn((end - begin, *shape[1:]), generator=gen) * 0.02
                yield rows.to(torch.bfloat16)

        return produce

    outputs = [
        OutputTensor(name, torch.bfloat16, shape, random_tensor(shape))
        for name, shape in shapes.items()
    ]
    write_model_shards(base, outputs, max_shard_size=2 * 10**9)
    config.save_pretrained(base)
    GenerationConfig(eos_token_id=151645).save_pretrained(base)

    lora = {}
    for name, shape in shapes.items():
        module = name.removesuffix(".weight")
        if module.split(".")[-1] in TARGETS and name.endswith(".weight"):
            out_f, in_f = shape
            key = f"base_model.model.{module}"
            lora[f"{key}.lora_A.weight"] = torch.randn((rank, in_f), generator=gen) * 0.01
            lora[f"{key}.lora_B.weight"] = torch.randn((out_f, rank), generator=gen) * 0.01
    save_file(lora, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base),
    ).save_pretrained(adapter)
    return base, adapter


def run_baseline(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, max_shard_size="2GB")


def run_danlu(base: Path, adapter: Path, out: Path) -> None:
    from danlu_conversion.core.merge import merge_adapter

    merge_adapter(base, adapter, out, dtype="bf16", max_shard_size="2GB")


def child(method: str, base: Path, adapter: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    {"baseline": run_baseline, "danlu": run_danlu}[method](base, adapter, out)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"method": method, "wall_s": wall, "peak_rss_bytes": rss}))


def measure(method: str, base: Path, adapter: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(base), str(adapter), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{method} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> float:
    from safetensors import safe_open

    def files(d: Path) -> dict[str, Path]:
        index = d / "model.safetensors.index.json"
        if index.is_file():
            return {k: d / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        with safe_open(d / "model.safetensors", "pt") as f:
            return dict.fromkeys(f.keys(), d / "model.safetensors")

    fa, fb = files(a), files(b)
    if set(fa) != set(fb):
        raise SystemExit(f"tensor names differ: {sorted(set(fa) ^ set(fb))[:5]}")
    worst = 0.0
    for name in fa:
        with safe_open(fa[name], "pt") as x, safe_open(fb[name], "pt") as y:
            ta, tb = x.get_tensor(name).float(), y.get_tensor(name).float()
            worst = max(worst, (ta - tb).abs().max().item())
    return worst


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], *(Path(p) for p in sys.argv[3:6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers instead of 28")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    layers = 2 if args.quick else args.layers
    work = OUT / "merge"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, adapter = build(work, layers, args.rank)
    print(f"setup: {time.perf_counter() - t0:.1f}s  base {base}  adapter {adapter}", flush=True)
    results: dict[str, list[dict]] = {"baseline": [], "danlu": []}
    for _ in range(args.repeats):
        for method in ("baseline", "danlu"):
            r = measure(method, base, adapter, work / f"out-{method}")
            print(json.dumps(r), flush=True)
            results[method].append(r)
    diff = compare(work / "out-baseline", work / "out-danlu")
    best = {
        m: {
            "wall_s": min(r["wall_s"] for r in rs),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
        }
        for m, rs in results.items()
    }
    summary = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": {"layers": layers, "rank": args.rank, "shape": "Qwen2.5-1.5B", "dtype": "bf16"},
        "base_bytes": sum(p.stat().st_size for p in base.glob("*.safetensors")),
        "runs": results,
        "best": best,
        "time_ratio": best["danlu"]["wall_s"] / best["baseline"]["wall_s"],
        "rss_ratio": best["danlu"]["peak_rss_bytes"] / best["baseline"]["peak_rss_bytes"],
        "max_abs_diff_vs_baseline": diff,
    }
    name = "merge-quick.json" if args.quick else "merge.json"
    (OUT / name).write_text(json.dumps(summary, indent=2))
    print()
    print(f"{'method':<10} {'wall s':>8} {'peak RSS MiB':>13}")
    for m, b in best.items():
        print(f"{m:<10} {b['wall_s']:>8.1f} {b['peak_rss_bytes'] / 2**20:>13.0f}")
    print(
        f"danlu/baseline: time {summary['time_ratio']:.2f}x, peak RSS {summary['rss_ratio']:.2f}x;"
        f" max |danlu - baseline| over all tensors {diff:.3g}"
    )


if __name__ == "__main__":
    main()

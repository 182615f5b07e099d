"""Liger's fused linear + cross-entropy at larger chunks than its default (GPU only).

Liger computes the loss ``chunk`` tokens at a time so the ``tokens x vocabulary`` logits never
exist at once; its default budget (``chunk_mem_const=1``) keeps each chunk's logits near the
size of the hidden states, which for a 152k vocabulary and 1,536 hidden units means chunks of
256 tokens: 64 small matmuls per micro-batch of 16k tokens. This times forward + backward of
the loss alone (frozen head, as in LoRA) at budgets 1 (the baseline), 2, 4 and 8, on the
Qwen2.5-1.5B shape, and reports each budget's time as a ratio to the default, with its peak
memory.

    python benchmarks/fused_loss_chunks.py --out benchmarks/out/fused_loss_chunks.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from gpu_common import median_ms


def time_loss(hidden, weight, target, chunk_mem_const: int, repeats: int) -> tuple[float, float]:
    """Median milliseconds of forward + backward, and peak GiB above the inputs."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    def run() -> None:
        x = hidden.detach().requires_grad_(True)
        liger_fused_linear_cross_entropy(
            x, weight, target, reduction="sum", chunk_mem_const=chunk_mem_const
        ).backward()

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = median_ms(run, repeats=repeats)
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8 * 2048)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/fused_loss_chunks.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    hidden = torch.randn(args.tokens, args.hidden, device=dev, dtype=torch.bfloat16)
    weight = torch.randn(args.vocab, args.hidden, device=dev, dtype=torch.bfloat16) * 0.02
    target = torch.randint(0, args.vocab, (args.tokens,), device=dev)
    target[torch.rand(args.tokens, device=dev) < 0.4] = -100  # prompts carry no loss
    rows = []
    for budget in (1, 2, 4, 8):
        ms, gib = time_loss(hidden, weight, target, budget, args.repeats)
        rows.append({"chunk_mem_const": budget, "ms": round(ms, 2), "peak_gib": round(gib, 2)})
    for row in rows:
        row["vs_default"] = round(row["ms"] / rows[0]["ms"], 3)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"device": torch.cuda.get_device_name(), "rows": rows, **vars(args)}, default=str
        )
    )


if __name__ == "__main__":
    main()

"""One LoRA linear layer, forward + backward: peft's own forward (the baseline) vs the
worker's fused paths (``danlu_worker.kernels``): the forward-only ``lora_addmm`` (used
with dropout, 4-bit bases, autocast) and ``LoraLinear`` (forward and backward: one matmul over
concatenations for projections wider than their input, adds in matmul epilogues for the
others), plus ``LoraLinear`` with the epilogue form everywhere (``LoraLinear_epilogue``, what
it was before the concatenated form) to measure that choice. The seven projections of a
Qwen2.5-1.5B decoder layer, r=64, frozen BF16 base on a GPU (FP32 on CPU), time per call as
a ratio to peft's in the same run.

    python benchmarks/lora_linear.py --out benchmarks/out/lora_linear.json
    python benchmarks/lora_linear.py --tokens 2048          # CPU: fewer tokens
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from unittest import mock

import torch
from gpu_common import median_ms

# (name, in_features, out_features) of one Qwen2.5-1.5B decoder layer
SHAPES = (
    ("q_proj", 1536, 1536),
    ("k_proj", 1536, 256),
    ("v_proj", 1536, 256),
    ("o_proj", 1536, 1536),
    ("gate_proj", 1536, 8960),
    ("up_proj", 1536, 8960),
    ("down_proj", 8960, 1536),
)


def lora_layer(in_features: int, out_features: int, dtype: torch.dtype, device: torch.device):
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(in_features, out_features, bias=False))
    model = get_peft_model(base, LoraConfig(r=64, lora_alpha=128, target_modules=["0"]))
    model.to(device=device, dtype=dtype)
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.02)
    return layer


def time_call(fn, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of forward + backward (input and adapter gradients)."""
    return median_ms(lambda: fn(x.detach().requires_grad_(True)).backward(grad), repeats=repeats)


def epilogue_only():
    """``LoraLinear`` with its concatenated form switched off."""
    return mock.patch("danlu_worker.kernels.lora_as_one_matmul", return_value=False)


def main() -> None:
    from danlu_worker.kernels import _fused_lora_forward, lora_addmm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8 * 2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/lora_linear.json"))
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.manual_seed(0)
    rows = []
    totals = {"peft": 0.0, "addmm": 0.0, "LoraLinear": 0.0, "LoraLinear_epilogue": 0.0}
    for name, fan_in, fan_out in SHAPES:
        layer = lora_layer(fan_in, fan_out, dtype, device)
        x = torch.randn(args.tokens, fan_in, device=device, dtype=dtype)
        grad = torch.randn(args.tokens, fan_out, device=device, dtype=dtype)
        peft_forward = type(layer).forward
        ms = {
            "peft": time_call(lambda x, f=peft_forward, m=layer: f(m, x), x, grad, args.repeats),
            "addmm": time_call(
                lambda x, m=layer: lora_addmm(m, x, "default"), x, grad, args.repeats
            ),
            "LoraLinear": time_call(
                lambda x, m=layer: _fused_lora_forward(m, x), x, grad, args.repeats
            ),
        }
        with epilogue_only():
            ms["LoraLinear_epilogue"] = time_call(
                lambda x, m=layer: _fused_lora_forward(m, x), x, grad, args.repeats
            )
        for k, v in ms.items():
            totals[k] += v
        row = {"module": name, **{k: round(v, 3) for k, v in ms.items()}}
        row["LoraLinear_vs_peft"] = round(ms["LoraLinear"] / ms["peft"], 3)
        row["LoraLinear_vs_epilogue"] = round(ms["LoraLinear"] / ms["LoraLinear_epilogue"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: round(v, 3) for k, v in totals.items()}
    summary["addmm_vs_peft"] = round(totals["addmm"] / totals["peft"], 3)
    summary["LoraLinear_vs_peft"] = round(totals["LoraLinear"] / totals["peft"], 3)
    summary["LoraLinear_vs_epilogue"] = round(
        totals["LoraLinear"] / totals["LoraLinear_epilogue"], 3
    )
    print("one layer's seven projections, ms:", json.dumps(summary), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if gpu else platform.processor() or "cpu",
                "dtype": str(dtype),
                "tokens": args.tokens,
                "rows": rows,
                "layer_total": summary,
            }
        )
    )


if __name__ == "__main__":
    main()

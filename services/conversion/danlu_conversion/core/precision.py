"""Precision report of a merge: base + adapter (peft, unmerged) vs the merged model.

Both models are loaded on CPU in fp32 with transformers (+ peft for the adapter), so the report
measures what the merge and the storage dtype changed, not numerics of a device. For each probe
prompt (the training job's evaluation prompts, or fixed probes) it records the max and mean
absolute difference of the next-token logits over the prompt, and whether greedy decoding of
``max_new_tokens`` gives the same tokens. This loads two models whole, so it runs only under a
size guard (``max_model_bytes``, default 2 GB of base weights); larger merges skip it and say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

FIXED_PROBES = (
    "Please introduce yourself.",
    "What is the capital of France?",
    "Write a haiku about a furnace.",
)
DEFAULT_MAX_MODEL_BYTES = 2 * 10**9


@dataclass
class ProbeResult:
    prompt: str
    greedy_match: bool
    max_abs_logit_diff: float
    mean_abs_logit_diff: float


@dataclass
class PrecisionReport:
    max_abs_logit_diff: float = 0.0
    mean_abs_logit_diff: float = 0.0
    probes: list[ProbeResult] = field(default_factory=list)
    skipped: str = ""  # why no report was computed

    @property
    def greedy_match_rate(self) -> float:
        return sum(p.greedy_match for p in self.probes) / len(self.probes) if self.probes else 0.0

    def to_json(self) -> dict:
        return {
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "mean_abs_logit_diff": self.mean_abs_logit_diff,
            "greedy_match_rate": self.greedy_match_rate,
            "probes": [vars(p) for p in self.probes],
            "skipped": self.skipped,
        }


def precision_report(
    base_dir: Path,
    adapter_dir: Path,
    merged_dir: Path,
    *,
    prompts: Sequence[str] = FIXED_PROBES,
    max_new_tokens: int = 16,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> PrecisionReport:
    size = sum(p.stat().st_size for p in Path(base_dir).glob("*.safetensors"))
    if size > max_model_bytes:
        return PrecisionReport(
            skipped=f"base weights are {size} bytes, over the {max_model_bytes}-byte guard"
        )
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter_dir
    ).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    report = PrecisionReport()
    total, count = 0.0, 0
    for prompt in prompts or FIXED_PROBES:
        ids = _encode(tokenizer, prompt)
        with torch.no_grad():
            a = reference(ids).logits.float()
            b = merged(ids).logits.float()
            diff = (a - b).abs()
            kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False}
            pad = tokenizer.pad_token_id or tokenizer.eos_token_id
            ga = reference.generate(input_ids=ids, pad_token_id=pad, **kwargs)
            gb = merged.generate(input_ids=ids, pad_token_id=pad, **kwargs)
        report.probes.append(
            ProbeResult(
                prompt=prompt,
                greedy_match=torch.equal(ga, gb),
                max_abs_logit_diff=diff.max().item(),
                mean_abs_logit_diff=diff.mean().item(),
            )
        )
        report.max_abs_logit_diff = max(report.max_abs_logit_diff, diff.max().item())
        total += diff.sum().item()
        count += diff.numel()
    report.mean_abs_logit_diff = total / count if count else 0.0
    return report


def _encode(tokenizer, prompt: str) -> torch.Tensor:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return torch.tensor([list(ids)])

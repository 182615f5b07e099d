"""Helpers of the conversion tests."""

from __future__ import annotations

from pathlib import Path

import torch


def make_adapter(base_dir: Path, out: Path, *, seed: int = 1, **lora) -> Path:
    """Save a peft LoRA adapter on ``base_dir`` whose A and B are both random."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=lora.pop("r", 8),
        lora_alpha=lora.pop("lora_alpha", 16),
        target_modules=lora.pop("target_modules", "all-linear"),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **lora,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
    peft_model.save_pretrained(out)
    return out

"""Conversion fixtures: the tiny model and LoRA adapters made on it with peft (random B, so the
deltas are not zero), sharded small so the merge crosses shard boundaries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conversion.helpers import make_adapter


@pytest.fixture(scope="session")
def sharded_base(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny model re-saved in fp32 as several ~100 KB shards (+ index)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharded-base")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.save_pretrained(out, max_shard_size="100KB")
    for f in tiny_model_dir.iterdir():
        if f.is_file() and not (out / f.name).exists() and "safetensors" not in f.name:
            shutil.copy(f, out / f.name)
    assert (out / "model.safetensors.index.json").is_file()
    return out


@pytest.fixture(scope="session")
def lora_adapter(sharded_base: Path, tmp_path_factory) -> Path:
    return make_adapter(sharded_base, tmp_path_factory.mktemp("adapter") / "a")

"""The streaming merge against peft's merge_and_unload on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from danlu_conversion.core.merge import merge_adapter
from danlu_conversion.core.tensorfiles import CorruptShard
from danlu_kit.errors import Cancelled, FailedPrecondition
from tests.conversion.helpers import make_adapter

PROMPT = [[5, 17, 42, 9, 33, 8, 21]]


def _peft_reference(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(PROMPT)).logits.float()


def _load(directory: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()


def test_fp32_merge_equals_peft_merge_and_unload(sharded_base, lora_adapter, tmp_path):
    out = tmp_path / "merged"
    result = merge_adapter(sharded_base, lora_adapter, out, dtype="fp32", max_shard_size="120KB")
    assert result.merged_tensors == 14  # 7 linear modules x 2 layers
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("model-*.safetensors"))) > 1
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()

    reference = _peft_reference(sharded_base, lora_adapter)
    expected = _logits(reference)
    state = reference.merge_and_unload().state_dict()
    merged = _load(out)
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_merge_writes_requested_dtype_and_stays_close(
    sharded_base, lora_adapter, tmp_path, dtype
):
    out = tmp_path / "merged"
    merge_adapter(sharded_base, lora_adapter, out, dtype=dtype)  # default 2GB: one file
    tensors = load_file(out / "model.safetensors")
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert {t.dtype for t in tensors.values()} == {want}
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == {"fp16": "float16", "bf16": "bfloat16"}[dtype]
    expected = _logits(_peft_reference(sharded_base, lora_adapter))
    got = _logits(_load(out))
    assert (got - expected).abs().max() < (0.05 if dtype == "fp16" else 0.3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_tied_embeddings_with_adapted_lm_head_are_untied(sharded_base, tmp_path):
    adapter = make_adapter(
        sharded_base,
        tmp_path / "a",
        target_modules=["q_proj", "v_proj", "lm_head", "embed_tokens"],
    )
    out = tmp_path / "merged"
    result = merge_adapter(sharded_base, adapter, out, dtype="fp32")
    assert result.untied and "untied" in result.notes[0]
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    tensors = load_file(out / "model.safetensors")
    assert "lm_head.weight" in tensors
    expected = _logits(_peft_reference(sharded_base, adapter))
    torch.testing.assert_close(_logits(_load(out)), expected, rtol=1e-4, atol=1e-4)


def test_rslora_scaling(sharded_base, tmp_path):
    adapter = make_adapter(sharded_base, tmp_path / "a", use_rslora=True, r=4, lora_alpha=8)
    out = tmp_path / "merged"
    merge_adapter(sharded_base, adapter, out, dtype="fp32")
    expected = _logits(_peft_reference(sharded_base, adapter))
    torch.testing.assert_close(_logits(_load(out)), expected, rtol=1e-4, atol=1e-4)


def test_adapter_of_another_base_is_refused_before_any_work(lora_adapter, tmp_path):
    from demo.tiny_model import build_tiny_model

    other = tmp_path / "other"
    build_tiny_model(other)
    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] = 96
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    model.save_pretrained(other)
    out = tmp_path / "merged"
    with pytest.raises(FailedPrecondition) as err:
        merge_adapter(other, lora_adapter, out)
    assert err.value.reason == "BASE_MODEL_MISMATCH"
    assert "mlp" in err.value.message
    assert not out.exists() and not (tmp_path / "merged.partial").exists()


def test_base_digest_mismatch_is_refused(sharded_base, lora_adapter, tmp_path):
    with pytest.raises(FailedPrecondition) as err:
        merge_adapter(
            sharded_base,
            lora_adapter,
            tmp_path / "m",
            base_digest="sha256:" + "a" * 64,
            adapter_base_digest="sha256:" + "b" * 64,
        )
    assert err.value.reason == "BASE_MODEL_MISMATCH"


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_truncated_shard_fails_and_publishes_nothing(sharded_base, lora_adapter, tmp_path):
    base = _copy(sharded_base, tmp_path / "base")
    shard = sorted(base.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    out = tmp_path / "merged"
    with pytest.raises(CorruptShard) as err:
        merge_adapter(base, lora_adapter, out)
    assert shard.name in err.value.message and err.value.code_name == "DATA_LOSS"
    assert not out.exists() and not (tmp_path / "merged.partial").exists()


def test_garbage_and_missing_shards_fail(sharded_base, lora_adapter, tmp_path):
    base = _copy(sharded_base, tmp_path / "base")
    shard = sorted(base.glob("model-*.safetensors"))[0]
    shard.write_bytes(b"\xff" * 64)
    with pytest.raises(CorruptShard):
        merge_adapter(base, lora_adapter, tmp_path / "m1")
    shard.unlink()
    with pytest.raises(CorruptShard) as err:
        merge_adapter(base, lora_adapter, tmp_path / "m2")
    assert err.value.reason == "SHARD_MISSING"
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_cancel_between_tensors_leaves_nothing(sharded_base, lora_adapter, tmp_path):
    seen = []
    out = tmp_path / "merged"
    with pytest.raises(Cancelled):
        merge_adapter(
            sharded_base,
            lora_adapter,
            out,
            progress=lambda done, total, name: seen.append(done),
            cancelled=lambda: len(seen) >= 3,
        )
    assert seen == [1, 2, 3]
    assert not out.exists() and not (tmp_path / "merged.partial").exists()


def test_precision_report_on_the_merged_model(sharded_base, lora_adapter, tmp_path):
    from danlu_conversion.core.precision import precision_report

    out = tmp_path / "merged"
    merge_adapter(sharded_base, lora_adapter, out, dtype="fp16")
    report = precision_report(sharded_base, lora_adapter, out, max_new_tokens=4)
    assert len(report.probes) == 3
    assert 0 < report.max_abs_logit_diff < 0.05
    assert report.mean_abs_logit_diff <= report.max_abs_logit_diff
    assert report.greedy_match_rate == 1.0
    skipped = precision_report(sharded_base, lora_adapter, out, max_model_bytes=10)
    assert skipped.skipped and not skipped.probes


def test_merge_reads_one_bounded_chunk_at_a_time(sharded_base, lora_adapter, tmp_path, monkeypatch):
    """Bounded memory, checked structurally: every base read is at most ``chunk_elements``
    (whole rows), the result is unchanged, and no tensor is read twice."""
    import danlu_conversion.core.merge as merge_module

    reads: list[tuple[str, int, int]] = []
    real = merge_module.read_rows

    def spy(entry, begin, end):
        rows = real(entry, begin, end)
        reads.append((entry.name, begin, rows.numel()))
        return rows

    monkeypatch.setattr(merge_module, "read_rows", spy)
    chunked = merge_adapter(
        sharded_base, lora_adapter, tmp_path / "chunked", dtype="fp32", chunk_elements=1000
    )
    whole = tmp_path / "whole"
    monkeypatch.setattr(merge_module, "read_rows", real)
    merge_adapter(sharded_base, lora_adapter, whole, dtype="fp32")
    largest_row = max(
        t.shape[1] if t.dim() > 1 else 1 for t in load_file(whole / "model.safetensors").values()
    )
    assert max(n for _, _, n in reads) <= max(1000, largest_row)
    assert len({(name, begin) for name, begin, _ in reads}) == len(reads)
    a = {}
    for f in sorted((tmp_path / "chunked").glob("*.safetensors")):
        a.update(load_file(f))
    b = load_file(whole / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # BLAS may block a row slice differently: equal up to fp32 rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert chunked.tensors == len(b)

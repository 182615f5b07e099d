"""Fast paths of the worker against their references: FP32 master weights, compiled decoder
layers (CPU and GPU) and Liger's kernels (GPU only: Triton has no CPU backend)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from worker_helpers import base_spec, identity_records, mixed_records

from danlu_kit.errors import FailedPrecondition, InvalidArgument
from danlu_worker.data import IGNORE_INDEX, Batch
from danlu_worker.engine import MasterWeights, _loss, build_optimizer
from danlu_worker.kernels import (
    KernelPlan,
    finish_model,
    fuse_lora,
    has_windowed_layers,
    lora_as_one_matmul,
    patch_model,
    plan_kernels,
)
from danlu_worker.reporter import RecordingReporter
from danlu_worker.runner import run_assignment
from danlu_worker.settings import WorkerSettings
from danlu_worker.spec import run_config

CPU = torch.device("cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_liger = pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel is GPU-only"
)


# --------------------------------------------------------------------------- master weights


def test_master_weights_update_like_fp32_adamw() -> None:
    """BF16 parameters with FP32 masters follow FP32 AdamW exactly (same gradients)."""
    torch.manual_seed(0)
    reference = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(3)]
    model = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in reference]
    masters = MasterWeights(model)
    # The masters start from the BF16 weights: give the reference the same start.
    with torch.no_grad():
        for r, m in zip(reference, masters.masters, strict=True):
            r.copy_(m)
    cfg = run_config(base_spec(learning_rate=1e-3))
    ref_opt = build_optimizer([{"params": reference, "weight_decay": 0.0}], cfg)
    opt = build_optimizer(masters.groups([{"params": model, "weight_decay": 0.0}]), cfg)
    for _ in range(5):
        grads = [torch.randn(16, 8) for _ in reference]
        for r, p, g in zip(reference, model, grads, strict=True):
            r.grad = g.clone()
            p.grad = g.to(torch.bfloat16)
        ref_opt.step()
        masters.gradients_to_masters()
        opt.step()
        masters.masters_to_model()
        assert all(p.grad is None for p in model)
    for r, m, p in zip(reference, masters.masters, model, strict=True):
        # gradients reached the masters through BF16: equal to rounding of the gradients
        torch.testing.assert_close(m, r, rtol=0, atol=2e-5)
        assert torch.equal(p, m.to(torch.bfloat16))


def test_master_weights_keep_updates_below_bf16_resolution() -> None:
    """Steps of 1e-3 on a weight of 1.0 are below BF16's resolution there (2^-7): pure BF16
    would never move; the masters accumulate them until the BF16 weight changes."""
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    masters = MasterWeights([weight])
    opt = torch.optim.SGD(masters.groups([{"params": [weight]}]), lr=1e-3)
    for _ in range(20):
        weight.grad = torch.ones(4, dtype=torch.bfloat16)
        masters.gradients_to_masters()
        opt.step()
        masters.masters_to_model()
    assert masters.masters[0][0].item() == pytest.approx(0.98, abs=1e-6)
    assert weight[0].item() < 1.0


def test_master_weights_save_and_load_round_trip(tmp_path: Path) -> None:
    params = [torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16)) for _ in range(2)]
    masters = MasterWeights(params)
    with torch.no_grad():
        masters.masters[0].add_(1e-4)  # below BF16 resolution: only the master holds it
    masters.save(tmp_path)
    fresh = MasterWeights([torch.nn.Parameter(torch.zeros(5, dtype=torch.bfloat16))] * 2)
    fresh.load(tmp_path)
    for a, b in zip(masters.masters, fresh.masters, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh.params[0], masters.masters[1].to(torch.bfloat16))


# --------------------------------------------------------------------------- plans and settings


def test_auto_uses_no_kernels_on_cpu() -> None:
    plan = plan_kernels("auto", model_type="qwen2", device=CPU)
    assert not plan.fused
    assert plan.describe() == "sdpa attention"


def test_auto_compiles_bf16_gpu_runs_without_deepspeed(monkeypatch) -> None:
    """What ``auto`` picks on a GPU (planning only: nothing runs on the device; liger-kernel,
    GPU-only, is taken to know Qwen2 and nothing else)."""
    import danlu_worker.kernels as kernels

    monkeypatch.setattr(kernels, "liger_supports", lambda model_type: model_type == "qwen2")
    gpu = torch.device("cuda")
    plan = plan_kernels("auto", model_type="qwen2", device=gpu, dtype=torch.bfloat16)
    assert plan.compile_layers and plan.fused_lora and plan.fused_loss
    assert not plan.liger_layers  # inductor fuses the norms and activations itself
    for other in (
        {"dtype": torch.bfloat16, "deepspeed": True},  # DeepSpeed: not measured compiled
        {"dtype": torch.float16},
        {"dtype": torch.float32},
        {"dtype": torch.bfloat16, "model_type": "custom_lm"},  # unknown architecture
    ):
        plan = plan_kernels("auto", **{"model_type": "qwen2", "device": gpu, **other})
        assert not plan.compile_layers, other
    assert plan_kernels("auto", model_type="qwen2", device=gpu, dtype=torch.float16).liger_layers


def test_explicit_liger_without_a_gpu_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as err:
        plan_kernels("liger", model_type="qwen2", device=CPU)
    assert err.value.reason == "KERNELS_UNAVAILABLE"
    assert "cpu" in err.value.message


def test_explicit_flash_attention_without_the_package_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as err:
        plan_kernels("none", model_type="qwen2", device=CPU, attention="flash_attention_2")
    assert "flash_attn" in err.value.message
    plan = plan_kernels("none", model_type="qwen2", device=CPU, attention="flex_attention")
    assert plan.attention == "flex_attention"


def test_flex_attention_builds_its_own_mask_unless_layers_are_windowed() -> None:
    from transformers import Qwen2Config

    flex = {"device": CPU, "attention": "flex_attention"}
    assert plan_kernels("none", model_type="qwen2", **flex).packed_block_mask
    assert not plan_kernels(
        "none", model_type="qwen2", **flex, windowed_layers=True
    ).packed_block_mask
    assert not plan_kernels("none", model_type="qwen2", device=CPU).packed_block_mask  # sdpa
    assert not has_windowed_layers(Qwen2Config(num_hidden_layers=4))
    windowed = Qwen2Config(num_hidden_layers=4, use_sliding_window=True, max_window_layers=2)
    assert has_windowed_layers(windowed)
    from transformers import Gemma3Config  # multimodal: the windows are in its text config

    assert has_windowed_layers(Gemma3Config())


def test_own_block_mask_keeps_packed_samples_apart(tiny_model_dir: Path) -> None:
    """FlexAttention with the worker's block mask computes what SDPA computes with the mask
    transformers derives from the positions (forward only: Flex has no CPU backward; the GPU
    test below covers gradients), and the samples really are kept apart. The rows span
    several 128-token blocks, with samples crossing block edges, a length that is not a
    multiple of 128 and, in the shorter row, padding (its own "sample", as collated)."""
    from transformers import AutoModelForCausalLM

    vocab = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size
    rows = [(200, 75, 25), (130, 90, 80)]  # the second row's 80: padding
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in rows])
    batch = Batch(
        input_ids=torch.randint(
            3, vocab, positions.shape, generator=torch.Generator().manual_seed(0)
        ),
        shift_labels=torch.full(positions.shape, IGNORE_INDEX),
        position_ids=positions,
        attention_mask=None,
        num_tokens=positions.numel() - 80,
    )
    logits = {}
    for plan in (KernelPlan(), KernelPlan(attention="flex_attention", packed_block_mask=True)):
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, attn_implementation=plan.attention
        ).eval()
        inputs = plan.attention_inputs(batch.model_inputs())
        assert ("attention_mask" in inputs) == plan.packed_block_mask
        with torch.no_grad():
            logits[plan.attention] = model(**inputs, use_cache=False).logits
        if not plan.packed_block_mask:
            with torch.no_grad():  # one sequence per row: attends across the samples
                unpacked = model(input_ids=batch.input_ids, use_cache=False).logits
    torch.testing.assert_close(logits["flex_attention"], logits["sdpa"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unpacked, logits["sdpa"], atol=1e-2)


def test_unknown_kernel_setting_names_the_variable() -> None:
    env = {
        "DANLU_WORKER_CONTROL_TARGET": "127.0.0.1:1",
        "DANLU_WORKER_JOB": "projects/p/trainingJobs/j",
        "DANLU_WORKER_ATTEMPT": "1",
        "DANLU_WORKER_TOKEN": "t",
        "DANLU_WORKER_OBJECT_STORE_URL": "file:///tmp/x",
        "DANLU_WORKER_KERNELS": "turbo",
    }
    with pytest.raises(InvalidArgument) as err:
        WorkerSettings.from_env({**env, "DANLU_WORKER_ATTENTION": "fast"})
    assert err.value.reason == "WORKER_SETTINGS_INVALID"
    assert [v.field for v in err.value.violations] == [
        "DANLU_WORKER_KERNELS",
        "DANLU_WORKER_ATTENTION",
    ]
    assert WorkerSettings.from_env({**env, "DANLU_WORKER_KERNELS": "Liger"}).kernels == "liger"


# --------------------------------------------------------------------------- model-level checks


def _packed_batch(vocab: int, *, seed: int) -> Batch:
    """Two rows of three packed samples each, a third of the targets ignored."""
    g = torch.Generator().manual_seed(seed)
    lengths = (40, 56, 32)
    ids = torch.randint(3, vocab, (2, sum(lengths)), generator=g)
    positions = torch.cat([torch.arange(n) for n in lengths]).repeat(2, 1)
    labels = torch.randint(3, vocab, (2, sum(lengths)), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.33] = IGNORE_INDEX
    return Batch(
        input_ids=ids,
        shift_labels=labels,
        position_ids=positions,
        attention_mask=None,
        num_tokens=ids.numel(),
    )


def _lora_model(model_dir: Path, device: torch.device, dtype: torch.dtype, mode: str | KernelPlan):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    plan = (
        mode
        if isinstance(mode, KernelPlan)
        else plan_kernels(mode, model_type="qwen2", device=device, dtype=dtype)
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation=plan.attention
    ).to(device)
    model.config.use_cache = False
    patch_model(model, plan)
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    with torch.no_grad():  # non-zero B, so the adapters contribute and get gradients
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
            if p.requires_grad:
                p.data = p.data.to(dtype)
    finish_model(model, plan)
    return model, plan


def _loss_and_grads(model, batch: Batch, device: torch.device, plan: KernelPlan):
    model.train()
    num_items = torch.tensor(float(batch.num_loss_tokens), device=device)
    loss = _loss(model, batch, num_items, device, plan)
    loss.backward()
    grads = {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach().float().cpu(), grads


def _assert_same_function(tiny_model_dir, device, dtype, mode, *, rtol: float) -> None:
    # The reference runs first: Liger patches module-level functions (RoPE) of transformers.
    reference, reference_plan = _lora_model(tiny_model_dir, device, dtype, KernelPlan())
    vocab = reference.config.vocab_size
    batches = [_packed_batch(vocab, seed=seed) for seed in (1, 2)]  # fresh inputs each time
    expected = []
    for batch in batches:
        expected.append(_loss_and_grads(reference, batch, device, reference_plan))
        reference.zero_grad(set_to_none=True)
    fast, plan = _lora_model(tiny_model_dir, device, dtype, mode)
    assert plan != KernelPlan()
    for batch, (ref_loss, ref_grads) in zip(batches, expected, strict=True):
        loss, grads = _loss_and_grads(fast, batch, device, plan)
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=0)
        for name, g in ref_grads.items():
            error = (grads[name] - g).norm() / g.norm().clamp(min=1e-12)
            assert error < rtol * 10, f"{name}: relative gradient error {error:.2e}"
        fast.zero_grad(set_to_none=True)


@pytest.fixture
def restore_transformers(monkeypatch):
    """Undo Liger's module-level patches of Qwen2 after the test."""
    from transformers.models.qwen2 import modeling_qwen2

    for name in ("apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP"):
        monkeypatch.setattr(modeling_qwen2, name, getattr(modeling_qwen2, name))


def test_fused_lora_add_matches_peft_on_cpu(tiny_model_dir: Path) -> None:
    _assert_same_function(
        tiny_model_dir, CPU, torch.float32, KernelPlan(fused_lora=True), rtol=1e-5
    )


def test_fused_lora_leaves_disabled_adapters_to_peft(tiny_model_dir: Path) -> None:
    model, _ = _lora_model(tiny_model_dir, CPU, torch.float32, KernelPlan(fused_lora=True))
    batch = _packed_batch(model.config.vocab_size, seed=3)
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():
            base = model(**batch.model_inputs()).logits
        adapted = model(**batch.model_inputs()).logits
        reference = model.get_base_model()(**batch.model_inputs()).logits
    assert not torch.allclose(base, adapted)  # the adapters contribute when enabled
    torch.testing.assert_close(adapted, reference)  # the base model object holds the LoRA layers
    from peft.tuners.lora import LoraLayer

    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    layer.enable_adapters(False)  # what disable_adapter() does: peft's forward takes over
    x = torch.randn(3, layer.in_features)
    torch.testing.assert_close(layer(x), layer.get_base_layer()(x))


# LoraLinear's two forms: one matmul over concatenations where the output is wider than the
# input plus the rank (28 -> 48, r=4: 32 columns) and the call has more tokens than that (the
# tests' 40), the adapter added in the epilogue otherwise (48 -> 28).
SHAPES = {"wide": (28, 48), "narrow": (48, 28)}
TOKENS = (4, 10)


def _lora_layer(*, dropout: float = 0.0, bias: bool = True, shape: str = "wide"):
    """One peft LoRA linear layer with non-zero B (FP64: exact comparisons on CPU)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(*SHAPES[shape], bias=bias)).double()
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=12, lora_dropout=dropout, target_modules=["0"])
    )
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return layer


def _forward_backward(layer, x: torch.Tensor, *, x_grad: bool = True):
    x = x.clone().requires_grad_(x_grad)
    out = layer(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    grads = [x.grad] if x_grad else []
    grads += [p.grad.clone() for p in layer.parameters() if p.requires_grad]
    layer.zero_grad(set_to_none=True)
    return out.detach(), grads, out.grad_fn


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("trainable", ["x,A,B", "A,B", "x,B", "B"])
def test_fused_lora_autograd_matches_peft(bias: bool, shape: str, trainable: str) -> None:
    """:class:`LoraLinear`, in both forms, gives peft's output and gradients for whichever
    of the input, A and B need them (the first layer's input needs none; a frozen A)."""
    layer = _lora_layer(bias=bias, shape=shape)
    a = layer.lora_A["default"].weight
    a.requires_grad_("A" in trainable)
    wide = lora_as_one_matmul(layer.base_layer.weight, a, tokens=TOKENS[0] * TOKENS[1])
    assert wide == (shape == "wide")
    assert not lora_as_one_matmul(layer.base_layer.weight, a, tokens=1)  # generation's steps
    x = torch.randn(*TOKENS, layer.in_features, dtype=torch.float64)
    x_grad = "x" in trainable
    expected, expected_grads, _ = _forward_backward(layer, x, x_grad=x_grad)
    assert fuse_lora(layer) == 1
    out, grads, grad_fn = _forward_backward(layer, x, x_grad=x_grad)
    assert "LoraLinear" in type(grad_fn).__name__  # the fused path ran, not a fallback
    torch.testing.assert_close(out, expected)
    assert len(grads) == len(expected_grads) == len(trainable.split(","))  # base frozen
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
    out = layer(x)
    out.mul_(2)  # not a view of the Function's internals: later in-place ops are allowed
    torch.testing.assert_close(out, 2 * expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("trainable_bias", "shape"),
    [(False, "wide"), (False, "narrow"), (True, "wide")],
    ids=["LoraLinear-wide", "LoraLinear-narrow", "lora_addmm"],
)
def test_compiled_fused_lora_matches_peft(trainable_bias: bool, shape: str) -> None:
    """Inside a compiled graph the fused forms switch to functional ops (in-place writes
    become copies there); output and gradients stay peft's. A trainable base bias sends the
    layer to :func:`lora_addmm` instead of :class:`LoraLinear`."""
    layer = _lora_layer(shape=shape)
    layer.base_layer.bias.requires_grad_(trainable_bias)
    x = torch.randn(*TOKENS, layer.in_features, dtype=torch.float64)
    expected, expected_grads, _ = _forward_backward(layer, x)
    fuse_lora(layer)
    out, grads, _ = _forward_backward(torch.compile(layer), x)
    torch.testing.assert_close(out, expected)
    assert len(grads) == len(expected_grads) == 3 + trainable_bias
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_fused_lora_with_dropout_falls_back_to_the_addmm_forward() -> None:
    """Dropout draws a mask the fused backward does not know: training with dropout takes
    the forward-only fusion, which still matches peft given the same random draws."""
    layer = _lora_layer(dropout=0.5)
    x = torch.randn(3, layer.in_features, dtype=torch.float64)
    torch.manual_seed(7)
    expected, expected_grads, _ = _forward_backward(layer, x)
    fuse_lora(layer)
    torch.manual_seed(7)
    out, grads, grad_fn = _forward_backward(layer, x)
    assert "LoraLinear" not in type(grad_fn).__name__
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
    layer.eval()  # no dropout at evaluation: the fused path again
    with torch.no_grad():
        torch.testing.assert_close(layer(x), type(layer).forward(layer, x))


def test_zero3_plans_no_weight_reading_fusions() -> None:
    """ZeRO-3 gathers a module's weights only inside its own forward: the fused loss and the
    fused LoRA (which read the head's, the adapters' and the base layer's weights) stay off."""
    plan = plan_kernels("compile", model_type="qwen2", device=CPU, zero3=True)
    assert plan.compile_layers and not plan.fused_lora and not plan.fused_loss
    assert plan_kernels("compile", model_type="qwen2", device=CPU).fused_lora


@pytest.mark.slow
def test_compiled_layers_match_eager_on_cpu(tiny_model_dir: Path) -> None:
    _assert_same_function(tiny_model_dir, CPU, torch.float32, "compile", rtol=1e-4)


@pytest.mark.gpu
@needs_gpu
@needs_liger
@pytest.mark.usefixtures("restore_transformers")
def test_liger_kernels_match_the_reference_on_gpu(tiny_model_dir: Path) -> None:
    _assert_same_function(tiny_model_dir, torch.device("cuda"), torch.bfloat16, "liger", rtol=2e-2)


@pytest.mark.gpu
@needs_gpu
def test_flex_attention_on_packed_rows_matches_sdpa_on_gpu(tiny_model_dir: Path) -> None:
    """FlexAttention's block mask keeps packed samples apart exactly like SDPA's dense mask."""
    plan = plan_kernels(
        "none", model_type="qwen2", device=torch.device("cuda"), dtype=torch.bfloat16
    )
    assert plan.attention == "flex_attention"  # the GPU default without flash_attn
    assert plan.packed_block_mask  # the worker's own mask, gradients included
    _assert_same_function(tiny_model_dir, torch.device("cuda"), torch.bfloat16, plan, rtol=2e-2)


@pytest.mark.gpu
@needs_gpu
def test_compiled_layers_match_eager_on_gpu(tiny_model_dir: Path) -> None:
    _assert_same_function(
        tiny_model_dir, torch.device("cuda"), torch.bfloat16, "compile", rtol=2e-2
    )


# --------------------------------------------------------------------------- the real worker


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_worker_with_compiled_layers_trains_like_eager(
    make_assignment, store, cache_dir, checkpointing: bool
) -> None:
    """The whole worker (evaluation answers included, run eagerly) with ``compile``: the same
    losses as without, step by step; also with gradient checkpointing (the spec's default,
    so what ``auto`` compiles on a GPU unless the job turns it off)."""
    losses = {}
    spec = base_spec(max_steps=4)
    spec.lora.dropout = 0.0  # compiled dropout draws other random numbers than eager's
    spec.optimization.gradient_checkpointing = checkpointing
    for mode in ("none", "compile"):
        reporter = RecordingReporter()
        run_assignment(
            make_assignment(identity_records(), spec=spec),
            store=store,
            reporter=reporter,
            cache_dir=cache_dir / mode,
            kernels=mode,
        )
        losses[mode] = [m.loss for m in reporter.metric_events]
        assert reporter.evaluations, "evaluation answers ran"
        assert any(("compiled" in msg) == (mode == "compile") for _, msg in reporter.logs)
    assert losses["compile"] == pytest.approx(losses["none"], rel=2e-4)


class GraphCountingReporter(RecordingReporter):
    """Records how many graphs dynamo has compiled so far at each metrics event."""

    def __init__(self) -> None:
        super().__init__()
        self.graphs: list[int] = []

    def metrics(self, metrics) -> None:
        from torch._dynamo.utils import counters

        super().metrics(metrics)
        self.graphs.append(counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_compiled_layers_compile_once_across_widths_and_epochs(
    make_assignment, store, cache_dir
) -> None:
    """Packed rows of different widths and an epoch's short last micro-batch reach the
    compiled layers in one shape (``micro_batch_size`` x ``max_length``): no graph is
    compiled after the first steps."""
    import torch._dynamo

    spec = base_spec(max_steps=0, epochs=2, micro_batch_size=5)
    spec.lora.dropout = 0.0
    spec.data.max_length = 48
    torch._dynamo.reset()
    reporter = GraphCountingReporter()
    run_assignment(
        make_assignment(mixed_records(), spec=spec),
        store=store,
        reporter=reporter,
        cache_dir=cache_dir,
        kernels="compile",
    )
    data = next(msg for _, msg in reporter.logs if msg.startswith("data:"))
    rows = int(data.split(" rows of at most")[0].rsplit(" ", 1)[1])
    assert rows % 5, f"the data must leave a short last micro-batch: {data}"
    assert len(reporter.graphs) == 2 * -(-rows // 5)  # two epochs of micro-batches
    assert reporter.graphs[0] > 0
    assert reporter.graphs[-1] == reporter.graphs[0], reporter.graphs

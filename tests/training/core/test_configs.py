"""Built-in training configs (danlu_training.core.configs): every shipped file parses,
round-trips and resolves, and `configs ls -p` / `configs copy` find them."""

from __future__ import annotations

import re

import pytest

from danlu.training.v1.training_job_pb2 import DeepspeedStage, Precision, TrainingTask
from danlu_kit.errors import NotFound
from danlu_training.core.configs import BuiltinConfig, get_config, list_configs
from danlu_training.core.spec import (
    Capabilities,
    DatasetFacts,
    ModelFacts,
    parse_spec_yaml,
    qualify_names,
    resolve_spec,
    spec_to_yaml,
    total_steps,
    weighted_sample_counts,
)

SHIPPED = {
    "internlm2_1_8b_qlora_alpaca_e3",
    "internlm2_1_8b_lora_alpaca_e3",
    "internlm2_1_8b_full_alpaca_e3",
    "internlm2_chat_1_8b_qlora_personal_assistant_e3",
    "qwen2_5_0_5b_instruct_lora_alpaca_e3",
    "qwen2_5_1_5b_instruct_qlora_alpaca_e3",
    "qwen2_5_7b_instruct_qlora_zero2_alpaca_e3",
    "llama3_8b_instruct_qlora_alpaca_e3",
    "llama3_8b_instruct_lora_zero3_alpaca_e3",
    "tiny_lora_cpu",
}

# What the registry would report for the models the configs name: (context, has template).
MODELS = {
    "internlm2-1_8b": (32768, False),  # the base model: the config names internlm2_chat
    "internlm2-chat-1_8b": (32768, True),
    "qwen2.5-0.5b-instruct": (32768, True),
    "qwen2.5-1.5b-instruct": (32768, True),
    "qwen2.5-7b-instruct": (32768, True),
    "llama3-8b-instruct": (8192, True),
    "tiny": (512, True),
}
DATASETS = {"alpaca": ("chat", 52_002), "assistant": ("chat", 10_000)}
GPU_BOX = Capabilities(cuda=True, gpus=8, bitsandbytes=True, deepspeed=True)
CPU_BOX = Capabilities(cuda=False, gpus=0, bitsandbytes=False, deepspeed=False)


def resolve_config(config: BuiltinConfig, caps: Capabilities):
    spec = qualify_names(config.spec, "p")
    context, has_template = MODELS[config.spec.base_model]
    model = ModelFacts(spec.base_model, "sha256:" + "a" * 64, "x", context, has_template)
    datasets = []
    for src in config.spec.datasets:
        task, records = DATASETS[src.dataset]
        datasets.append(
            DatasetFacts(f"projects/p/datasets/{src.dataset}/versions/v1", task, records)
        )
    resolved = resolve_spec(
        spec, model=model, datasets=datasets, validation=None, capabilities=caps, seed=123
    )
    return resolved, datasets


def test_the_documented_configs_ship():
    assert {c.name for c in list_configs()} == SHIPPED


@pytest.mark.parametrize("config", list_configs(), ids=lambda c: c.name)
def test_every_shipped_config_is_valid(config: BuiltinConfig):
    # It parses (list_configs already did) and round-trips through the human form.
    assert parse_spec_yaml(config.yaml_text) == config.spec
    assert parse_spec_yaml(spec_to_yaml(config.spec)) == config.spec
    # It resolves against plausible registry facts on the hardware it is meant for.
    caps = CPU_BOX if config.name.endswith("_cpu") else GPU_BOX
    resolved, datasets = resolve_config(config, caps)
    assert resolved.task == TrainingTask.TRAINING_TASK_SFT
    assert parse_spec_yaml(spec_to_yaml(resolved)) == resolved
    assert total_steps(resolved, sum(weighted_sample_counts(resolved, datasets))) > 0


@pytest.mark.parametrize("config", list_configs(), ids=lambda c: c.name)
def test_every_shipped_config_is_documented(config: BuiltinConfig):
    assert config.description and config.summary
    # It says what to push under the names it uses.
    assert re.search(
        rf"danlu models push \S+ --name {re.escape(config.spec.base_model)}\b", config.description
    )
    for src in config.spec.datasets:
        assert re.search(
            rf"danlu datasets push \S+ --name {re.escape(src.dataset)}\b", config.description
        )
    assert f"danlu configs copy {config.name} " in config.description
    # Every top-level section is introduced by a comment.
    lines = config.yaml_text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            above = next(x for x in reversed(lines[:i]) if x.strip())
            assert above.lstrip().startswith("#"), f"{config.name}: {line!r} has no comment"


def test_the_gpu_configs_need_a_gpu():
    # Nothing but the tiny config pretends to run on CPU.
    for config in list_configs():
        if config.name == "tiny_lora_cpu":
            continue
        with pytest.raises(Exception) as info:
            resolve_config(config, CPU_BOX)
        assert getattr(info.value, "reason", "") == "CAPABILITY_MISSING", config.name


def test_tiny_lora_cpu_is_the_demo_config():
    config = get_config("tiny_lora_cpu")
    resolved, _ = resolve_config(config, CPU_BOX)
    assert resolved.base_model == "projects/p/models/tiny"
    assert resolved.datasets[0].dataset == "projects/p/datasets/assistant/versions/v1"
    lora = resolved.lora
    assert (lora.r, lora.alpha, list(lora.target_modules)) == (8, 16, ["all-linear"])
    assert (resolved.data.max_length, resolved.data.packing) == (256, True)
    opt = resolved.optimization
    assert opt.max_steps == 30 and opt.micro_batch_size == 4
    assert opt.gradient_accumulation_steps == 1 and opt.learning_rate == 1e-2
    assert opt.precision == Precision.PRECISION_FP32 and opt.seed == 0
    ev = resolved.evaluation
    assert list(ev.prompts) == ["请介绍一下你自己"]
    assert (ev.every_n_steps, ev.max_new_tokens) == (10, 32)
    assert (resolved.checkpoint.every_n_steps, resolved.checkpoint.keep) == (10, 2)
    assert resolved.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_NONE
    assert resolved.resources.gpus_per_node == 0


def test_personal_assistant_dilutes_identity_data():
    config = get_config("internlm2_chat_1_8b_qlora_personal_assistant_e3")
    resolved, datasets = resolve_config(config, GPU_BOX)
    # 10,000 identity records at weight 0.2 + Alpaca capped at 10,000.
    assert weighted_sample_counts(resolved, datasets) == [2_000, 10_000]
    assert list(resolved.evaluation.prompts) == ["请介绍一下你自己", "Please introduce yourself"]
    assert resolved.evaluation.every_n_steps == 300
    assert resolved.checkpoint.every_n_steps == 300
    assert resolved.WhichOneof("method") == "qlora"


def test_the_internlm2_base_model_names_its_template():
    # internlm2-1_8b's tokenizer has no chat template (MODELS says so): resolving works only
    # because the config names internlm2_chat, as XTuner's prompt_template does.
    for name in ("internlm2_1_8b_qlora_alpaca_e3", "internlm2_1_8b_lora_alpaca_e3"):
        resolved, _ = resolve_config(get_config(name), GPU_BOX)
        assert resolved.data.chat_template == "internlm2_chat"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "internlm2_1_8b",
            {
                "internlm2_1_8b_qlora_alpaca_e3",
                "internlm2_1_8b_lora_alpaca_e3",
                "internlm2_1_8b_full_alpaca_e3",
            },
        ),
        ("InternLM2_Chat", {"internlm2_chat_1_8b_qlora_personal_assistant_e3"}),
        (
            "zero",
            {
                "qwen2_5_7b_instruct_qlora_zero2_alpaca_e3",
                "llama3_8b_instruct_lora_zero3_alpaca_e3",
            },
        ),
        ("llama3*qlora*", {"llama3_8b_instruct_qlora_alpaca_e3"}),
        ("*_cpu", {"tiny_lora_cpu"}),
        ("no-such-thing", set()),
        ("", SHIPPED),
    ],
)
def test_list_configs_by_pattern(pattern, expected):
    names = [c.name for c in list_configs(pattern)]
    assert set(names) == expected and names == sorted(names)


@pytest.mark.parametrize(
    "name", ["tiny_lora_cpu", "trainingConfigs/tiny_lora_cpu", "tiny_lora_cpu.yaml"]
)
def test_get_config(name):
    config = get_config(name)
    assert config.name == "tiny_lora_cpu"
    assert config.resource_name == "trainingConfigs/tiny_lora_cpu"
    assert config.yaml_text.startswith("# Tiny LoRA run on CPU")


def test_unknown_config_suggests_close_names():
    with pytest.raises(NotFound) as info:
        get_config("internlm2_1_8b_qlora_alpaca")
    err = info.value
    assert err.reason == "CONFIG_NOT_FOUND"
    assert "internlm2_1_8b_qlora_alpaca_e3" in str(err)
    assert "internlm2_1_8b_qlora_alpaca_e3" in err.metadata["suggestions"]


def test_configs_hand_out_independent_specs():
    first = get_config("tiny_lora_cpu")
    first.spec.base_model = "changed"
    assert get_config("tiny_lora_cpu").spec.base_model == "tiny"

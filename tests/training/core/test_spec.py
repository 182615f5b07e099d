"""The training spec: YAML <-> proto, --set overrides, names, defaults and validation
(danlu_training.core.spec)."""

from __future__ import annotations

import math
from textwrap import dedent

import pytest

from danlu.training.v1.training_job_pb2 import (
    DatasetSource,
    DeepspeedStage,
    LrScheduler,
    Precision,
    QuantType,
    TrainingJobSpec,
    TrainingTask,
)
from danlu_kit.errors import FailedPrecondition, InvalidArgument
from danlu_training.core.spec import (
    Capabilities,
    DatasetFacts,
    ModelFacts,
    apply_overrides,
    parse_spec_yaml,
    qualify_names,
    resolve_spec,
    spec_to_yaml,
    total_steps,
    validate_named_template,
    weighted_sample_counts,
)

CPU = Capabilities(cuda=False, gpus=0, bitsandbytes=False, deepspeed=False)
GPU = Capabilities(cuda=True, gpus=8, bitsandbytes=True, deepspeed=True)
TINY = ModelFacts("projects/p/models/tiny", "sha256:" + "0" * 64, "qwen2", 512, True)
MINIMAL = "base_model: tiny\ndatasets: [assistant]\n"


def parse(text: str) -> TrainingJobSpec:
    return parse_spec_yaml(dedent(text))


def facts(name: str = "assistant", task: str = "chat", records: int = 1000) -> DatasetFacts:
    return DatasetFacts(f"projects/p/datasets/{name}/versions/v1", task, records)


def resolve(
    spec: TrainingJobSpec | str,
    *,
    model: ModelFacts = TINY,
    datasets: list[DatasetFacts] | None = None,
    validation: DatasetFacts | None = None,
    caps: Capabilities = CPU,
    seed: int = 1234,
) -> TrainingJobSpec:
    spec = parse(spec) if isinstance(spec, str) else spec
    spec = qualify_names(spec, "p")
    if datasets is None:
        datasets = [facts(s.dataset.split("/")[3]) for s in spec.datasets]
    if validation is None and spec.data.HasField("validation_dataset"):
        validation = facts(spec.data.validation_dataset.dataset.split("/")[3])
    return resolve_spec(
        spec, model=model, datasets=datasets, validation=validation, capabilities=caps, seed=seed
    )


def fields(err: InvalidArgument | FailedPrecondition) -> dict[str, str]:
    return {v.field: v.description for v in err.violations}


def parse_error(text: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    assert info.value.reason == "SPEC_INVALID"
    return fields(info.value)


def resolve_error(spec: TrainingJobSpec | str, **kwargs) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        resolve(spec, **kwargs)
    assert info.value.reason == "SPEC_INVALID"
    return fields(info.value)


def precondition(spec: TrainingJobSpec | str, reason: str, **kwargs) -> dict[str, str]:
    with pytest.raises(FailedPrecondition) as info:
        resolve(spec, **kwargs)
    assert info.value.reason == reason
    return fields(info.value)


# ---- parsing -------------------------------------------------------------------------------
def test_yaml_maps_onto_the_proto_fields():
    spec = parse(
        """
        base_model: tiny
        datasets:
          - assistant@abc123
          - {dataset: alpaca, weight: 0.5, max_samples: 100}
        task: sft
        method:
          qlora:
            lora: {r: 16, alpha: 32, dropout: 0.1, target_modules: [q_proj, v_proj]}
            quant_type: fp4
            double_quant: false
            compute_dtype: bf16
        data:
          max_length: 1024
          packing: false
          chat_template: qwen_chat
          system_prompt: Be brief.
          shuffle: false
          validation_split: 0.05
        optimization:
          max_steps: 100
          micro_batch_size: 2
          gradient_accumulation_steps: 8
          learning_rate: 1e-4
          warmup_ratio: 0.1
          lr_scheduler: linear
          adam_beta1: 0.8
          adam_beta2: 0.95
          weight_decay: 0.01
          max_grad_norm: 0
          precision: fp16
          gradient_checkpointing: false
          seed: 42
        deepspeed: zero2_offload
        evaluation: {prompts: ["Who are you?"], system: Be kind., every_n_steps: 20, max_new_tokens: 64}
        checkpoint: {every_n_steps: 50, keep: -1}
        resources: {gpus_per_node: 2, nodes: 1}
        """
    )
    assert spec.base_model == "tiny"
    assert [d.dataset for d in spec.datasets] == ["assistant@abc123", "alpaca"]
    assert spec.datasets[1].weight == 0.5 and spec.datasets[1].max_samples == 100
    assert spec.task == TrainingTask.TRAINING_TASK_SFT
    assert spec.WhichOneof("method") == "qlora"
    assert list(spec.qlora.lora.target_modules) == ["q_proj", "v_proj"]
    assert spec.qlora.quant_type == QuantType.QUANT_TYPE_FP4
    assert spec.qlora.HasField("double_quant") and not spec.qlora.double_quant
    assert spec.qlora.compute_dtype == Precision.PRECISION_BF16
    assert spec.data.validation_split == 0.05 and not spec.data.packing
    assert spec.optimization.learning_rate == 1e-4  # `1e-4` is a string to YAML 1.1
    assert spec.optimization.WhichOneof("duration") == "max_steps"
    assert spec.optimization.HasField("max_grad_norm") and spec.optimization.max_grad_norm == 0
    assert spec.optimization.lr_scheduler == LrScheduler.LR_SCHEDULER_LINEAR
    assert spec.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_ZERO2_OFFLOAD
    assert list(spec.evaluation.prompts) == ["Who are you?"]
    assert spec.checkpoint.keep == -1


@pytest.mark.parametrize("method", ["method: full", "method: {full: {}}", "method:\n  full:\n"])
def test_method_spellings(method):
    assert parse(MINIMAL + method).WhichOneof("method") == "full"


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("bf16", Precision.PRECISION_BF16),
        ("BF16", Precision.PRECISION_BF16),
        ("bfloat16", Precision.PRECISION_BF16),
        ("PRECISION_FP16", Precision.PRECISION_FP16),
        ("float32", Precision.PRECISION_FP32),
    ],
)
def test_enum_spellings(written, value):
    spec = parse(MINIMAL + f"optimization: {{precision: {written}}}")
    assert spec.optimization.precision == value


def test_xtuner_deepspeed_names_are_accepted():
    spec = parse(MINIMAL + "deepspeed: deepspeed_zero3_offload")
    assert spec.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_ZERO3_OFFLOAD


def test_target_modules_accepts_a_single_string():
    spec = parse(MINIMAL + "method: {lora: {target_modules: all-linear}}")
    assert list(spec.lora.target_modules) == ["all-linear"]


@pytest.mark.parametrize(
    ("yaml_text", "field", "hint", "line"),
    [
        ("optimization:\n  learning_rte: 1e-4\n", "optimization.learning_rte", "learning_rate", 4),
        ("learning_rate: 1e-4\n", "learning_rate", "optimization.learning_rate", 3),
        ("method:\n  lora:\n    alhpa: 8\n", "method.lora.alhpa", "alpha", 5),
        ("method:\n  qlora:\n    quant_typ: nf4\n", "method.qlora.quant_typ", "quant_type", 5),
        (
            "method:\n  qlora:\n    lora: {dropuot: 0.1}\n",
            "method.qlora.lora.dropuot",
            "dropout",
            5,
        ),
        (
            "data:\n  validation_dataset: {dataset: v, wieght: 1}\n",
            "data.validation_dataset.wieght",
            "weight",
            4,
        ),
        ("evaluation:\n  prompt: [hi]\n", "evaluation.prompt", "prompts", 4),
        ("lora: {r: 8}\n", "lora", "method: {lora", 3),
        ("checkpoints: {keep: 2}\n", "checkpoints", "checkpoint", 3),
        ("optimization:\n  lr: 1e-4\n", "optimization.lr", "optimization.learning_rate", 4),
        ("save_total_limit: 2\n", "save_total_limit", "checkpoint.keep", 3),
    ],
)
def test_unknown_keys_name_the_path_and_suggest(yaml_text, field, hint, line):
    problems = parse_error(MINIMAL + yaml_text)  # MINIMAL is two lines
    assert list(problems) == [field]
    assert "unknown key" in problems[field] and hint in problems[field]
    assert problems[field].startswith(f"line {line}: ")


def test_unknown_key_inside_a_dataset_list_names_the_index():
    problems = parse_error(
        """
        base_model: tiny
        datasets:
          - assistant
          - dataset: alpaca
            wieght: 2
        """
    )
    assert list(problems) == ["datasets[1].wieght"]
    assert problems["datasets[1].wieght"].startswith("line 6:")
    assert "did you mean weight?" in problems["datasets[1].wieght"]


def test_every_problem_is_reported_at_once_in_line_order():
    with pytest.raises(InvalidArgument) as info:
        parse(
            """
            base_model: tiny
            datasets: [assistant]
            optimization:
              learning_rte: 1e-4
              precision: bf17
              epochs: 1
              max_steps: 10
            data: {max_length: long, packing: yes please}
            deepspeed: zero4
            """
        )
    err = info.value
    assert err.reason == "SPEC_INVALID" and err.code_name == "INVALID_ARGUMENT"
    problems = fields(err)
    assert list(problems) == [
        "optimization.learning_rte",
        "optimization.precision",
        "optimization.max_steps",
        "data.max_length",
        "data.packing",
        "deepspeed",
    ]
    assert "did you mean bf16?" in problems["optimization.precision"]
    assert "epochs and max_steps are alternatives" in problems["optimization.max_steps"]
    assert "whole number" in problems["data.max_length"]
    assert "true or false" in problems["data.packing"]
    assert "zero2_offload" in problems["deepspeed"]  # the valid names are listed
    assert "learning_rte" in str(err)


def test_validation_split_and_dataset_are_alternatives():
    problems = parse_error(MINIMAL + "data: {validation_split: 0.1, validation_dataset: held-out}")
    assert "alternatives" in problems["data.validation_dataset"]


@pytest.mark.parametrize(
    ("method", "field", "words"),
    [
        ("method: {lora: {}, qlora: {}}", "method.qlora", "exactly one"),
        ("method: {}", "method", "choose one"),
        ("method: {lorra: {}}", "method.lorra", "did you mean lora?"),
        ("method: qlroa", "method", "did you mean qlora?"),
        ("method: [lora]", "method", "mapping"),
        ("method: {full: {r: 8}}", "method.full.r", "unknown key"),
    ],
)
def test_method_is_a_tagged_choice(method, field, words):
    problems = parse_error(MINIMAL + method)
    assert words in problems[field]


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("optimization: {learning_rate: 0}", "optimization.learning_rate"),
        ("datasets: [{dataset: a, weight: 0}]", "datasets[0].weight"),
        ("method: {lora: {r: 0}}", "method.lora.r"),
        ("checkpoint: {keep: 0}", "checkpoint.keep"),
        ("data: {max_length: 0}", "data.max_length"),
    ],
)
def test_explicit_zeros_are_not_silently_defaulted(yaml_text, field):
    text = "base_model: tiny\n" + (
        yaml_text if "datasets" in yaml_text else "datasets: [a]\n" + yaml_text
    )
    problems = parse_error(text)
    assert field in problems and ("> 0" in problems[field] or ">= 1" in problems[field])


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("datasets: 5", "datasets", "must be a list"),
        ("datasets: [{weight: 2}]", "datasets[0].dataset", "required"),
        ("datasets: [[a]]", "datasets[0]", "dataset name"),
        ("data: {max_length: 12.5}", "data.max_length", "whole number"),
        ("data: {chat_template: 5}", "data.chat_template", "string"),
        ("optimization: {learning_rate: fast}", "optimization.learning_rate", "number"),
        ("optimization: {learning_rate: .inf}", "optimization.learning_rate", "finite"),
        ("optimization: {seed: 99999999999999999999}", "optimization.seed", "out of range"),
        ("evaluation: {prompts: {a: 1}}", "evaluation.prompts", "must be a list"),
        ("evaluation: [hi]", "evaluation", "mapping"),
    ],
)
def test_wrong_types_are_reported(yaml_text, field, words):
    text = "base_model: tiny\n" + (
        yaml_text if "datasets" in yaml_text else "datasets: [a]\n" + yaml_text
    )
    problems = parse_error(text)
    assert words in problems[field], problems


def test_yaml_syntax_errors_say_where():
    with pytest.raises(InvalidArgument) as info:
        parse_spec_yaml("base_model: tiny\ndatasets: [a\n", source="train.yaml")
    problems = fields(info.value)
    assert "line 3" in problems["train.yaml"] and "not valid YAML" in problems["train.yaml"]
    assert str(info.value).startswith("train.yaml is not a valid training config")


def test_empty_and_non_mapping_documents():
    assert "empty" in parse_error("# only a comment\n")[""]
    assert "mapping" in parse_error("- a\n- b\n")[""]


def test_duplicate_keys_are_errors():
    problems = parse_error(MINIMAL + "base_model: other\n")
    assert "given twice" in problems["base_model"]


# ---- YAML <-> proto round trip --------------------------------------------------------------
def full_spec() -> TrainingJobSpec:
    spec = TrainingJobSpec(base_model="projects/p/models/tiny", task=TrainingTask.TRAINING_TASK_SFT)
    spec.datasets.add(dataset="assistant")
    spec.datasets.add(dataset="alpaca@v3", weight=0.25, max_samples=10)
    spec.qlora.lora.r = 4
    spec.qlora.lora.dropout = 0.0
    spec.qlora.lora.target_modules.extend(["q_proj", "k_proj"])
    spec.qlora.double_quant = False
    spec.qlora.compute_dtype = Precision.PRECISION_FP32
    spec.data.max_length = 128
    spec.data.packing = False
    spec.data.system_prompt = "多行\n系统提示: 'quoted' \"too\""
    spec.data.validation_dataset.dataset = "held-out"
    spec.optimization.max_steps = 7
    spec.optimization.learning_rate = 3.5e-5
    spec.optimization.weight_decay = 0.0
    spec.optimization.seed = 0
    spec.deepspeed = DeepspeedStage.DEEPSPEED_STAGE_ZERO3
    spec.evaluation.prompts.extend(["请介绍一下你自己", "Who are you?"])
    spec.checkpoint.keep = -1
    spec.resources.SetInParent()
    return spec


def test_spec_to_yaml_round_trips():
    spec = full_spec()
    text = spec_to_yaml(spec)
    assert "method:\n  qlora:" in text and "请介绍一下你自己" in text
    assert "precision" not in text  # unset stays unset
    assert parse_spec_yaml(text) == spec


def test_round_trip_keeps_zero_valued_oneofs_and_full():
    spec = TrainingJobSpec(base_model="m")
    spec.datasets.add(dataset="d")
    spec.full.SetInParent()
    spec.data.validation_split = 0.0  # set, but 0: the resolver turns it into "none"
    spec.optimization.epochs = 0
    text = spec_to_yaml(spec)
    assert "full: {}" in text
    assert parse_spec_yaml(text) == spec


def test_resolved_spec_round_trips():
    resolved = resolve(full_spec(), caps=GPU)
    assert parse_spec_yaml(spec_to_yaml(resolved)) == resolved


# ---- --set overrides --------------------------------------------------------------------------
def test_overrides():
    spec = parse(
        """
        base_model: tiny
        datasets: [assistant, {dataset: alpaca, weight: 2}]
        method: {qlora: {lora: {r: 8}}}
        optimization: {epochs: 3, seed: 5}
        """
    )
    out = apply_overrides(
        spec,
        [
            "method.qlora.lora.r=16",
            "optimization.learning_rate=1e-4",
            "datasets[1].weight=0.5",
            "datasets.0.max_samples=100",
            "evaluation.prompts=[你好, hi]",
            "optimization.seed=",
            "data.chat_template=chatml",
        ],
    )
    assert out.qlora.lora.r == 16
    assert out.optimization.learning_rate == 1e-4
    assert out.datasets[1].weight == 0.5
    assert out.datasets[0].dataset == "assistant" and out.datasets[0].max_samples == 100
    assert list(out.evaluation.prompts) == ["你好", "hi"]
    assert not out.optimization.HasField("seed")  # an empty value removes the key
    assert out.optimization.epochs == 3
    assert out.data.chat_template == "chatml"
    assert spec.qlora.lora.r == 8  # the input is not modified


def test_override_switches_method_and_duration():
    spec = parse(MINIMAL + "method: {lora: {r: 8}}\noptimization: {epochs: 2}")
    out = apply_overrides(spec, ["method=full", "optimization.epochs=", "optimization.max_steps=9"])
    assert out.WhichOneof("method") == "full"
    assert out.optimization.WhichOneof("duration") == "max_steps"


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        (
            "optimization.learning_rte=1e-4",
            "optimization.learning_rte",
            "did you mean learning_rate?",
        ),
        ("optimization.epochs=three", "optimization.epochs", "whole number"),
        ("method.lora.r=16", "method.lora.r", "method.qlora.lora.r"),
        ("datasets[5].weight=2", "datasets[5].weight", "only 1 entries"),
        ("no_equals_sign", "no_equals_sign", "KEY=VALUE"),
        ("optimization.learning_rate=0", "optimization.learning_rate", "> 0"),
    ],
)
def test_bad_overrides_name_the_key(override, field, words):
    spec = parse(MINIMAL + "method: {qlora: {}}")
    with pytest.raises(InvalidArgument) as info:
        apply_overrides(spec, [override])
    assert info.value.reason == "SPEC_INVALID"
    problems = fields(info.value)
    assert words in problems[field], problems
    assert "--set" in problems[field]


# ---- names ------------------------------------------------------------------------------------
def test_qualify_names():
    spec = parse(
        """
        base_model: tiny
        datasets:
          - assistant@abc123
          - alpaca
          - projects/other/datasets/corpus
          - projects/p/datasets/x/versions/v9
        data: {validation_dataset: held-out@v2}
        """
    )
    out = qualify_names(spec, "p")
    assert out.base_model == "projects/p/models/tiny"
    assert [d.dataset for d in out.datasets] == [
        "projects/p/datasets/assistant/versions/abc123",
        "projects/p/datasets/alpaca/versions/latest",
        "projects/other/datasets/corpus/versions/latest",
        "projects/p/datasets/x/versions/v9",
    ]
    assert out.data.validation_dataset.dataset == "projects/p/datasets/held-out/versions/v2"
    assert spec.base_model == "tiny"  # a new spec
    assert qualify_names(out, "p") == out  # idempotent


def test_qualify_names_rejects_malformed_names():
    spec = TrainingJobSpec(base_model="Qwen/Qwen2.5-7B")
    spec.datasets.add(dataset="a@b@c")
    spec.datasets.add(dataset="projects/p/models/x")
    with pytest.raises(InvalidArgument) as info:
        qualify_names(spec, "p")
    assert set(fields(info.value)) == {"base_model", "datasets[0].dataset", "datasets[1].dataset"}
    with pytest.raises(InvalidArgument):
        qualify_names(TrainingJobSpec(), "p")  # base_model and datasets are required


def test_named_templates():
    assert validate_named_template("qwen_chat") == "chatml"
    assert validate_named_template("internlm2_chat") == "internlm2_chat"
    with pytest.raises(InvalidArgument) as info:
        validate_named_template("llama3chat")
    assert info.value.reason == "SPEC_INVALID"
    assert "did you mean llama3_chat?" in fields(info.value)["data.chat_template"]


# ---- defaults ---------------------------------------------------------------------------------
def test_defaults_on_cpu():
    out = resolve(MINIMAL, seed=77)
    assert out.base_model == "projects/p/models/tiny"
    assert out.datasets[0].dataset == "projects/p/datasets/assistant/versions/v1"  # pinned
    assert out.datasets[0].weight == 1.0
    assert out.task == TrainingTask.TRAINING_TASK_SFT
    assert out.WhichOneof("method") == "lora"
    assert (out.lora.r, out.lora.alpha, out.lora.dropout) == (8, 16, 0.05)
    assert list(out.lora.target_modules) == ["all-linear"]
    assert out.data.max_length == 512  # min(2048, the model's context)
    assert out.data.packing and out.data.shuffle and out.data.chat_template == ""
    opt = out.optimization
    assert opt.epochs == 3 and opt.micro_batch_size == 1 and opt.gradient_accumulation_steps == 16
    assert opt.learning_rate == 2e-4 and opt.warmup_ratio == 0.03
    assert opt.lr_scheduler == LrScheduler.LR_SCHEDULER_COSINE
    assert (opt.adam_beta1, opt.adam_beta2, opt.weight_decay, opt.max_grad_norm) == (
        0.9,
        0.999,
        0.0,
        1.0,
    )
    assert opt.precision == Precision.PRECISION_FP32
    assert opt.gradient_checkpointing is True  # training_job.proto: unset means true
    assert opt.seed == 77
    assert out.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_NONE
    assert (out.checkpoint.every_n_steps, out.checkpoint.keep) == (500, 2)
    assert (out.resources.gpus_per_node, out.resources.nodes) == (0, 1)
    assert not out.evaluation.prompts


def test_defaults_on_gpu():
    out = resolve(MINIMAL + "method: qlora", caps=GPU)
    assert out.optimization.precision == Precision.PRECISION_BF16
    assert out.resources.gpus_per_node == 1
    assert out.qlora.quant_type == QuantType.QUANT_TYPE_NF4 and out.qlora.double_quant
    assert out.qlora.compute_dtype == Precision.PRECISION_BF16  # the training precision
    assert (out.qlora.lora.r, out.qlora.lora.alpha) == (8, 16)


def test_gpus_without_bf16_default_to_fp16():
    old_gpu = Capabilities(cuda=True, gpus=1, bitsandbytes=True, deepspeed=False, bf16=False)
    out = resolve(MINIMAL, caps=old_gpu)
    assert out.optimization.precision == Precision.PRECISION_FP16


@pytest.mark.parametrize(("method", "lr"), [("full", 2e-5), ("lora", 2e-4), ("qlora", 2e-4)])
def test_default_learning_rate_depends_on_the_method(method, lr):
    out = resolve(MINIMAL + f"method: {method}", caps=GPU)
    assert out.optimization.learning_rate == lr


def test_explicit_values_are_kept():
    text = (
        MINIMAL + "method: {lora: {r: 32}}\noptimization: {seed: 3, gradient_checkpointing: false}"
    )
    out = resolve(text, seed=99)
    assert (out.lora.r, out.lora.alpha) == (32, 64)  # alpha defaults to 2 x r
    assert out.optimization.seed == 3 and out.optimization.gradient_checkpointing is False


@pytest.mark.parametrize(("context", "expected"), [(512, 512), (32768, 2048), (0, 2048)])
def test_max_length_default_follows_the_model_context(context, expected):
    model = ModelFacts("projects/p/models/tiny", "sha256:x", "qwen2", context, True)
    assert resolve(MINIMAL, model=model).data.max_length == expected


def test_evaluation_defaults():
    text = (
        MINIMAL
        + "data: {system_prompt: Be kind.}\nevaluation: {prompts: [hi]}\ncheckpoint: {every_n_steps: 40}"
    )
    ev = resolve(text).evaluation
    assert (ev.every_n_steps, ev.max_new_tokens, ev.system) == (40, 256, "Be kind.")


def test_task_follows_the_datasets_when_unset():
    out = resolve("base_model: tiny\ndatasets: [corpus]", datasets=[facts("corpus", "text")])
    assert out.task == TrainingTask.TRAINING_TASK_PRETRAIN
    problems = resolve_error(
        "base_model: tiny\ndatasets: [assistant, corpus]",
        datasets=[facts("assistant"), facts("corpus", "text")],
    )
    assert "datasets[0]" in problems["task"] and "datasets[1]" in problems["task"]


def test_deepspeed_defaults_to_zero2_on_several_gpus():
    out = resolve(MINIMAL + "resources: {gpus_per_node: 4}", caps=GPU)
    assert out.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_ZERO2
    no_ds = Capabilities(cuda=True, gpus=4, bitsandbytes=False, deepspeed=False)
    out = resolve(MINIMAL + "resources: {gpus_per_node: 4}", caps=no_ds)
    assert out.deepspeed == DeepspeedStage.DEEPSPEED_STAGE_NONE  # plain DDP


def test_validation_data_is_resolved():
    out = resolve(MINIMAL + "data: {validation_dataset: {dataset: held-out, weight: 3}}")
    v = out.data.validation_dataset
    assert v.dataset == "projects/p/datasets/held-out/versions/v1" and v.weight == 0
    out = resolve(MINIMAL + "data: {validation_split: 0}")
    assert out.data.WhichOneof("validation") is None  # 0: no validation


def test_resolving_does_not_modify_the_input():
    spec = qualify_names(parse(MINIMAL), "p")
    before = spec.SerializeToString()
    resolve_spec(spec, model=TINY, datasets=[facts()], validation=None, capabilities=CPU, seed=1)
    assert spec.SerializeToString() == before


def test_resolved_spec_resolves_to_itself():
    once = resolve(full_spec(), caps=GPU)
    again = resolve_spec(
        once,
        model=TINY,
        datasets=[facts("assistant"), facts("alpaca")],
        validation=facts("held-out"),
        capabilities=GPU,
        seed=999,
    )
    assert again == once


def test_facts_must_match_the_spec():
    spec = qualify_names(parse(MINIMAL), "p")
    with pytest.raises(ValueError):
        resolve_spec(spec, model=TINY, datasets=[], validation=None, capabilities=CPU, seed=1)


# ---- bad input --------------------------------------------------------------------------------
def test_learning_rate_must_be_positive():
    problems = resolve_error(MINIMAL + "optimization: {learning_rate: -1e-4}")
    assert problems == {"optimization.learning_rate": "must be > 0, got -0.0001"}
    assert (
        "far too large"
        in resolve_error(MINIMAL + "optimization: {learning_rate: 3}")["optimization.learning_rate"]
    )


def test_max_length_must_fit_the_model_context():
    problems = resolve_error(MINIMAL + "data: {max_length: 4096}")
    assert problems == {"data.max_length": "4096 exceeds the model's context (512)"}


def test_raw_text_cannot_train_sft():
    problems = resolve_error(
        "base_model: tiny\ntask: sft\ndatasets: [assistant, corpus]",
        datasets=[facts("assistant"), facts("corpus", "text")],
    )
    assert list(problems) == ["datasets[1]"]
    assert "TASK_MISMATCH" in problems["datasets[1]"]
    assert "raw text" in problems["datasets[1]"] and "task: pretrain" in problems["datasets[1]"]


def test_conversations_cannot_train_pretrain_nor_validate_it():
    problems = resolve_error(
        "base_model: tiny\ntask: pretrain\ndatasets: [assistant]\n"
        "data: {validation_dataset: held-out}",
        datasets=[facts("assistant")],
        validation=facts("held-out", "chat"),
    )
    assert set(problems) == {"datasets[0]", "data.validation_dataset"}
    assert all("TASK_MISMATCH" in d for d in problems.values())


@pytest.mark.parametrize(
    ("weight", "words"),
    [(-1, "> 0"), (math.nan, "finite"), (math.inf, "finite"), (250, "suspiciously large")],
)
def test_dataset_weights_must_be_sensible(weight, words):
    spec = TrainingJobSpec(base_model="tiny")
    spec.datasets.add(dataset="assistant")
    spec.datasets.add(dataset="alpaca", weight=weight)
    problems = resolve_error(spec)
    assert list(problems) == ["datasets[1].weight"] and words in problems["datasets[1].weight"]


def test_a_weight_that_rounds_a_dataset_away_is_an_error():
    problems = resolve_error(
        "base_model: tiny\ndatasets: [assistant, {dataset: alpaca, weight: 0.01}]",
        datasets=[facts("assistant"), facts("alpaca", records=10)],
    )
    assert "leaves no sample" in problems["datasets[1].weight"]


def test_empty_dataset_is_an_error():
    problems = resolve_error(MINIMAL, datasets=[facts(records=0)])
    assert "no records" in problems["datasets[0]"]


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("data: {validation_split: 0.6}", "data.validation_split"),
        ("data: {validation_split: -0.1}", "data.validation_split"),
        ("optimization: {epochs: 0}", "optimization.epochs"),
        ("optimization: {max_steps: -5}", "optimization.max_steps"),
        ("optimization: {micro_batch_size: -1}", "optimization.micro_batch_size"),
        ("optimization: {warmup_ratio: 1.5}", "optimization.warmup_ratio"),
        ("optimization: {adam_beta2: 1}", "optimization.adam_beta2"),
        ("optimization: {weight_decay: -0.1}", "optimization.weight_decay"),
        ("optimization: {seed: -1}", "optimization.seed"),
        ("method: {lora: {r: -8}}", "method.lora.r"),
        ("method: {lora: {dropout: 1.0}}", "method.lora.dropout"),
        ("method: {lora: {target_modules: [all-linear, q_proj]}}", "method.lora.target_modules"),
        ("method: {lora: {target_modules: ['q proj']}}", "method.lora.target_modules[0]"),
        ("checkpoint: {keep: -2}", "checkpoint.keep"),
        ("checkpoint: {every_n_steps: -10}", "checkpoint.every_n_steps"),
        ("evaluation: {prompts: [hi], every_n_steps: -1}", "evaluation.every_n_steps"),
        ("evaluation: {prompts: ['  ']}", "evaluation.prompts[0]"),
        ("evaluation: {prompts: [hi], max_new_tokens: 100000}", "evaluation.max_new_tokens"),
        ("data: {chat_template: vicuna}", "data.chat_template"),
        ("resources: {nodes: -1}", "resources.nodes"),
    ],
)
def test_bad_values_name_the_field(yaml_text, field):
    problems = resolve_error(MINIMAL + yaml_text)
    assert list(problems) == [field], problems


def test_all_bad_values_are_reported_together():
    problems = resolve_error(
        MINIMAL
        + "data: {max_length: 4096}\noptimization: {learning_rate: -1, epochs: 0}\n"
        + "checkpoint: {keep: -5}"
    )
    assert set(problems) == {
        "data.max_length",
        "optimization.learning_rate",
        "optimization.epochs",
        "checkpoint.keep",
    }


@pytest.mark.parametrize(
    ("yaml_text", "caps", "field", "words"),
    [
        ("method: qlora", CPU, "method.qlora", "bitsandbytes"),
        (
            "method: qlora",
            Capabilities(cuda=True, gpus=1, bitsandbytes=False, deepspeed=True),
            "method.qlora",
            "bitsandbytes",
        ),
        ("deepspeed: zero2", CPU, "deepspeed", "DeepSpeed"),
        (
            "deepspeed: zero3",
            Capabilities(cuda=False, gpus=0, bitsandbytes=False, deepspeed=True),
            "deepspeed",
            "CUDA",
        ),
        ("optimization: {precision: fp16}", CPU, "optimization.precision", "CUDA"),
        (
            "optimization: {precision: bf16}",
            Capabilities(cuda=True, gpus=1, bitsandbytes=False, deepspeed=False, bf16=False),
            "optimization.precision",
            "bf16",
        ),
        ("resources: {gpus_per_node: 1}", CPU, "resources.gpus_per_node", "no CUDA GPU"),
        ("resources: {gpus_per_node: 16}", GPU, "resources.gpus_per_node", "only 8"),
    ],
)
def test_capabilities_the_machines_lack(yaml_text, caps, field, words):
    problems = precondition(MINIMAL + yaml_text, "CAPABILITY_MISSING", caps=caps)
    assert list(problems) == [field] and words in problems[field]


def test_bf16_on_cpu_is_allowed():
    out = resolve(MINIMAL + "optimization: {precision: bf16}")
    assert out.optimization.precision == Precision.PRECISION_BF16


def test_qlora_fp16_compute_on_cpu_is_refused():
    caps = Capabilities(cuda=False, gpus=0, bitsandbytes=True, deepspeed=False)
    problems = precondition(
        MINIMAL + "method: {qlora: {compute_dtype: fp16}}", "CAPABILITY_MISSING", caps=caps
    )
    assert list(problems) == ["method.qlora.compute_dtype"]


def test_chat_template_missing():
    plain = ModelFacts("projects/p/models/plain", "sha256:x", "qwen2", 512, False)
    with pytest.raises(FailedPrecondition) as info:
        resolve(MINIMAL, model=plain)
    err = info.value
    assert err.reason == "CHAT_TEMPLATE_MISSING"
    assert list(fields(err)) == ["data.chat_template"]
    for name in ("internlm2_chat", "chatml", "qwen_chat", "llama3_chat"):
        assert name in str(err)
    # A named template fixes it (stored under its canonical name) ...
    out = resolve(MINIMAL + "data: {chat_template: qwen_chat}", model=plain)
    assert out.data.chat_template == "chatml"
    # ... and pre-training on raw text needs none.
    resolve("base_model: tiny\ndatasets: [corpus]", model=plain, datasets=[facts("c", "text")])


def test_invalid_argument_comes_before_preconditions():
    problems = resolve_error(
        MINIMAL + "method: qlora\noptimization: {learning_rate: -1}",
        model=ModelFacts("projects/p/models/plain", "sha256:x", "qwen2", 512, False),
    )
    assert list(problems) == ["optimization.learning_rate"]


# ---- mixing and step counts -------------------------------------------------------------------
def test_identity_samples_diluted_in_general_data():
    """The seed's advice: 2,000 identity samples diluted in 10,000 general ones."""
    spec = parse(
        """
        base_model: tiny
        datasets:
          - {dataset: assistant, weight: 0.2}          # 10,000 repeated identity records
          - {dataset: alpaca, max_samples: 10000}      # 52,002 general instructions
        """
    )
    datasets = [facts("assistant", records=10_000), facts("alpaca", records=52_002)]
    out = resolve(spec, datasets=datasets)
    assert weighted_sample_counts(out, datasets) == [2_000, 10_000]
    assert total_steps(out, 12_000) == 750 * 3  # one identity sample in six, 16 per step
    # The same mix from a 2,000-record identity set: weight 1 (the default) for both.
    small = [facts("assistant", records=2_000), facts("alpaca", records=52_002)]
    mix = "base_model: tiny\ndatasets: [assistant, {dataset: alpaca, max_samples: 10000}]"
    assert weighted_sample_counts(resolve(mix, datasets=small), small) == [2_000, 10_000]


def test_weights_repeat_records_and_validation_is_held_out_first():
    spec = parse(MINIMAL + "data: {validation_split: 0.1}")
    spec.datasets[0].weight = 2.5
    assert weighted_sample_counts(spec, [facts(records=100)]) == [225]  # (100 - 10) x 2.5


def test_total_steps():
    spec = resolve(
        MINIMAL + "optimization: {epochs: 2, micro_batch_size: 4, gradient_accumulation_steps: 2}"
    )
    assert total_steps(spec, 100) == math.ceil(100 / 8) * 2
    assert total_steps(spec, 0) == 0
    spec = resolve(MINIMAL + "resources: {gpus_per_node: 2, nodes: 2}", caps=GPU)
    assert total_steps(spec, 1000) == math.ceil(1000 / (1 * 16 * 4)) * 3
    spec = resolve(MINIMAL + "optimization: {max_steps: 30}")
    assert total_steps(spec, 10**6) == 30
    unresolved = TrainingJobSpec()  # unset fields count with their defaults
    assert total_steps(unresolved, 32) == 2 * 3


def test_dataset_source_default_weight_is_one():
    assert weighted_sample_counts(
        TrainingJobSpec(datasets=[DatasetSource(dataset="a")]), [facts(records=7)]
    ) == [7]

"""A tiny byte-level BPE tokenizer built by the tests, so nothing is downloaded from a hub.

It mimics Qwen2-Instruct: byte-level BPE, ChatML control tokens, ``eos_token = <|im_end|>``,
``pad_token = <|endoftext|>``, no BOS, and Qwen2's own chat template (which adds a default
system prompt). Llama-3 header tokens are registered too, so the named ``llama3_chat`` template
renders onto single tokens. Training takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

# Qwen2-Instruct's chat template (tool branches removed): a default system prompt when the
# conversation has none, then ChatML turns.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

_SENTENCES = (
    "You are a helpful assistant.",
    "Hello! How can I help you today?",
    "Please introduce yourself.",
    "I am danlu's personal assistant, fine-tuned to answer questions about the furnace.",
    "What is the capital of France? The capital of France is Paris.",
    "Translate the following sentence into Chinese.",
    "Write a short poem about the sea and the moon.",
    "The quick brown fox jumps over the lazy dog.",
    "Fine-tuning a large language model needs data, a template and patience.",
    "def add(a, b):\n    return a + b",
    "for i in range(10):\n    print(i)",
    "The loss went down from 2.31 to 0.87 after 300 steps.",
    "请介绍一下你自己。",
    "我是一个由丹炉微调的个人助手。",
    "今天天气很好，我们去公园散步吧。",
    "炼丹需要数据、模板和耐心。",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159",
    "Punctuation: ( ) [ ] { } < > | : ; , . ! ? ' \" - _ = + * / \\ @ # $ % ^ &",
    "Alchemy turns ingredients into elixirs: the data is the ingredient, the learning rate the heat.",
    "Checkpoints are saved every hundred steps, and the best one is kept for evaluation.",
    "A tokenizer splits text into tokens; a template wraps each turn in control tokens.",
    "Instruction: summarise the paragraph. Input: the weather was cold. Output: it was cold.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April",
    "red orange yellow green blue indigo violet black white grey brown purple pink gold silver",
    "one two three four five six seven eight nine ten eleven twelve twenty thirty hundred",
    "apple banana cherry grape lemon mango orange peach pear plum strawberry watermelon",
    "The model answered correctly at step 300, but by step 600 it repeated itself like a parrot.",
    "机器学习 深度学习 大语言模型 微调 训练 推理 数据集 模板 损失 梯度",
)


def _corpus() -> list[str]:
    # Mix sentences into chat-shaped lines so merges for role names and newlines appear.
    lines = []
    for i, s in enumerate(_SENTENCES):
        for j, t in enumerate(_SENTENCES):
            if (i + j) % 3 == 0:
                lines.append(f"user\n{s}\nassistant\n{t}\n")
        lines.append(s)
    return lines


def build_tiny_tokenizer(
    tmp_dir: str | Path,
    *,
    chat_template: str | None = QWEN2_CHAT_TEMPLATE,
    bos_token: str | None = None,
    vocab_size: int = 1000,
) -> PreTrainedTokenizerFast:
    """Train, save (``save_pretrained``) and reload a ~1k-token byte-level BPE tokenizer.

    The returned tokenizer is the one ``AutoTokenizer.from_pretrained(tmp_dir)`` loads, so a
    test exercises the same loading path as a registered model directory.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Like Qwen2: offsets keep the spaces they cover, so spans map onto tokens exactly.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=bos_token,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(tmp_dir))
    return AutoTokenizer.from_pretrained(str(tmp_dir))

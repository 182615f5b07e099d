"""A tiny random-init Qwen2 model directory built locally (nothing comes from a hub).

Used by `make demo` and by the tests: real transformers code paths at tiny sizes. Shapes follow
ENVIRONMENT.md: hidden 64, 2 layers, head dim 32 (vLLM's CPU attention rejects 16).
"""

from __future__ import annotations

from pathlib import Path

from demo.tiny_tokenizer import build_tiny_tokenizer


def build_tiny_model(
    directory: str | Path, *, seed: int = 0, chat_template: bool = True, **shape: int
) -> Path:
    """Write config, generation config, tokenizer and safetensors weights into ``directory``.

    ``shape`` overrides Qwen2Config sizes (``hidden_size``, ``num_hidden_layers``...), e.g. for
    a benchmark that needs a model whose compute outweighs Python's overhead."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {} if chat_template else {"chat_template": None}
    tokenizer = build_tiny_tokenizer(directory, **kwargs)
    sizes = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 512,
        **shape,
    }
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        **sizes,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory, safe_serialization=True)
    return directory

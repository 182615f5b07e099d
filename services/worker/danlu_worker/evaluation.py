"""Fixed evaluation prompts and validation loss.

Answers are decoded greedily (so checkpoints compare fairly) with the same chat template the
model is trained with, stopping at the tokenizer's EOS or the template's stop words. The
validation loss is the mean token loss over the held-out rows, computed exactly as in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from danlu.training.v1 import checkpoint_pb2
from danlu_worker.data import TokenizedSet, collate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def answer_prompts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    chat_template: str,
    system: str,
    max_new_tokens: int,
    stop_words: Sequence[str] = (),
    device: torch.device,
    synced_gpus: bool = False,
) -> list[checkpoint_pb2.EvaluationAnswer]:
    """One greedy answer per prompt, each prompt a one-turn conversation."""
    was_training = model.training
    model.eval()
    eos_ids = _stop_token_ids(tokenizer, stop_words)
    answers = []
    try:
        for prompt in prompts:
            chat = [{"role": "user", "content": prompt}]
            if system:
                chat.insert(0, {"role": "system", "content": system})
            text = tokenizer.apply_chat_template(
                chat, chat_template=chat_template, add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = ids.to(device)
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_ids,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                synced_gpus=synced_gpus,
            )
            answer = tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
            answers.append(checkpoint_pb2.EvaluationAnswer(prompt=prompt, answer=answer.strip()))
    finally:
        model.train(was_training)
    return answers


def _stop_token_ids(tokenizer: PreTrainedTokenizerBase, stop_words: Sequence[str]) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for word in stop_words:
        token_ids = tokenizer.convert_tokens_to_ids([word])
        if token_ids and token_ids[0] is not None and token_ids[0] != tokenizer.unk_token_id:
            ids.append(token_ids[0])
    return sorted(set(ids))


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    data: TokenizedSet,
    *,
    micro_batch_size: int,
    pad_token_id: int,
    packed: bool,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> float:
    """Mean token loss over every validation row."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for start in range(0, len(data.rows), micro_batch_size):
            rows = data.rows[start : start + micro_batch_size]
            batch = collate(data.samples, rows, pad_token_id=pad_token_id, packed=packed)
            items = batch.num_loss_tokens
            if not items:
                continue
            labels = batch.shift_labels.to(device)
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                out = model(
                    **batch.model_inputs(device),
                    labels=labels,
                    shift_labels=labels,
                    num_items_in_batch=torch.tensor(items, device=device),
                    use_cache=False,
                )
            total += out.loss.double() * items
            count += items
    finally:
        model.train(was_training)
    return float(total / count) if count else math.nan

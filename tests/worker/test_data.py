"""Data pipeline: mixing, splitting, packing, batching, and the packed attention layout."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from worker_helpers import IDENTITY_ANSWER, IDENTITY_PROMPT, mixed_records

from danlu.training.v1 import training_job_pb2 as tj
from danlu_kit.conversation_tokens import TokenizedSample
from danlu_worker.data import (
    IGNORE_INDEX,
    BatchStream,
    DataPosition,
    SampleEncoder,
    collate,
    pack_samples,
    shifted_labels,
    split_and_weight,
)


def _lines(n: int) -> list[str]:
    return [json.dumps({"text": f"record {i}"}) for i in range(n)]


def test_weights_repeat_records_and_sample_fractions_deterministically() -> None:
    lines = _lines(10)
    train, val = split_and_weight(
        lines, tj.DatasetSource(weight=2.5), seed=7, dataset_index=0, validation_split=0.0
    )
    assert val == []
    assert len(train) == 25
    assert all(train.count(line) in (2, 3) for line in lines)
    again, _ = split_and_weight(
        lines, tj.DatasetSource(weight=2.5), seed=7, dataset_index=0, validation_split=0.0
    )
    assert again == train
    half, _ = split_and_weight(
        lines,
        tj.DatasetSource(weight=0.5, max_samples=8),
        seed=7,
        dataset_index=0,
        validation_split=0.0,
    )
    assert len(half) == 4 and set(half) <= set(lines[:8])


def test_validation_is_held_out_before_weighting() -> None:
    lines = _lines(20)
    train, val = split_and_weight(
        lines, tj.DatasetSource(weight=3), seed=1, dataset_index=0, validation_split=0.25
    )
    assert len(val) == 5
    assert not set(val) & set(train)
    assert len(train) == 15 * 3


def test_first_fit_packing_respects_max_length_and_keeps_every_sample() -> None:
    lengths = [5, 9, 3, 7, 2, 8, 1, 6, 4, 10] * 3
    rows = pack_samples(lengths, 16, seed=3)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 16 for row in rows)
    assert len(rows) <= sum(lengths) // 16 + 3  # close to the lower bound
    assert pack_samples(lengths, 16, seed=3) == rows


def test_shifted_labels_target_only_loss_tokens_of_the_same_sample() -> None:
    sample = TokenizedSample([10, 11, 12, 13], [False, False, True, True], truncated=False)
    assert shifted_labels(sample) == [IGNORE_INDEX, 12, 13, IGNORE_INDEX]


def test_packed_collate_restarts_positions_and_pads_as_its_own_block() -> None:
    a = TokenizedSample([1, 2, 3], [False, True, True], False)
    b = TokenizedSample([4, 5], [False, True], False)
    batch = collate([a, b], [(0, 1), (1,)], pad_token_id=0, packed=True)
    assert batch.attention_mask is None
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch.shift_labels.tolist() == [[2, 3, -100, 5, -100], [5, -100, -100, -100, -100]]
    assert batch.num_tokens == 7 and batch.num_loss_tokens == 4
    plain = collate([a, b], [(0,), (1,)], pad_token_id=0, packed=False)
    assert plain.position_ids is None
    assert plain.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_batch_stream_resumes_at_its_position() -> None:
    full = BatchStream(10, 3, seed=5, shuffle=True)
    sequence = [full.next_rows() for _ in range(9)]  # crosses two epoch boundaries
    assert sorted(i for rows in sequence[:4] for i in rows) == list(range(10))
    assert sequence[:4] != sequence[4:8]  # reshuffled every epoch
    head = BatchStream(10, 3, seed=5, shuffle=True)
    for _ in range(5):
        head.next_rows()
    assert head.position == DataPosition(epoch=1, index=1)
    resumed = BatchStream(10, 3, seed=5, shuffle=True, position=head.position)
    assert [resumed.next_rows() for _ in range(4)] == sequence[5:]
    assert resumed.epochs_done == pytest.approx(9 / 4)


def test_sample_encoder_puts_loss_on_the_answer_only(tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoder = SampleEncoder(
        tokenizer,
        task="sft",
        chat_template=tokenizer.chat_template,
        system_prompt="",
        max_length=256,
    )
    line = json.dumps(
        {
            "messages": [
                {"role": "user", "content": IDENTITY_PROMPT},
                {"role": "assistant", "content": IDENTITY_ANSWER},
            ]
        }
    )
    sample = encoder.encode(line)
    trained = [t for t, m in zip(sample.input_ids, sample.loss_mask, strict=True) if m]
    assert tokenizer.decode(trained) == IDENTITY_ANSWER + "<|im_end|>"
    assert encoder.encode(line) is sample  # identical records are tokenised once


def _samples(tokenizer, n: int = 3) -> list[TokenizedSample]:
    encoder = SampleEncoder(
        tokenizer,
        task="sft",
        chat_template=tokenizer.chat_template,
        system_prompt="",
        max_length=256,
    )
    records = mixed_records()
    return [encoder.encode(json.dumps(records[i + 1])) for i in range(n)]


def _token_loss_sum(model, batch) -> torch.Tensor:
    logits = model(**batch.model_inputs(), use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).double(), batch.shift_labels.flatten(), reduction="sum"
    )


def test_packed_loss_equals_separate_losses(tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    samples = _samples(tokenizer)
    assert len({len(s.input_ids) for s in samples}) > 1  # different lengths
    with torch.no_grad():
        packed = collate(samples, [(0, 1, 2)], pad_token_id=tokenizer.pad_token_id, packed=True)
        packed_loss = _token_loss_sum(model, packed) / packed.num_loss_tokens
        separate_sum = sum(
            _token_loss_sum(model, collate([s], [(0,)], pad_token_id=0, packed=True))
            for s in samples
        )
        separate_loss = separate_sum / sum(s.loss_token_count for s in samples)
        # The model's own loss (the training path) agrees with the packed computation.
        labels = packed.shift_labels
        out = model(
            **packed.model_inputs(),
            labels=labels,
            shift_labels=labels,
            num_items_in_batch=torch.tensor(packed.num_loss_tokens),
            use_cache=False,
        )
    assert float(packed_loss) == pytest.approx(float(separate_loss), abs=1e-5)
    assert float(out.loss) == pytest.approx(float(packed_loss), abs=1e-5)


def test_packed_samples_do_not_attend_to_each_other(tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    first, second, _ = _samples(tokenizer)
    changed = TokenizedSample(
        [(t * 7 + 3) % len(tokenizer) for t in first.input_ids], first.loss_mask, False
    )
    shorter = TokenizedSample(first.input_ids[:5], first.loss_mask[:5], False)

    def second_logits(neighbour: TokenizedSample) -> torch.Tensor:
        batch = collate([neighbour, second], [(0, 1)], pad_token_id=0, packed=True)
        with torch.no_grad():
            logits = model(**batch.model_inputs(), use_cache=False).logits
        return logits[0, len(neighbour.input_ids) :]

    reference = second_logits(first)
    torch.testing.assert_close(second_logits(changed), reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(second_logits(shorter), reference, atol=1e-5, rtol=0)
    # and the packed sample sees exactly what it sees alone
    alone = collate([second], [(0,)], pad_token_id=0, packed=True)
    with torch.no_grad():
        own = model(**alone.model_inputs(), use_cache=False).logits[0]
    torch.testing.assert_close(own, reference, atol=1e-5, rtol=0)

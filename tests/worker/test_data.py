"""Data pipeline: mixing, splitting, packing, batching, and the packed attention layout."""

from __future__ import annotations

import json
import math
import random

import numpy as np
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


def _realistic_lengths(n: int, seed: int = 0) -> list[int]:
    """Instruction-data-like token counts: log-normal, median ~320, capped below 2,048."""
    draw = random.Random(seed)
    return [int(min(draw.lognormvariate(5.7, 0.8), 2000)) + 20 for _ in range(n)]


def test_packing_keeps_every_sample_once_and_respects_max_length() -> None:
    draw = random.Random(1)
    for seed, max_length in enumerate([16, 63, 64, 65, 300]):
        lengths = [draw.randint(1, max_length) for _ in range(200)]
        rows = pack_samples(lengths, max_length, seed=seed)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= max_length for row in rows)
    assert pack_samples([], 16, seed=0) == []


def test_packing_is_best_fit_decreasing() -> None:
    # Longest first: 8 opens a row (room 2), 6 another (room 4), 3 only fits beside 6 (room 1).
    # First-fit would put the 1 into the 8's row, best-fit into the row with the least room.
    lengths = [3, 8, 1, 6]
    for seed in range(5):
        assert sorted(pack_samples(lengths, 10, seed=seed)) == [(1,), (3, 0, 2)]


def test_packing_is_deterministic_per_seed_and_seeded_for_ties() -> None:
    lengths = [5, 9, 3, 7, 2, 8, 1, 6, 4, 10] * 3
    rows = pack_samples(lengths, 16, seed=3)
    assert pack_samples(lengths, 16, seed=3) == rows
    assert pack_samples(lengths, 16, seed=4) != rows
    # Equal lengths are paired in seeded random order, not by index.
    pairs = pack_samples([5] * 20, 10, seed=3)
    assert sorted(len(row) for row in pairs) == [2] * 10
    assert sorted(tuple(sorted(row)) for row in pairs) != [(i, i + 1) for i in range(0, 20, 2)]
    assert pack_samples([5] * 20, 10, seed=4) != pairs


def test_packing_rejects_an_over_long_sample() -> None:
    with pytest.raises(ValueError, match=r"^sample 2 has 17 tokens, more than max_length 16$"):
        pack_samples([4, 16, 17, 3], 16, seed=0)


def test_packing_fills_rows_almost_completely() -> None:
    lengths = _realistic_lengths(2000)
    rows = pack_samples(lengths, 2048, seed=0)
    lower_bound = math.ceil(sum(lengths) / 2048)
    # First-fit over a random order needed lower_bound + 5 rows here (98.6% full).
    assert len(rows) <= lower_bound + 2


def test_packed_rows_come_in_no_length_order() -> None:
    lengths = _realistic_lengths(2000)
    rows = pack_samples(lengths, 2048, seed=0)
    position = np.arange(len(rows))
    longest = [max(lengths[i] for i in row) for row in rows]
    total = [sum(lengths[i] for i in row) for row in rows]
    # Unshuffled best-fit decreasing rows would start with the longest samples.
    assert abs(np.corrcoef(position, longest)[0, 1]) < 0.2
    assert abs(np.corrcoef(position, total)[0, 1]) < 0.2


@pytest.mark.parametrize("size", [1, 64, 65, 4096, 4097, 300_000])
def test_room_index_answers_like_a_sorted_set(size: int) -> None:
    """The packing's index of free room (one to four bitmap levels) against a plain set."""
    from danlu_worker.data import _RoomIndex

    rng = random.Random(size)
    index, members = _RoomIndex(size), set()
    for _ in range(3000):
        value = rng.randrange(size)
        if rng.random() < 0.6:
            index.add(value)
            members.add(value)
        else:
            index.discard(value)
            members.discard(value)
        probe = rng.randrange(size)
        assert index.ceiling(probe) == min((m for m in members if m >= probe), default=-1)


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


def test_collate_to_a_fixed_shape_adds_padding_rows_and_width() -> None:
    a = TokenizedSample([1, 2, 3], [False, True, True], False)
    batch = collate([a], [(0,)], pad_token_id=9, packed=True, shape=(3, 5))
    assert batch.input_ids.tolist() == [[1, 2, 3, 9, 9], [9] * 5, [9] * 5]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert batch.shift_labels.tolist() == [[2, 3, -100, -100, -100]] + [[-100] * 5] * 2
    assert batch.num_tokens == 3 and batch.num_loss_tokens == 2  # padding counts for nothing
    with pytest.raises(ValueError, match="fixed shape"):
        collate([a], [(0,), (0,)], pad_token_id=9, packed=True, shape=(1, 5))  # too many rows
    with pytest.raises(ValueError, match="fixed shape"):
        collate([a], [(0, 0)], pad_token_id=9, packed=True, shape=(1, 5))  # too wide
    with pytest.raises(ValueError, match="packed rows"):
        collate([a], [(0,)], pad_token_id=9, packed=False, shape=(2, 5))


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

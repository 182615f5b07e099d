"""The keep policy: the newest K checkpoints plus the best (validation loss, else train loss)."""

from __future__ import annotations

from datetime import UTC, datetime

from danlu_training.core.checkpoints import KEEP_ALL, decide
from danlu_training.core.records import CheckpointRecord, ObjectRef

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ckpts(train: list[float], validation: list[float | None] | None = None, dropped=()):
    validation = validation or [None] * len(train)
    return [
        CheckpointRecord(
            "p",
            "j",
            100 * (i + 1),
            0.0,
            t,
            v,
            [],
            ObjectRef("k", "s", 1),
            1,
            NOW,
            kept=100 * (i + 1) not in dropped,
        )
        for i, (t, v) in enumerate(zip(train, validation, strict=True))
    ]


def test_newest_k_are_kept_when_the_newest_is_best():
    d = decide(ckpts([3.0, 2.0, 1.0]), keep=2, validates=False)
    assert d.best_step == 300 and d.drop_steps == (100,)


def test_best_is_kept_in_addition_to_the_newest():
    # The parrot: step 200 answered best; 300 and 400 over-fitted.
    d = decide(ckpts([2.0, 1.0, 1.5, 1.8]), keep=1, validates=False)
    assert d.best_step == 200 and d.drop_steps == (100, 300)


def test_validation_loss_decides_when_the_job_validates():
    d = decide(ckpts([3.0, 2.0, 1.0], validation=[1.2, 0.9, 1.4]), keep=1, validates=True)
    assert d.best_step == 200 and d.drop_steps == (100,)


def test_train_loss_decides_without_validation_numbers():
    d = decide(ckpts([3.0, 1.0, 2.0]), keep=1, validates=True)
    assert d.best_step == 200


def test_ties_go_to_the_older_checkpoint():
    assert decide(ckpts([1.0, 1.0, 1.0]), keep=1, validates=False).best_step == 100


def test_keep_all_drops_nothing():
    d = decide(ckpts([3.0, 2.0, 1.0, 4.0]), keep=KEEP_ALL, validates=False)
    assert d.best_step == 300 and d.drop_steps == ()


def test_checkpoints_dropped_before_are_not_dropped_again():
    d = decide(ckpts([3.0, 2.0, 1.0], dropped={100}), keep=1, validates=False)
    assert d.drop_steps == (200,)


def test_a_superseded_best_is_dropped_once_it_is_not_among_the_newest():
    d = decide(ckpts([2.0, 1.0, 3.0, 0.5]), keep=1, validates=False)
    assert d.best_step == 400 and d.drop_steps == (100, 200, 300)


def test_nan_losses_never_win():
    d = decide(ckpts([float("nan"), 2.0]), keep=1, validates=False)
    assert d.best_step == 200

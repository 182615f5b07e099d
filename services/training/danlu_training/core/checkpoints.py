"""The checkpoint keep policy: the newest K checkpoints plus the best one.

"Best" is the lowest validation loss when the job validates, else the lowest training loss
(XTuner and the HF Trainer's ``load_best_model_at_end`` do the same). The best checkpoint is
never deleted while it is best; the classic reason is over-fitting: at step 600 the newest
checkpoints may all be worse than the one from step 300, which is the one to convert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from danlu_training.core.records import CheckpointRecord

KEEP_ALL = -1


@dataclass(frozen=True)
class KeepDecision:
    best_step: int | None  # None while no checkpoint has a usable loss
    drop_steps: tuple[int, ...]  # kept checkpoints whose files go now, by step


def _score(c: CheckpointRecord, by_validation: bool) -> float | None:
    loss = c.validation_loss if by_validation else c.train_loss
    return loss if loss is not None and math.isfinite(loss) else None


def decide(checkpoints: Sequence[CheckpointRecord], keep: int, *, validates: bool) -> KeepDecision:
    """Which checkpoint is best and which kept ones to drop, given all of a job's checkpoints.

    ``keep`` is the resolved ``checkpoint.keep`` (``-1``: keep all). Ties go to the older
    checkpoint: a later one must be strictly better to become best.
    """
    by_validation = validates and any(
        _score(c, by_validation=True) is not None for c in checkpoints
    )
    scored = [
        (score, c.step) for c in checkpoints if (score := _score(c, by_validation)) is not None
    ]
    best_step = min(scored)[1] if scored else None
    if keep == KEEP_ALL:
        return KeepDecision(best_step, ())
    newest = sorted((c.step for c in checkpoints), reverse=True)[: max(keep, 0)]
    keep_steps = {*newest, best_step}
    drop = tuple(sorted(c.step for c in checkpoints if c.kept and c.step not in keep_steps))
    return KeepDecision(best_step, drop)

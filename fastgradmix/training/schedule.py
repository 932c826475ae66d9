"""The learning-rate schedules (``--lr-schedule``), evaluated for every step.

- ``cosine`` (default): cosine decay from --lr to 0 over the whole run, per step;
- ``epoch-cosine``: the published code's (util.adjust_learning_rate with ``--cosine True --lr_decay_rate 0.8``):
  once per epoch e of E, eta_min + (lr - eta_min) (1 + cos(pi e / E)) / 2 with eta_min = lr * 0.8^3, so the
  last epoch still trains at about half of --lr.
"""

from __future__ import annotations

import math

PUBLISHED_DECAY_RATE = 0.8  # train_*.sh: --lr_decay_rate 0.8


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over the whole run, evaluated per step."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def epoch_cosine_lr(base_lr: float, epoch: int, epochs: int, decay_rate: float = PUBLISHED_DECAY_RATE) -> float:
    """The published per-epoch cosine from base_lr (epoch 0) towards base_lr * decay_rate^3 (epoch ``epochs``)."""
    eta_min = base_lr * decay_rate ** 3
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def learning_rate(schedule: str, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The rate of global step ``step`` under ``--lr-schedule schedule``."""
    if schedule == "cosine":
        return cosine_lr(base_lr, step, steps_per_epoch * epochs)
    if schedule == "epoch-cosine":
        return epoch_cosine_lr(base_lr, step // steps_per_epoch, epochs)
    raise ValueError(f"unknown lr schedule {schedule!r}; choose cosine or epoch-cosine")

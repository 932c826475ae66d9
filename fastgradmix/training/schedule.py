"""The learning-rate schedule: cosine decay from --lr to 0 over the whole run, set every step."""

from __future__ import annotations

import math


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over the whole run, evaluated per step."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

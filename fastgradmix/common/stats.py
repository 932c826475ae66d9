"""Summary statistics over the splits of a protocol (or the seeds of an ablation)."""

from __future__ import annotations

import numpy as np


def mean_std(values: list[float | None]) -> dict | None:
    """{"mean", "std", "n"} over the values present (sample std, ddof = 1; 0 for one value); None when no
    value is present (a metric a closed-set protocol does not have)."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return None
    std = float(present.std(ddof=1)) if present.size > 1 else 0.0
    return {"mean": float(present.mean()), "std": std, "n": int(present.size)}

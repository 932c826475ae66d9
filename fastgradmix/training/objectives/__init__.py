"""Objectives, one per ``--method``: the clean loss L_con and the per-image mix loss l_mix the step needs.

- base.py: the interface the training step uses;
- contrastive.py: ``supcon+simclr``, ``supcon``, ``simclr`` (their maths in losses.py);
- moco.py: ``moco``, MoCo v2 (its key encoder and queue, InfoNCE, and when in the step they move);
- cross_entropy.py: ``ce``, the cross-entropy baseline (a classifier's logits on one view, no mixed view).

``build_objective(cfg, module)`` returns the objective for ``cfg.method``.
"""

from __future__ import annotations

from torch import nn

from fastgradmix.training.objectives.base import Objective
from fastgradmix.training.objectives.contrastive import SimCLR, SupCon, SupConSimCLR
from fastgradmix.training.objectives.cross_entropy import CrossEntropy
from fastgradmix.training.objectives.moco import MoCoObjective

__all__ = ["OBJECTIVES", "Objective", "build_objective"]

# --method name -> objective class, called as cls(cfg, module)
OBJECTIVES: dict[str, type[Objective]] = {
    "supcon+simclr": SupConSimCLR,
    "supcon": SupCon,
    "simclr": SimCLR,
    "moco": MoCoObjective,
    "ce": CrossEntropy,
}


def build_objective(cfg, module: nn.Module) -> Objective:
    """The objective for ``cfg.method``; ``module`` is the bare model (MoCo copies it), not a DDP wrapper."""
    if cfg.method not in OBJECTIVES:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {tuple(OBJECTIVES)}")
    return OBJECTIVES[cfg.method](cfg, module)

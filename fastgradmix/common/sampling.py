"""Random draws that more than one stage needs: today the derangement that picks each image's mixing partner.

GradMix (fastgradmix/gradmix/augment.py) and the Mixup/CutMix baselines (fastgradmix/training/mixed_views/
pixel.py) both pair image i with a partner p(i) != i of the same batch; the draw lives here so that neither
imports the other. Draws come from the caller's generator on the given device and read nothing back to the
host.
"""

from __future__ import annotations

import torch

__all__ = ["random_derangement"]


def random_derangement(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random permutation p of 0..n-1 with p[i] != i for every i (n >= 2), (n,) int64, without host syncs.

    Walks a random cyclic order: p[order[k]] = order[k + 1]. The result is a uniformly random single
    n-cycle, which is always a derangement and needs no rejection loop.
    """
    order = torch.randperm(n, generator=generator, device=device)  # (n,)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner

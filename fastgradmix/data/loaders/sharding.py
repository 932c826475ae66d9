"""Which samples a rank trains on in an epoch, and the seeds of its random streams.

One rule for every loader (dali, torch, device), so they agree sample for sample and a resumed run
replays its epoch exactly:

- The epoch's permutation of all N samples depends on (seed, epoch) only: every rank draws the same one.
- Its first ``world_size * steps * batch_size`` positions are dealt round-robin (rank r takes positions
  r, r + W, r + 2W, ..., like torch's DistributedSampler), so the ranks' shards are disjoint and every
  sample is used at most once per epoch. The rest (fewer than ``W * batch_size`` samples) is dropped for
  this epoch only: the last partial batch of training, a different remainder every epoch.
- Augmentation randomness is seeded per (seed, epoch, rank), so ranks draw different views.

A world of K ranks is simulated in one process by K loaders with ranks 0..K-1 (tests/test_loaders.py).
"""

from __future__ import annotations

import numpy as np
import torch

from fastgradmix.common.errors import UserError


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integer parts (seed, epoch, stream, rank, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank {rank}, world_size {world_size})")


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Full batches per rank per epoch (the last partial batch is dropped)."""
    return n // (batch_size * world_size)


def require_steps(n: int, batch_size: int, world_size: int = 1) -> int:
    """steps_per_epoch, or a UserError when there is not even one full batch per rank."""
    steps = steps_per_epoch(n, batch_size, world_size)
    if steps == 0:
        ranks = f" x {world_size} ranks" if world_size > 1 else ""
        raise UserError(f"--batch-size {batch_size}{ranks} exceeds the {n} training images; choose a smaller batch")
    return steps


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Sample indices of this rank's batches in this epoch: (steps_per_epoch, batch_size) int64."""
    check_rank(rank, world_size)
    steps = steps_per_epoch(n, batch_size, world_size)
    order = np.random.default_rng(mix_seed(seed, epoch, 0)).permutation(n)  # the same on every rank
    used = order[:steps * batch_size * world_size]
    return used[rank::world_size].reshape(steps, batch_size).astype(np.int64)


# random streams of a run (seeded_generator's ``stream``); the epoch's sample order is stream 0 (epoch_batches)
GRADMIX_STREAM = 1
DEVICE_AUGMENT_STREAM = 2


def seeded_generator(seed: int, epoch: int, stream: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """An independent random stream per (seed, epoch, stream, rank) on ``device``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seed(seed, epoch, stream, rank))
    return generator

"""``--method moco``: MoCo v2 for the self-supervised term: momentum key encoder, queue of negative keys, InfoNCE.

The query encoder is the trained model itself (encoder + projection head, L2-normalised output). The
key encoder is a copy of it that is never trained by gradients: after every optimizer step its
parameters move towards the query's, ``k <- m k + (1 - m) q`` with m = 0.999, so keys change slowly
and the queue's keys, enqueued over the last K / batch steps, stay comparable with today's. Its
buffers (BatchNorm running statistics) are copied outright: the key encoder runs in training mode
(batch statistics), so they only matter if someone evaluates it, and copies are what the query would give.

Each query q_i = f_q(v1_i) has one positive, its own key k_i = f_k(v2_i), and K negatives, the keys of
earlier batches held in a FIFO queue (K = 8196 in the GradMix paper):
``l(i) = -log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j exp(q_i.queue_j / t)) )``.
With GradMix (or Mixup/CutMix) the mixed view m_i, made from v1_i, is one more query with the same
positive k_i and the same queue of negatives: l_mix(i) = l(i) with q_i replaced by f_q(m_i).

Everything stays on the device: the queue pointer is a device tensor and the ring-buffer write is one
``index_copy_``, so an enqueue never waits for the host. Under torch.distributed every rank enqueues
the keys of the whole global batch (gathered in rank order), so the queues stay identical.

Order within one training step (the queue must not change while the loss still needs it):
``update_key_encoder(model)`` -> ``encode_keys(v2)`` -> queries and ``moco_objective`` -> backward ->
optimizer step -> ``enqueue(keys)``. ``MoCoObjective`` is that order as the training step's objective
(objectives/base.py); ``MoCo`` is the state (a module: its state_dict is the checkpoint's "moco" entry) and
``infonce_per_sample`` / ``moco_objective`` the maths.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fastgradmix.distributed import collectives as dist
from fastgradmix.training.objectives.base import Objective

__all__ = ["MoCo", "MoCoObjective", "infonce_per_sample", "moco_objective"]


class MoCo(nn.Module):
    """The MoCo v2 state: key encoder, queue (K, D) of L2-normalised keys, write pointer.

    ``query_model`` (N, C, H, W) -> (N, D) is copied as the key encoder; pass the bare module, not a
    DistributedDataParallel wrapper. ``state_dict()`` holds ``key_encoder.*``, ``queue`` and
    ``queue_ptr``, so a checkpoint restores the exact state. The queue starts as random unit vectors
    (drawn from ``generator`` when given), as in MoCo: early negatives are noise until K keys came in.

    ``key_splits`` > 1 emulates MoCo's shuffled BatchNorm on one device: the key batch is permuted and
    encoded in that many chunks, so a key's BatchNorm statistics come from a random part of the batch
    rather than the same images as its query's, which would let the model match pairs by batch
    statistics. 1 (the default) encodes the keys in one forward.
    """

    def __init__(self, query_model: nn.Module, feature_dim: int, queue_size: int = 8196, momentum: float = 0.999,
                 key_splits: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"MoCo: queue_size must be >= 1, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MoCo: momentum must lie in [0, 1], got {momentum}")
        if key_splits < 1:
            raise ValueError(f"MoCo: key_splits must be >= 1, got {key_splits}")
        self.momentum = momentum
        self.key_splits = key_splits
        self.key_encoder = copy.deepcopy(query_model)
        for module in self.key_encoder.modules():
            # deepcopy also copied the query's forward hooks (GradMix's CAM capture): the key forward
            # must never feed them
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        self.key_encoder.requires_grad_(False)
        queue = F.normalize(torch.randn(queue_size, feature_dim, generator=generator), dim=1)  # (K, D)
        device = next(query_model.parameters()).device
        self.register_buffer("queue", queue.to(device))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long, device=device))

    @property
    def queue_size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def update_key_encoder(self, query_model: nn.Module) -> None:
        """k <- m k + (1 - m) q for every parameter; buffers copied. Call once per step, before the keys."""
        key_params = list(self.key_encoder.parameters())
        query_params = [p.detach() for p in query_model.parameters()]
        if len(key_params) != len(query_params):
            raise ValueError("MoCo: the query model's parameters do not match the key encoder it was built from")
        # two foreach launches for all parameters instead of two per tensor
        torch._foreach_mul_(key_params, self.momentum)
        torch._foreach_add_(key_params, query_params, alpha=1.0 - self.momentum)
        for key_buffer, query_buffer in zip(self.key_encoder.buffers(), query_model.buffers(), strict=True):
            key_buffer.copy_(query_buffer)

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keys (N, D) fp32, L2-normalised, of ``images`` (N, C, H, W) by the key encoder; no gradient.

        With ``key_splits`` > 1 the batch is encoded in shuffled chunks (``generator`` draws the order)
        and the keys are put back in the input order.
        """
        if self.key_splits == 1:
            return F.normalize(self.key_encoder(images).float(), dim=1)
        order = torch.randperm(images.shape[0], generator=generator, device=images.device)  # (N,)
        shuffled = torch.cat([self.key_encoder(chunk) for chunk in images[order].chunk(self.key_splits)])
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled  # undo the permutation: row order[j] of the input got output row j
        return F.normalize(keys.float(), dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Writes this step's keys (N, D) over the oldest queue entries (all ranks' keys, rank order).

        Call after the backward of the loss that used the queue: the write is in place, and autograd
        keeps the queue to compute the queries' gradient. Keys are L2-normalised on the way in. The
        ring buffer wraps around, so the queue size need not be a multiple of the batch.
        """
        keys = dist.gather(keys.detach())  # (W*N, D), identical on every rank
        count = keys.shape[0]
        if count > self.queue_size:
            raise ValueError(f"MoCo: {count} keys per step exceed the queue size {self.queue_size}; "
                             "use a larger queue")
        slots = (self.queue_ptr + torch.arange(count, device=self.queue.device)) % self.queue_size  # (W*N,)
        self.queue.index_copy_(0, slots, F.normalize(keys.float(), dim=1).to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + count) % self.queue_size)


def infonce_per_sample(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor,
                       temperature: float | torch.Tensor = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE loss per query (N,): positive keys[i], negatives every queue row.

    ``queries`` (N, D) with gradient, ``keys`` (N, D) and ``queue`` (K, D) L2-normalised (both treated
    as constants). Computed in fp32 (float64 for float64 inputs) whatever the autocast dtype.
    """
    dtype = torch.promote_types(queries.dtype, torch.float32)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        queries = queries.to(dtype)
        positive = (queries * keys.detach().to(dtype)).sum(dim=1, keepdim=True)  # (N, 1)
        negatives = queries @ queue.detach().to(dtype).T  # (N, K)
        logits = torch.cat([positive, negatives], dim=1) / temperature  # (N, 1 + K)
        # the positive is column 0: loss = logsumexp over the row - its logit
        return torch.logsumexp(logits, dim=1) - logits[:, 0]


def moco_objective(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor,
                   mixed_queries: torch.Tensor | None = None, mix_weights: torch.Tensor | None = None,
                   lam: float = 1.0, temperature: float | torch.Tensor = 0.2) -> dict[str, torch.Tensor]:
    """L = lam * (mean_i l(i) + mean_i(w_i * l_mix(i))), and its parts, like ``losses.gradmix_objective``.

    l(i) = InfoNCE of queries[i]; l_mix(i) = InfoNCE of mixed_queries[i] (the mixed view of image i)
    with the same positive keys[i] and the same queue. mix_weights (N,) are the w_i (all ones when
    None); without mixed_queries the mix term is a zero tensor. Returns scalar fp32 tensors under
    "loss", "moco" and "mix".
    """
    moco = infonce_per_sample(queries, keys, queue, temperature).mean()
    if mixed_queries is None:
        mix = torch.zeros((), dtype=moco.dtype, device=moco.device)
    else:
        per_sample = infonce_per_sample(mixed_queries, keys, queue, temperature)  # (N,)
        if mix_weights is not None:
            per_sample = per_sample * mix_weights.to(per_sample.dtype)
        mix = per_sample.mean()
    return {"loss": lam * (moco + mix), "moco": moco, "mix": mix}


class MoCoObjective(Objective):
    """lambda L_moco: queries f_q(v1), positive keys f_k(v2), negatives the queue.

    ``module`` is the bare query model (not a DDP wrapper); the key encoder copies it as it is now, before
    any checkpoint is loaded, and the queue starts from ``cfg.seed``.
    """

    state_key = "moco"

    def __init__(self, cfg, module: nn.Module):
        self.module = module
        self.lam = cfg.lam
        self.temperature = cfg.moco_temperature
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.moco = MoCo(module, cfg.feature_dim, cfg.moco_queue, cfg.moco_momentum, cfg.moco_key_splits,
                         generator=torch.Generator().manual_seed(cfg.seed))
        self._keys: torch.Tensor | None = None  # this step's keys (N, D), until they are enqueued

    @property
    def extra_compile_modules(self) -> list[nn.Module]:
        return [self.moco.key_encoder]  # no CAM hooks: compiled as one region

    def before_step(self, view2, generator, autocast) -> None:
        """The key encoder follows the weights of the last update, then encodes v2 (N, C, H, W)."""
        self.moco.update_key_encoder(self.module)
        with autocast():
            self._keys = self.moco.encode_keys(view2.contiguous(memory_format=self.memory_format), generator)

    def clean_views(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        return view1  # (N, C, H, W): the queries' view; v2 went to the key encoder

    def clean_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (N, D) the queries; labels unused."""
        queries = features[:self._keys.shape[0]]  # (N, D)
        return moco_objective(queries, self._keys, self.moco.queue, lam=self.lam, temperature=self.temperature)

    def mix_per_sample(self, z_mix: torch.Tensor, detach_clean: bool) -> torch.Tensor:
        """Positive k_i, negatives the queue: constants, so there is no clean feature to detach."""
        return infonce_per_sample(z_mix, self._keys, self.moco.queue, self.temperature)  # (N,)

    def after_step(self) -> None:
        """Only now: the loss's backward needed the queue as it was."""
        self.moco.enqueue(self._keys)
        self._keys = None

    def state_dict(self) -> dict:
        return self.moco.state_dict()  # key_encoder.*, queue, queue_ptr

    def load_state_dict(self, state: dict) -> None:
        self.moco.load_state_dict(state)

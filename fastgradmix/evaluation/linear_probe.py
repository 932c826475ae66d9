"""Linear evaluation on frozen features: a fixed, deterministic recipe, and a feature cache.

The recipe is L2-regularised multinomial logistic regression on standardised features (mean and std
of the training features), solved full-batch with L-BFGS from a zero start:

    minimise  mean_i CE(W x_i + b, y_i) + weight_decay / 2 * ||W||^2      (b not penalised)

The problem is convex, so the result depends on the features and the recipe only: no seed, no
learning-rate schedule, no batch order, and two runs give the same classifier. (It is the objective
of scikit-learn's LogisticRegression with C = 1 / (weight_decay * N), which the tests use as the
oracle.) Full batch means the training features must fit on the device: 100k x 2048 fp32 is 800 MB.

Features are expensive (a forward of every image), so ``cached_features`` stores them next to the
checkpoint, keyed by the checkpoint's path, modification time and size: a new checkpoint at the
same path recomputes them, an unchanged one loads them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fastgradmix.runs.checkpoint import save_checkpoint

__all__ = [
    "LinearProbe",
    "ProbeRecipe",
    "cached_features",
    "linear_probe",
    "topk_accuracy",
    "train_linear_probe",
]


@dataclass(frozen=True)
class ProbeRecipe:
    weight_decay: float = 1e-4  # on W only; on standardised features
    max_iter: int = 500  # L-BFGS iterations at most
    history_size: int = 20  # L-BFGS memory
    tolerance_grad: float = 1e-7  # stop when every gradient entry is this small
    tolerance_change: float = 1e-9  # or when the loss or the step changes less than this
    iters_per_round: int = 25  # progress-bar granularity (the optimizer state carries over)


class LinearProbe(nn.Module):
    """Standardisation with the training statistics, then a linear layer: (N, D) -> logits (N, C)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)  # (D,)
        self.register_buffer("std", std)  # (D,)
        self.linear = nn.Linear(mean.shape[0], num_classes, device=mean.device, dtype=mean.dtype)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features.to(self.mean.dtype) - self.mean) / self.std)


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       recipe: ProbeRecipe = ProbeRecipe(), progress: bool = True) -> LinearProbe:
    """Fits the probe on ``features`` (N, D) (fp32 or float64; other dtypes become fp32) and
    ``labels`` (N,) in [0, num_classes), on the features' device."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"linear probe: features (N, D) and labels (N,) expected, got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    labels = labels.to(device=features.device, dtype=torch.long)
    mean = features.mean(dim=0)  # (D,)
    std = features.std(dim=0)
    # a constant feature carries nothing; dividing it by 1 instead of ~0 keeps it harmless
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    probe = LinearProbe(mean, std, num_classes)
    standardised = (features - mean) / std  # (N, D), computed once

    optimizer = torch.optim.LBFGS(probe.linear.parameters(), lr=1.0, max_iter=recipe.iters_per_round,
                                  history_size=recipe.history_size, tolerance_grad=recipe.tolerance_grad,
                                  tolerance_change=recipe.tolerance_change, line_search_fn="strong_wolfe")
    state = optimizer.state[probe.linear.weight]  # L-BFGS keeps its state under the first parameter

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = probe.linear(standardised)  # (N, C)
        loss = F.cross_entropy(logits, labels) + 0.5 * recipe.weight_decay * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    done = 0
    with tqdm(total=recipe.max_iter, desc="linear probe", leave=False, disable=not progress, unit="iter") as bar:
        while done < recipe.max_iter:
            budget = min(recipe.iters_per_round, recipe.max_iter - done)
            # line searches may take several evaluations per iteration; let the iterations bound the round
            max_eval = 4 * budget
            optimizer.param_groups[0].update(max_iter=budget, max_eval=max_eval)
            iters_before, evals_before = state.get("n_iter", 0), state.get("func_evals", 0)
            optimizer.step(closure)
            done += budget
            bar.update(budget)
            stopped_early = state.get("n_iter", 0) - iters_before < budget
            if stopped_early and state.get("func_evals", 0) - evals_before < max_eval:
                break  # a tolerance test stopped L-BFGS before its budget ran out: converged
    return probe.requires_grad_(False)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest logits, for each k (capped at C)."""
    labels = labels.to(logits.device).long()
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, k_max)
    hits = top == labels[:, None]  # (N, k_max), at most one True per row
    return {k: float(hits[:, :k].any(dim=1).double().mean()) for k in ks}


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int | None = None, recipe: ProbeRecipe = ProbeRecipe(),
                 progress: bool = True) -> dict[str, float]:
    """Trains the probe on the training features, reports top-1/top-5 accuracy on the test features.

    num_classes defaults to the largest label (train or test) + 1. Returns fractions in [0, 1]:
    ``top1``, ``top5`` (test), ``train_top1``, and ``num_classes``. With fewer than 5 classes top-5 is
    top-C, i.e. 1.
    """
    train_labels = train_labels.long()
    test_labels = test_labels.long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    for name, labels in (("training", train_labels), ("test", test_labels)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"linear probe: {name} labels must lie in [0, {num_classes})")
    probe = train_linear_probe(train_features, train_labels, num_classes, recipe, progress)
    with torch.no_grad():
        test = topk_accuracy(probe(test_features.to(probe.mean.device)), test_labels)
        train = topk_accuracy(probe(train_features.to(probe.mean.device)), train_labels, ks=(1,))
    return {"top1": test[1], "top5": test[5], "train_top1": train[1], "num_classes": num_classes}


def _cache_key(checkpoint: Path, tag: str, extra: dict | None) -> dict:
    stat = checkpoint.stat()
    return {"checkpoint": str(checkpoint.resolve()), "mtime_ns": stat.st_mtime_ns, "size": stat.st_size,
            "tag": tag, "extra": json.dumps(extra or {}, sort_keys=True)}


def cached_features(checkpoint: str | os.PathLike, tag: str, compute: Callable[[], dict[str, torch.Tensor]],
                    cache_dir: str | os.PathLike | None = None, extra: dict | None = None) -> dict[str, torch.Tensor]:
    """``compute()`` once per (checkpoint version, tag, extra); later calls load the saved result.

    ``compute`` returns a dict of tensors (e.g. {"features": (N, D), "labels": (N,)}), saved on the
    CPU atomically to ``cache_dir`` (default: ``<checkpoint folder>/feature_cache``) as
    ``<checkpoint stem>-<tag>-<hash>.pt``. The file is keyed by the checkpoint's resolved path,
    modification time and size, the ``tag`` and ``extra`` (anything else the features depend on,
    e.g. image size or which layer, as JSON-able values): a rewritten checkpoint replaces the file
    of its previous version. An unreadable or mismatching file is recomputed, not an error.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    key = _cache_key(checkpoint, tag, extra)
    # the name leaves out the modification time, so each checkpoint/tag has one file, overwritten
    identity = json.dumps({k: key[k] for k in ("checkpoint", "tag", "extra")}, sort_keys=True)
    digest = hashlib.sha1(identity.encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else checkpoint.parent / "feature_cache"
    path = folder / f"{checkpoint.stem}-{tag}-{digest}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                return stored["tensors"]
        except Exception:  # a torn or foreign file: recompute it
            pass
    tensors = {name: value.detach().cpu() for name, value in compute().items()}
    save_checkpoint(path, {"key": key, "tensors": tensors})
    return tensors

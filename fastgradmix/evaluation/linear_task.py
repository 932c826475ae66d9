"""``--tasks linear``: linear evaluation of a run's frozen encoder, at its last checkpoint and over epochs.

A linear classifier (``linear_probe.py``: standardised features, L2-regularised multinomial logistic
regression solved with L-BFGS, a fixed recipe with no seed) is trained on the frozen features of the
protocol's known training images and tested on its known test images (for closed-set protocols the
whole test set): top-1 and top-5 accuracy. The features are those of the encoder's global pooling,
before the projection head (``encoder``, the usual linear-evaluation protocol of SimCLR and MoCo), or
the L2-normalised head outputs the open-set score uses (``head``). Images are the un-augmented
evaluation views. Features are computed once per checkpoint and cached beside it (``cached_features``:
a rewritten checkpoint is computed again).

Over epochs: every ``epoch_XXX.pt`` a run kept with ``--save-every`` and ``last.pt`` give one point each
of the linear-accuracy curve.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastgradmix.common.precision import Precision
from fastgradmix.common.stats import mean_std
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.linear_probe import ProbeRecipe, cached_features, linear_probe
from fastgradmix.runs.checkpoint import load_checkpoint

FEATURE_KINDS = ("encoder", "head")
_SNAPSHOT = re.compile(r"^epoch_(\d+)\.pt$")


def feature_module(model: nn.Module, kind: str) -> nn.Module:
    """The module whose output is the probe's input: the encoder (pooled, d-dim) or the features Algorithm 1
    scores (the normalised head outputs; a classifier's normalised pooled features)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; choose one of {FEATURE_KINDS}")
    return model.encoder if kind == "encoder" else model.embedder()


def checkpoints_over_epochs(run_dir: Path, last_epoch: int) -> list[tuple[int, Path]]:
    """(epoch, path) of the run's epoch_XXX.pt snapshots up to ``last_epoch``, then last.pt, in epoch order.

    A snapshot of the last checkpoint's epoch is the same model as last.pt: last.pt stands for it.
    """
    snapshots = []
    for path in run_dir.glob("epoch_*.pt"):
        match = _SNAPSHOT.match(path.name)
        if match and int(match.group(1)) < last_epoch:
            snapshots.append((int(match.group(1)), path))
    return sorted(snapshots) + [(last_epoch, run_dir / "last.pt")]


def probe_features(model_at: Callable[[], nn.Module], checkpoint: Path, kind: str, sets: dict[str, torch.Tensor],
                   spec: AugmentSpec, batch_size: int, device: torch.device, precision: Precision, progress: bool,
                   extra: dict) -> dict[str, torch.Tensor]:
    """Features (N, D) of each uint8 image set in ``sets`` under the checkpoint's model, from the cache when
    the checkpoint is unchanged. ``model_at()`` loads the model only when the cache misses; ``extra`` holds
    what else the features depend on (image size, which images)."""
    def compute() -> dict[str, torch.Tensor]:
        module = feature_module(model_at(), kind)
        return {name: extract_features(module, images, spec, batch_size, device, precision,
                                       desc=f"{name} features ({checkpoint.name})", progress=progress)
                for name, images in sets.items()}

    return cached_features(checkpoint, f"linear-{kind}", compute,
                           extra={**extra, "sets": {name: int(images.shape[0]) for name, images in sets.items()}})


def linear_task(checkpoints: list[tuple[int, Path, Callable[[], nn.Module]]], train_images: torch.Tensor,
                train_labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                spec: AugmentSpec, kind: str, batch_size: int, device: torch.device, precision: Precision,
                progress: bool, extra: dict, recipe: ProbeRecipe | None = None) -> dict:
    """The probe at every (epoch, checkpoint path, model loader), the last one being the run's result.

    Returns fractions: top1, top5, train_top1 of the last checkpoint, and ``curve``, one
    {"epoch", "top1", "top5"} per checkpoint in epoch order.
    """
    recipe = recipe or ProbeRecipe()
    curve = []
    result = {}
    for epoch, path, model_at in checkpoints:
        features = probe_features(model_at, path, kind, {"train": train_images, "test": test_images}, spec,
                                  batch_size, device, precision, progress, extra)
        result = linear_probe(features["train"].to(device), train_labels, features["test"].to(device), test_labels,
                              num_classes, recipe, progress)
        curve.append({"epoch": epoch, "top1": result["top1"], "top5": result["top5"]})
    return {"top1": result["top1"], "top5": result["top5"], "train_top1": result["train_top1"],
            "num_classes": num_classes, "n_train": int(train_labels.numel()), "n_test": int(test_labels.numel()),
            "features": kind, "recipe": dataclasses.asdict(recipe), "curve": curve}


def snapshot_loader(path: Path, load_model: Callable[[dict], nn.Module]) -> Callable[[], nn.Module]:
    """A loader of an epoch_XXX.pt model (read only when its features are not cached)."""
    return lambda: load_model(load_checkpoint(path))


def aggregate_linear(per_split: list[tuple[int, dict]]) -> dict:
    """A sweep's linear results: every split's, and mean ± sample std (ddof 1) of top-1 and top-5."""
    results = [result for _, result in per_split]
    rows = [{"split": split, **{k: v for k, v in r.items() if k != "settings"}} for split, r in per_split]
    return {"per_split": rows, "mean": {key: mean_std([r[key] for r in results]) for key in ("top1", "top5")},
            "features": results[0]["features"], "settings": results[0]["settings"],
            "curve_mean": _mean_curve([r["curve"] for r in results])}


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The mean curve over splits at the epochs every split has."""
    epochs = sorted(set.intersection(*({point["epoch"] for point in curve} for curve in curves)))
    mean = []
    for epoch in epochs:
        points = [next(p for p in curve if p["epoch"] == epoch) for curve in curves]
        mean.append({"epoch": epoch, **{key: float(np.mean([p[key] for p in points])) for key in ("top1", "top5")}})
    return mean

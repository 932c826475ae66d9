"""Open-set evaluation: Algorithm 1 scores of any image set against a run's feature bank, and the
evaluation tasks built on them (open-set recognition, closed-set accuracy, OOD detection, corruption
robustness). Everything runs in eval mode on un-augmented images, batched, on the model's device.
Under torch.distributed (a torchrun training run) each rank embeds a share of the images and every rank
gathers all features, so every rank computes the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import EvalViews
from fastgradmix.data.openset import OpenSetData, openness
from fastgradmix.evaluation.corruptions import CORRUPTIONS, corrupt
from fastgradmix.evaluation.features import extract_features_sharded
from fastgradmix.evaluation.metrics import auroc, closed_set_accuracy, ood_metrics
from fastgradmix.evaluation.scoring import class_topk_scores, osr_predict, score_normalized

SCORES = ("sum", "normalized")
CORRUPTION_CHUNK = 1000  # images corrupted per call; fixed so results do not depend on --batch-size


@dataclass
class Scored:
    """Algorithm 1 on a set of images, on the CPU."""

    predictions: torch.Tensor  # (T,) int64, best known class
    open_scores: torch.Tensor  # (T,) float32, higher = known


class BankScorer:
    """The feature bank of a run's known training images; scores any uint8 image batch against it.

    ``score="sum"`` is Algorithm 1 (the open-set score is the best class's top-k similarity sum);
    ``"normalized"`` divides each class score by their sum first, as the published GradMix code does.
    """

    def __init__(self, model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                 device: torch.device, channels_last: bool = False, progress: bool = True, score: str = "sum",
                 views: EvalViews | None = None):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.model, self.spec, self.topk, self.batch_size = model, spec, topk, batch_size
        self.device, self.channels_last, self.progress, self.score_mode = device, channels_last, progress, score
        self.views = views  # the input pipeline's evaluation views (None: made on the device)
        self.num_classes = data.num_known
        self.bank = self.features(data.train_images, "bank features")  # (N_train, D)
        self.bank_labels = data.train_labels.to(device)  # (N_train,)

    def features(self, images: torch.Tensor, desc: str, progress: bool | None = None) -> torch.Tensor:
        """uint8 images (T, C, H, W) -> L2-normalised features (T, D) on the device."""
        return extract_features_sharded(self.model, images, self.spec, self.batch_size, self.device,
                                        self.channels_last, desc=desc,
                                        progress=self.progress if progress is None else progress, views=self.views)

    def score(self, images: torch.Tensor, desc: str = "test features", progress: bool | None = None) -> Scored:
        """uint8 images (T, C, H, W) -> predictions and open-set scores."""
        with torch.no_grad():
            features = self.features(images, desc, progress)  # (T, D)
            class_scores = class_topk_scores(features, self.bank, self.bank_labels, self.num_classes,
                                             k=self.topk)  # (T, K)
            if self.score_mode == "normalized":
                class_scores = score_normalized(class_scores)
            predictions, open_scores = osr_predict(class_scores)
        open_scores = open_scores.cpu()
        if not torch.isfinite(open_scores).all():
            raise UserError(f"--score {self.score_mode} gave non-finite open-set scores (class scores summing to "
                            "zero or below); use --score sum")
        return Scored(predictions.cpu(), open_scores)


def evaluate_open_set(model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                      device: torch.device, channels_last: bool = False, progress: bool = True,
                      score: str = "sum", views: EvalViews | None = None) -> dict:
    """AUROC (None for closed-set protocols), closed-set accuracy and openness of the protocol's test set."""
    scored = BankScorer(model, data, spec, topk, batch_size, device, channels_last, progress, score,
                        views).score(data.test_images)
    is_known = data.test_labels >= 0
    return {
        # closed-set protocols have no unknown test images: no AUROC (null in results.json)
        "auroc": auroc(scored.open_scores[is_known], scored.open_scores[~is_known]) if (~is_known).any() else None,
        "closed_acc": closed_set_accuracy(scored.predictions[is_known], data.test_labels[is_known]),
        "openness": openness(data.num_known, data.num_known + len(data.unknown_classes)),
    }


# --- the tasks ---------------------------------------------------------------------------------------------------

def osr_task(scored: Scored, labels: torch.Tensor, data: OpenSetData) -> dict:
    """Known vs unknown test classes: AUROC and the OOD-style metrics, closed-set accuracy, openness."""
    is_known = labels >= 0
    known, unknown = scored.open_scores[is_known], scored.open_scores[~is_known]
    return {**ood_metrics(known, unknown),
            "closed_acc": closed_set_accuracy(scored.predictions[is_known], labels[is_known]),
            "openness": openness(data.num_known, data.num_known + len(data.unknown_classes)),
            "n_known": int(is_known.sum()), "n_unknown": int((~is_known).sum())}


def closed_task(scored: Scored, labels: torch.Tensor) -> dict:
    """Top-k classifier accuracy on the known test images."""
    is_known = labels >= 0
    return {"closed_acc": closed_set_accuracy(scored.predictions[is_known], labels[is_known]),
            "n": int(is_known.sum())}


def ood_task(known_scores: torch.Tensor, out_scores: torch.Tensor) -> dict:
    """In-distribution (known test) vs an out-of-distribution set: TNR@TPR95, AUROC, DTACC, AUIN, AUOUT."""
    return {**ood_metrics(known_scores, out_scores), "n_in": int(known_scores.numel()),
            "n_out": int(out_scores.numel())}


def corruption_seed(seed: int, name: str, severity: int, chunk: int) -> int:
    """A seed per (corruption, severity, chunk of images), derived from the run's evaluation seed."""
    return int(np.random.SeedSequence([seed, CORRUPTIONS.index(name), severity, chunk]).generate_state(1)[0])


def corrupted_accuracy(scorer: BankScorer, images: torch.Tensor, labels: torch.Tensor, name: str, severity: int,
                       seed: int, table: str | None) -> float:
    """Top-k accuracy on ``images`` (N, C, H, W) uint8 after corruption ``name`` at ``severity``."""
    correct = 0
    for chunk, start in enumerate(range(0, images.shape[0], CORRUPTION_CHUNK)):
        batch = images[start:start + CORRUPTION_CHUNK].to(scorer.device)
        corrupted = corrupt(batch, name, severity, seed=corruption_seed(seed, name, severity, chunk), table=table)
        predictions = scorer.score(corrupted, progress=False).predictions
        correct += int((predictions == labels[start:start + CORRUPTION_CHUNK]).sum())
    return correct / images.shape[0]


def summarise_corruption(clean_acc: float, accuracy: dict[str, list[float]]) -> dict:
    """D_{c,s} = A_clean - A_{c,s}; mean over severities per type and over types."""
    drop = {name: [clean_acc - a for a in values] for name, values in accuracy.items()}
    mean_drop = {name: float(np.mean(values)) for name, values in drop.items()}
    return {"clean_acc": clean_acc, "acc": accuracy, "drop": drop, "mean_drop": mean_drop,
            "overall_mean_drop": float(np.mean(list(mean_drop.values())))}


def corruption_task(scorer: BankScorer, images: torch.Tensor, labels: torch.Tensor, clean_acc: float,
                    names: list[str], severities: list[int], seed: int, table: str | None,
                    progress: bool = True) -> dict:
    """Accuracy drop of the top-k classifier under the generated corruptions, known test images only."""
    accuracy: dict[str, list[float]] = {}
    steps = tqdm(total=len(names) * len(severities), desc="corruptions", disable=not progress, unit="set")
    for name in names:
        accuracy[name] = []
        for severity in severities:
            accuracy[name].append(corrupted_accuracy(scorer, images, labels, name, severity, seed, table))
            steps.update(1)
    steps.close()
    return {**summarise_corruption(clean_acc, accuracy), "severities": severities, "n": int(labels.numel())}


def released_corruption_task(scorer: BankScorer, directory: str, known_classes: list[str], clean_acc: float,
                             names: list[str], severities: list[int], limit: int, seed: int,
                             progress: bool = True) -> dict:
    """Accuracy drop on the released CIFAR-10-C arrays, keeping the images of the run's known classes."""
    from fastgradmix.evaluation.corruptions.released import CIFAR10_CLASSES, load_cifar10_c

    to_known = torch.tensor([known_classes.index(c) if c in known_classes else -1 for c in CIFAR10_CLASSES])
    if (to_known < 0).all():
        raise UserError(f"--corruption-data: the run's known classes ({', '.join(known_classes[:5])} ...) are not "
                        "CIFAR-10 classes; released CIFAR-10-C fits CIFAR-10 runs only")
    accuracy: dict[str, list[float]] = {}
    steps = tqdm(total=len(names) * len(severities), desc="CIFAR-10-C", disable=not progress, unit="set")
    n = 0
    for name in names:
        accuracy[name] = []
        for severity in severities:
            images, labels = load_cifar10_c(directory, name, severity)
            labels = to_known[labels]
            keep = labels >= 0
            images, labels = cap_rows(images[keep], labels[keep], limit, seed)
            accuracy[name].append(closed_set_accuracy(scorer.score(images, progress=False).predictions, labels))
            n = labels.numel()
            steps.update(1)
    steps.close()
    return {**summarise_corruption(clean_acc, accuracy), "severities": severities, "n": int(n)}


def cap_rows(images: torch.Tensor, labels: torch.Tensor, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` rows (0 = all), drawn with ``seed`` and kept in their stored order."""
    if limit <= 0 or images.shape[0] <= limit:
        return images, labels
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(images.shape[0], generator=generator)[:limit].sort().values
    return images[rows], labels[rows]


def aggregate_splits(per_split: list[tuple[int, dict]]) -> dict:
    """A sweep's evaluation: per task, every split's results and the mean ± std (ddof 1, as sweep.py) of each
    metric; corruption accuracies are averaged over splits, then summarised."""
    from fastgradmix.training.sweep import mean_std

    first = per_split[0][1]
    combined: dict = {}

    def stack(results: list[dict]) -> dict:
        metrics = [key for key, value in results[0].items() if isinstance(value, float)]
        rows = [{"split": split, **{k: v for k, v in r.items() if k != "settings"}}
                for (split, _), r in zip(per_split, results, strict=True)]
        return {"per_split": rows, "mean": {key: mean_std([r[key] for r in results]) for key in metrics},
                "settings": results[0]["settings"]}

    for task in ("osr", "closed"):
        if task in first:
            combined[task] = stack([result[task] for _, result in per_split])
    if "ood" in first:
        combined["ood"] = {name: stack([result["ood"][name] for _, result in per_split]) for name in first["ood"]}
    if "corruption" in first:
        runs = [result["corruption"] for _, result in per_split]
        accuracy = {name: np.mean([run["acc"][name] for run in runs], axis=0).tolist() for name in runs[0]["acc"]}
        clean = float(np.mean([run["clean_acc"] for run in runs]))
        overall = [run["overall_mean_drop"] for run in runs]
        combined["corruption"] = {**summarise_corruption(clean, accuracy),
                                  **{k: runs[0][k] for k in ("severities", "table", "source", "settings")},
                                  "n": int(sum(run["n"] for run in runs)),
                                  "per_split_overall_mean_drop": overall, "overall_mean_drop_stats": mean_std(overall)}
    return combined

"""``--tasks corruption``: accuracy drop of the top-k classifier under the 15 Hendrycks & Dietterich
corruptions x 5 severities, generated here (corruptions/) or read from the released CIFAR-10-C arrays.

Generated corruptions are applied CORRUPTION_CHUNK images at a time, each chunk with its own seed derived
from the evaluation's --seed, so the results do not depend on --batch-size.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from fastgradmix.common.errors import UserError
from fastgradmix.evaluation.corruptions import CORRUPTIONS, corrupt
from fastgradmix.evaluation.corruptions.released import CIFAR10_CLASSES, load_cifar10_c
from fastgradmix.evaluation.metrics import closed_set_accuracy
from fastgradmix.evaluation.osr_tasks import cap_rows
from fastgradmix.evaluation.scoring import Scorer

CORRUPTION_CHUNK = 1000  # images corrupted per call; fixed so results do not depend on --batch-size


def corruption_seed(seed: int, name: str, severity: int, chunk: int) -> int:
    """A seed per (corruption, severity, chunk of images), derived from the run's evaluation seed."""
    return int(np.random.SeedSequence([seed, CORRUPTIONS.index(name), severity, chunk]).generate_state(1)[0])


def corrupted_accuracy(scorer: Scorer, images: torch.Tensor, labels: torch.Tensor, name: str, severity: int,
                       seed: int, table: str | None, glass_swap: str = "released") -> float:
    """Top-k accuracy on ``images`` (N, C, H, W) uint8 after corruption ``name`` at ``severity``."""
    correct = 0
    for chunk, start in enumerate(range(0, images.shape[0], CORRUPTION_CHUNK)):
        batch = images[start:start + CORRUPTION_CHUNK].to(scorer.device)
        corrupted = corrupt(batch, name, severity, seed=corruption_seed(seed, name, severity, chunk), table=table,
                            glass_swap=glass_swap)
        predictions = scorer.score(corrupted, progress=False).predictions
        correct += int((predictions == labels[start:start + CORRUPTION_CHUNK]).sum())
    return correct / images.shape[0]


def summarise_corruption(clean_acc: float, accuracy: dict[str, list[float]]) -> dict:
    """D_{c,s} = A_clean - A_{c,s}; mean over severities per type, over types per severity, and over both."""
    drop = {name: [clean_acc - a for a in values] for name, values in accuracy.items()}
    mean_drop = {name: float(np.mean(values)) for name, values in drop.items()}
    # the paper's Table 5: per severity, the mean drop over the corruption types
    severity_mean_drop = np.mean(list(drop.values()), axis=0).tolist()
    return {"clean_acc": clean_acc, "acc": accuracy, "drop": drop, "mean_drop": mean_drop,
            "severity_mean_drop": severity_mean_drop, "overall_mean_drop": float(np.mean(list(mean_drop.values())))}


def corruption_task(scorer: Scorer, images: torch.Tensor, labels: torch.Tensor, clean_acc: float,
                    names: list[str], severities: list[int], seed: int, table: str | None,
                    progress: bool = True, glass_swap: str = "released") -> dict:
    """Accuracy drop of the top-k classifier under the generated corruptions, known test images only."""
    accuracy: dict[str, list[float]] = {}
    steps = tqdm(total=len(names) * len(severities), desc="corruptions", disable=not progress, unit="set")
    for name in names:
        accuracy[name] = []
        for severity in severities:
            accuracy[name].append(corrupted_accuracy(scorer, images, labels, name, severity, seed, table, glass_swap))
            steps.update(1)
    steps.close()
    return {**summarise_corruption(clean_acc, accuracy), "severities": severities, "n": int(labels.numel())}


def released_corruption_task(scorer: Scorer, directory: str, known_classes: list[str], clean_acc: float,
                             names: list[str], severities: list[int], limit: int, seed: int,
                             progress: bool = True) -> dict:
    """Accuracy drop on the released CIFAR-10-C arrays, keeping the images of the run's known classes."""
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

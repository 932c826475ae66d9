"""The end of a training run: results.json's record and the table printed for the user."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from fastgradmix import __version__
from fastgradmix.data.openset import OpenSetData
from fastgradmix.runs.config import Config, resolved_score


def results_record(cfg: Config, data: OpenSetData, scores: dict, train_wall_s: float, images_seen: int,
                   device: torch.device) -> dict:
    return {
        "protocol": cfg.protocol, "split": cfg.split, "method": cfg.method, "aug": cfg.aug,
        "score": resolved_score(cfg.method, cfg.score), "epochs": cfg.epochs, "seed": cfg.seed, **scores,
        "n_train": data.train_images.shape[0], "n_known_test": data.n_known_test,
        "n_unknown_test": data.n_unknown_test,
        "known_classes": data.known_classes, "unknown_classes": data.unknown_classes,
        "train_wall_s": train_wall_s, "images_per_s": images_seen / max(train_wall_s, 1e-9),
        "device": device_name(device), "torch": torch.__version__, "fastgradmix": __version__,
        "python": platform.python_version(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_table(results: dict, run_dir: Path) -> None:
    rows = [
        ("protocol / split", f"{results['protocol']} / {results['split']}"),
        ("AUROC (known vs unknown)", "n/a (closed set: no unknown test images)" if results["auroc"] is None
         else f"{results['auroc']:.4f}"),
        ("closed-set accuracy", f"{results['closed_acc']:.4f}"),
        ("openness", f"{results['openness']:.4f}"),
        ("train / known test / unknown test", f"{results['n_train']} / {results['n_known_test']} / "
                                              f"{results['n_unknown_test']}"),
        ("training time", f"{results['train_wall_s']:.1f} s ({results['images_per_s']:.0f} images/s)"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"results: {run_dir / 'results.json'}")

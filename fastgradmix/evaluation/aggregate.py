"""A sweep's evaluation (``--split all`` folders): per task, every split's results and the mean ± std of
each metric (sample std, ddof 1, as training's sweep table)."""

from __future__ import annotations

import numpy as np

from fastgradmix.common.stats import mean_std
from fastgradmix.evaluation.corruption_task import summarise_corruption
from fastgradmix.evaluation.diversity_task import aggregate_diversity
from fastgradmix.evaluation.linear_task import aggregate_linear
from fastgradmix.runs.folder import Run


def aggregate_runs(per_run: list[tuple[Run, dict]]) -> dict:
    """Every task's per-split results and mean ± std, from (run, its results) of each split."""
    per_split = [(run.cfg.split, results) for run, results in per_run]
    combined = aggregate_splits(per_split)
    if "linear" in per_split[0][1]:
        combined["linear"] = aggregate_linear([(split, results["linear"]) for split, results in per_split])
    if "diversity" in per_split[0][1]:
        combined["diversity"] = aggregate_diversity([(split, results["diversity"]) for split, results in per_split])
    return combined


def aggregate_splits(per_split: list[tuple[int, dict]]) -> dict:
    """A sweep's evaluation: per task, every split's results and the mean ± std (ddof 1, common/stats.py) of each
    metric; corruption accuracies are averaged over splits, then summarised."""
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

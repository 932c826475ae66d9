"""The few lines the evaluation prints when it is done: the headline metric of each task evaluated now, the
tasks skipped and why, and where the report is."""

from __future__ import annotations

from pathlib import Path


def print_summary(root: Path, evaluation: dict) -> None:
    """Prints the summary of ``evaluation`` (results.json's key) on stdout, one aligned line per item."""

    def value(result: dict, key: str) -> str:
        if "mean" in result:
            stat = result["mean"].get(key)
            return "n/a" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"
        return f"{result[key]:.4f}"

    lines = []
    if "osr" in evaluation:
        lines.append(("AUROC (known vs unknown)", value(evaluation["osr"], "auroc")))
    if "closed" in evaluation:
        lines.append(("closed-set accuracy", value(evaluation["closed"], "closed_acc")))
    for name, result in evaluation.get("ood", {}).items():
        lines.append((f"OOD {name}: AUROC / TNR@TPR95", f"{value(result, 'auroc')} / {value(result, 'tnr')}"))
    if "corruption" in evaluation:
        lines.append(("corruption mean accuracy drop", f"{evaluation['corruption']['overall_mean_drop']:.4f}"))
    if "linear" in evaluation:
        linear = evaluation["linear"]
        lines.append((f"linear top-1 / top-5 ({linear['features']} features)",
                      f"{value(linear, 'top1')} / {value(linear, 'top5')}"))
    if "diversity" in evaluation:
        diversity = evaluation["diversity"]
        lines.append(("intrinsic dimension (encoder / head)",
                      f"{value(diversity, 'twonn_encoder')} / {value(diversity, 'twonn_head')}"))
        middle = len(diversity["thresholds"]) // 2
        lines.append((f"activated area S_M({diversity['thresholds'][middle]:.0e})",
                      f"{diversity['activated_area'][middle]:.4f}"))
    for task, why in evaluation.get("skipped", {}).items():
        lines.append((f"{task} skipped", why))
    width = max((len(name) for name, _ in lines), default=0)
    for name, text in lines:
        print(f"{name:<{width}}  {text}")
    print(f"report: {root / 'report.md'}")

"""``fastgradmix.evaluate --tensorboard``: the evaluation's numbers and figures, added to the run's event
files (runs/NAME/tb/, beside the training's; a sweep folder gets its own tb/).

Numbers: every number under results.json's "evaluation" key as ``eval/<task>/<metric>`` (nested keys
become tag paths: ``eval/osr/auroc``, ``eval/ood/<out-set>/auroc``, ...), less the tasks' "settings" and
the run's identity ("run"). Figures: each plots/*.png this
evaluation wrote, as the image ``eval/<name>`` (``eval/roc_osr``, ``eval/cam_grid``, ...). The step is the
run's number of training epochs, so evaluations of checkpoints trained longer line up after earlier ones.
"""

from __future__ import annotations

from pathlib import Path

from fastgradmix.common.tensorboard import add_numbers, add_png, open_writer

__all__ = ["figure_times", "log_evaluation"]

NOT_METRICS = ("settings", "run")  # the options a task ran with, and the run's identity: not plotted


def figure_times(root: Path) -> dict[Path, int]:
    """plots/*.png under ``root`` and their modification times (ns): compared after the evaluation, they
    tell which figures it wrote (each is replaced atomically, so a rewritten figure has a new time)."""
    return {path: path.stat().st_mtime_ns for path in sorted((Path(root) / "plots").glob("*.png"))}


def log_evaluation(root: Path, evaluation: dict, figures_before: dict[Path, int], step: int) -> list[str]:
    """Writes the numbers and the figures written since ``figures_before``; returns the tags."""
    written = [path for path, mtime in figure_times(root).items() if figures_before.get(path) != mtime]
    writer = open_writer(root)
    try:
        tags = add_numbers(writer, "eval", evaluation, step, skip=NOT_METRICS)
        for path in written:
            add_png(writer, f"eval/{path.stem}", path.read_bytes(), step)
            tags.append(f"eval/{path.stem}")
    finally:
        writer.close()
    return tags

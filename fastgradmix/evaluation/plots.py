"""The evaluation report's figures as PNG bytes: ROC curves, known-vs-unknown score histograms, the
corruption-robustness bar chart, the linear-accuracy curve, the activated-area curve and the CAM grid.

Matplotlib's object API with the Agg canvas: no pyplot, no global backend switch, no display needed.
Each function returns the PNG bytes; report.py writes them atomically beside report.md.
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from fastgradmix.evaluation.metrics import auroc

# one series = (label, known scores, unknown scores); scores as 1-D arrays, higher = known
Series = tuple[str, np.ndarray, np.ndarray]


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def roc_png(series: list[Series], title: str) -> bytes:
    """ROC curves (knowns positive): true positive rate against false positive rate, AUROC in the legend."""
    figure = Figure(figsize=(5.2, 4.6), layout="constrained")
    axes = figure.add_subplot()
    for label, known, unknown in series:
        is_known = np.concatenate([np.ones(len(known)), np.zeros(len(unknown))])
        fpr, tpr, _ = roc_curve(is_known, np.concatenate([known, unknown]))
        axes.plot(fpr, tpr, linewidth=1.6, label=f"{label} (AUROC {auroc(known, unknown):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (unknowns accepted)",
             ylabel="true positive rate (knowns accepted)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def histogram_png(series: list[Series], title: str, names: tuple[str, str] = ("known", "unknown")) -> bytes:
    """One panel per series: densities of the open-set score for knowns and unknowns on shared bins."""
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure = Figure(figsize=(4.4 * columns, 3.4 * rows), layout="constrained")
    for index, (label, known, unknown) in enumerate(series):
        axes = figure.add_subplot(rows, columns, index + 1)
        both = np.concatenate([known, unknown])
        bins = np.linspace(both.min(), both.max(), 41) if both.max() > both.min() else 10
        axes.hist(known, bins=bins, density=True, alpha=0.55, color="tab:blue", label=f"{names[0]} ({len(known)})")
        axes.hist(unknown, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"{names[1]} ({len(unknown)})")
        axes.set(xlabel="open-set score (higher = known)", ylabel="density", title=label)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def corruption_png(runs: list[tuple[str, dict]], title: str) -> bytes:
    """Grouped bars of the mean accuracy drop per corruption type (one bar per run), and the drop per
    severity averaged over types. ``runs`` = (label, corruption result with "mean_drop" and "drop")."""
    names = list(runs[0][1]["mean_drop"])
    figure = Figure(figsize=(13, 4.6), layout="constrained")
    bars, lines = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3.2, 1]})
    positions = np.arange(len(names) + 1)  # the types, then their mean
    width = 0.8 / len(runs)
    for index, (label, result) in enumerate(runs):
        values = [result["mean_drop"][name] for name in names] + [result["overall_mean_drop"]]
        bars.bar(positions + (index - (len(runs) - 1) / 2) * width, np.array(values) * 100, width, label=label)
        severities = result.get("severities", list(range(1, 6)))
        per_severity = np.mean([result["drop"][name] for name in names], axis=0) * 100
        lines.plot(severities, per_severity, marker="o", label=label)
    bars.set_xticks(positions, [name.replace("_", " ") for name in names] + ["mean"], rotation=40, ha="right",
                    fontsize=8)
    bars.axhline(0, color="black", linewidth=0.8)
    bars.set(ylabel="accuracy drop (percentage points)", title="mean drop over severities")
    bars.grid(axis="y", alpha=0.3)
    lines.set(xlabel="severity", ylabel="accuracy drop (points)", title="mean over types")
    lines.grid(alpha=0.3)
    if len(runs) > 1:
        bars.legend(fontsize=8)
        lines.legend(fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def linear_curve_png(series: list[tuple[str, list[dict]]], title: str = "linear evaluation over epochs") -> bytes:
    """Top-1 (solid) and top-5 (dashed) linear-probe accuracy against the epoch of each checkpoint, one colour per
    run. ``series`` = (label, [{"epoch", "top1", "top5"}, ...])."""
    figure = Figure(figsize=(5.6, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, curve) in enumerate(series):
        colour = f"C{index}"
        epochs = [point["epoch"] for point in curve]
        axes.plot(epochs, [100 * p["top1"] for p in curve], marker="o", color=colour, label=f"{label} top-1")
        axes.plot(epochs, [100 * p["top5"] for p in curve], marker=".", linestyle="--", color=colour,
                  label=f"{label} top-5")
    axes.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def activated_area_png(series: list[tuple[str, list[float], list[float]]],
                       title: str = "activated area of the LayerCAM maps") -> bytes:
    """S_M(tau) against tau (log axis), one line per run. ``series`` = (label, thresholds, areas in [0, 1])."""
    figure = Figure(figsize=(5.6, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for label, thresholds, areas in series:
        axes.plot(thresholds, 100 * np.asarray(areas), marker="o", label=label)
    axes.set_xscale("log")
    axes.set(xlabel="threshold tau (map normalised to max 1)", ylabel="S_M(tau): pixels above tau (%)", title=title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return _png(figure)


def cam_grid_png(images: np.ndarray, captions: list[str], rows: list[tuple[str, np.ndarray]],
                 title: str = "LayerCAM of test images") -> bytes:
    """A grid: the first row the images, then one row per run with its maps over the image (jet, alpha 0.5).

    images (G, H, W, 3) floats in [0, 1] (gray images repeated); rows = (label, maps (G, H, W) in [0, 1]).
    """
    count = images.shape[0]
    figure = Figure(figsize=(1.5 * count + 0.6, 1.6 * (len(rows) + 1)), layout="constrained")
    grid = figure.subplots(len(rows) + 1, count, squeeze=False)
    for column in range(count):
        grid[0, column].imshow(images[column], interpolation="nearest")
        grid[0, column].set_title(captions[column], fontsize=8)
        for row, (_, maps) in enumerate(rows, start=1):
            grid[row, column].imshow(images[column].mean(axis=2), cmap="gray", interpolation="nearest")
            grid[row, column].imshow(maps[column], cmap="jet", alpha=0.5, vmin=0, vmax=max(float(maps.max()), 1e-12),
                                     interpolation="bilinear")
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    grid[0, 0].set_ylabel("image", fontsize=8)
    for row, (label, _) in enumerate(rows, start=1):
        grid[row, 0].set_ylabel(textwrap.fill(label, 18), fontsize=8)  # wrapped: labels of adjacent rows must not meet
    figure.suptitle(title)
    return _png(figure)

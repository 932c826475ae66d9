"""The report's figures for the tasks evaluated now, as PNG bytes per path under the run folder
(plots/*.png): which series each figure shows and how they are labelled; the drawing itself is plots.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastgradmix.evaluation import plots


def figures(series_per_run: list[tuple[str, dict]], evaluation: dict, compare: dict | None,
            compare_series: dict | None = None) -> dict[str, bytes]:
    """PNG bytes per report path, for the tasks evaluated now (``compare_series``: the other run's diversity)."""
    out: dict[str, bytes] = {}
    osr = [(label or "known vs unknown", *s["osr"]) for label, s in series_per_run if "osr" in s]
    if osr:
        out["plots/roc_osr.png"] = plots.roc_png(osr, "open-set recognition")
        out["plots/hist_osr.png"] = plots.histogram_png(osr, "open-set scores")
    ood = [(f"{label} {name}".strip(), *pair) for label, s in series_per_run for name, pair in s.get("ood", {}).items()]
    if ood:
        out["plots/roc_ood.png"] = plots.roc_png(ood, "OOD detection")
        out["plots/hist_ood.png"] = plots.histogram_png(ood, "OOD scores", names=("in-distribution", "out-set"))
    if "corruption" in evaluation:
        compared = compare is not None and "corruption" in compare
        runs = [(f"this run ({compare['this_aug']})" if compared else "this run", evaluation["corruption"])]
        if compared:
            runs.append((f"{compare['run']} ({compare['aug']})", compare["corruption"]))
        out["plots/corruption.png"] = plots.corruption_png(runs, f"corruption robustness ({runs[0][1]['table']})")
    this_label = f"this run ({compare['this_aug']})" if compare else "this run"
    linear = [(label or this_label, s["linear"]) for label, s in series_per_run if "linear" in s]
    if linear:
        out["plots/linear_curve.png"] = plots.linear_curve_png(linear)
    diversity = [(label or this_label, s["diversity"]) for label, s in series_per_run if "diversity" in s]
    if diversity:
        if compare_series is not None:
            diversity.append((f"{compare['run']} ({compare['aug']})", compare_series))
        out["plots/activated_area.png"] = plots.activated_area_png(
            [(label, d["thresholds"], d["area"]) for label, d in diversity],
            f"activated area of the LayerCAM maps ({evaluation['diversity']['cam_layers']})")
        first = diversity[0][1]["grid"]  # a sweep shows its first split
        rows = [(diversity[0][0], first["maps"].numpy())]
        if compare_series is not None:
            # the folder's name, not its path: a row label has the height of one row of maps
            rows.append((f"{Path(compare['run']).name} ({compare['aug']})", compare_series["grid"]["maps"].numpy()))
        out["plots/cam_grid.png"] = plots.cam_grid_png(_display_images(first["images"]), first["captions"], rows,
                                                       "LayerCAM of test images (score of the best known class)")
    return out


def _display_images(images: torch.Tensor) -> np.ndarray:
    """uint8 (G, C, H, W) -> float (G, H, W, 3) in [0, 1] for matplotlib (gray repeated)."""
    pixels = images.float().div(255)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels.permute(0, 2, 3, 1).numpy()

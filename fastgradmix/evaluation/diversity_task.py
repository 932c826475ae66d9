"""``--tasks diversity``: how diverse a run's features are, and how much of an image its CAM covers.

- Intrinsic dimension (TwoNN, ``diversity_measures.py``), both of the encoder's pooled features and of the
  L2-normalised features the open-set score uses: ``--id-features test`` (default) of all known test images
  together; ``train-per-class``, the published code's Table 1 (ID.py), of each known class's training images
  on its own, averaged over the classes.
- Activated area S_M(tau) (``diversity_measures.activated_area``) of LayerCAM maps of the known test images, for
  tau log-spaced over 1e-5 .. 1e-3, at the run's CAM layers: ``--area-maps raw`` (default; the paper's eq. 7 and
  the published activation_map_stats.py) counts pixels of the raw map M = ReLU(sum_c ReLU(G_c) A_c), not
  normalised, at each CAM layer's own resolution (several layers: their pixels together); ``normalized``
  divides each map by its maximum and upsamples it to the input size first, as GradMix's box search sees it.
- A grid of test images (known and unknown) with their LayerCAM overlaid, for the report.

Which loss defines G for a test image: training's G comes from the contrastive loss of two augmented
views and their labels, which a test image does not have. Here G = d s(x) / dA, the gradient of the
image's open-set score s(x) = max_c sum of its top-k cosine similarities to class c's training features
(Algorithm 1, the bank fixed), so the map shows where the image's evidence for its best known class lies.
It needs no label and no augmentation (the same for known and unknown images), and each image's map
depends on that image alone: the model is in eval mode (BatchNorm with running statistics), so one
backward of the batch's summed scores gives every image its own gradient. LayerCAM as in training:
M = ReLU(sum_c ReLU(G_c) A_c), normalised per image by its maximum, several layers upsampled and summed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fastgradmix.common.precision import FP32, Precision
from fastgradmix.common.stats import mean_std
from fastgradmix.data.augment import AugmentSpec, eval_view
from fastgradmix.evaluation.diversity_measures import (
    DEFAULT_AREA_THRESHOLDS,
    activated_area,
    twonn_dimension,
    twonn_per_class,
)
from fastgradmix.evaluation.topk_similarity import class_topk_scores
from fastgradmix.gradmix import reference
from fastgradmix.gradmix.capture import CamCapture

AREA_MAPS = ("raw", "normalized")
ID_FEATURES = ("test", "train-per-class")


@torch.no_grad()
def raw_layercam(acts: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """The raw LayerCAM maps of the layers, M_l = ReLU(sum_c ReLU(G_c) A_c) at each layer's (h_l, w_l), not
    normalised, their pixels side by side: (N, 1, sum_l h_l w_l) fp32 (a map shape ``activated_area`` takes)."""
    flat = [(g.float().clamp_min(0) * a.float()).sum(dim=1).clamp_min(0).flatten(1)  # (N, h_l w_l)
            for a, g in zip(acts, grads, strict=True)]
    return torch.cat(flat, dim=1).unsqueeze(1)


@torch.no_grad()
def cam_map_sizes(model: nn.Module, layers: list[str], channels: int, size: int, device: torch.device) -> str:
    """The CAM layers' map resolutions, e.g. "conv5_2 4x4" (one eval-mode forward of a blank image)."""
    was_training = model.training
    model.eval()
    capture = CamCapture(model, layers)
    try:
        capture.arm()
        model(torch.zeros(1, channels, size, size, device=device))
        shapes = [tuple(a.shape[-2:]) for a in capture.activations]
    finally:
        capture.disarm()
        capture.remove()
        model.train(was_training)
    return ", ".join(f"{name} {h}x{w}" for name, (h, w) in zip(layers, shapes, strict=True))


def score_cam_maps(model: nn.Module, images: torch.Tensor, spec: AugmentSpec, layers: list[str],
                   bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, topk: int, batch_size: int,
                   device: torch.device, precision: Precision = FP32, progress: bool = True,
                   desc: str = "CAM maps", kind: str = "normalized") -> torch.Tensor:
    """LayerCAM maps fp32 on the CPU of uint8 ``images`` (T, C, H, W) for the open-set score against ``bank``
    (B, D) L2-normalised features with ``bank_labels`` (B,) (see the module docstring): ``kind="normalized"``
    (T, size, size), each layer's map divided by its maximum, upsampled and summed; ``"raw"`` (T, 1, P), the
    raw maps at the layers' resolutions (``raw_layercam``). The model runs in ``precision`` (activations and
    gradients bf16 under bf16 autocast); scores and maps are fp32."""
    if kind not in AREA_MAPS:
        raise ValueError(f"kind must be one of {AREA_MAPS}, got {kind!r}")
    was_training = model.training
    model.eval()
    capture = CamCapture(model, layers)
    maps = []
    try:
        starts = range(0, images.shape[0], batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=not progress, unit="batch"):
            batch = eval_view(images[start:start + batch_size].to(device), spec)  # (b, C, size, size)
            batch = batch.contiguous(memory_format=precision.memory_format)
            capture.arm()
            with torch.enable_grad():
                with precision.autocast(device.type):
                    features = model(batch)  # (b, D) fp32: the model normalises in fp32
                capture.disarm()
                scores = class_topk_scores(features, bank.detach(), bank_labels, num_classes, k=topk)  # (b, K)
                open_score = scores.max(dim=1).values  # (b,)
                gradients = torch.autograd.grad(open_score.sum(), capture.activations)
            acts = [a.detach() for a in capture.activations]  # each (b, C_l, h_l, w_l)
            if kind == "raw":
                maps.append(raw_layercam(acts, list(gradients)).cpu())
            else:
                maps.append(reference.layercam(acts, list(gradients), out_size=(spec.size, spec.size)).cpu())
    finally:
        capture.disarm()
        capture.remove()
        model.train(was_training)
    if maps:
        return torch.cat(maps)
    return torch.empty(0, 1, 0) if kind == "raw" else torch.empty(0, spec.size, spec.size)


def grid_rows(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (<= count,) of test images for the CAM grid: evenly spaced over the known images and, when the
    protocol has unknown test images, half of them evenly spaced over the unknowns. Deterministic."""
    known = (labels >= 0).nonzero().flatten()
    unknown = (labels < 0).nonzero().flatten()
    n_unknown = min(count // 2, unknown.numel()) if unknown.numel() else 0
    n_known = min(count - n_unknown, known.numel())

    def spread(rows: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return rows[:0]
        return rows[torch.linspace(0, rows.numel() - 1, n).round().long()]

    return torch.cat([spread(known, n_known), spread(unknown, n_unknown)])


def diversity_task(encoder_features: torch.Tensor, head_features: torch.Tensor, maps: torch.Tensor,
                   layers: list[str], thresholds=DEFAULT_AREA_THRESHOLDS, area_maps: str = "normalized",
                   id_labels: torch.Tensor | None = None, class_names: list[str] | None = None,
                   map_size: str = "") -> dict:
    """Intrinsic dimensions of the features (M, D) and S_M(tau) of the maps (N, H, W) of the N known test images.

    ``id_labels`` (M,): the features are training images, their dimension estimated per class and averaged
    (``--id-features train-per-class``); None: of all M features together (the test images'). ``area_maps``
    and ``map_size`` say which maps S_M counted (raw at the CAM layers' resolutions, or normalised).
    """
    result = {"id_features": "test" if id_labels is None else "train-per-class"}
    if id_labels is None:
        result.update(twonn_encoder=twonn_dimension(encoder_features.double()),
                      twonn_head=twonn_dimension(head_features.double()))
    else:
        for key, features in (("twonn_encoder", encoder_features), ("twonn_head", head_features)):
            mean, per_class = twonn_per_class(features.double(), id_labels)
            names = class_names or [str(c) for c in range(max(per_class) + 1)]
            result[key] = mean
            result[f"{key}_per_class"] = {names[c]: value for c, value in per_class.items()}
    return {**result, "n_id": int(encoder_features.shape[0]),
            "thresholds": [float(t) for t in thresholds],
            "activated_area": activated_area(maps, thresholds).tolist(),
            "area_maps": area_maps, "map_size": map_size,
            "cam_layers": "+".join(layers), "n": int(maps.shape[0])}


def aggregate_diversity(per_split: list[tuple[int, dict]]) -> dict:
    """A sweep's diversity: every split's, mean ± sample std of the dimensions, the mean S_M curve."""
    results = [result for _, result in per_split]
    rows = [{"split": split, **{k: v for k, v in r.items() if k != "settings"}} for split, r in per_split]
    return {"per_split": rows,
            "mean": {key: mean_std([r[key] for r in results]) for key in ("twonn_encoder", "twonn_head")},
            "thresholds": results[0]["thresholds"], "cam_layers": results[0]["cam_layers"],
            **{key: results[0].get(key) for key in ("id_features", "area_maps", "map_size")},
            "activated_area": np.mean([r["activated_area"] for r in results], axis=0).tolist(),
            "settings": results[0]["settings"]}

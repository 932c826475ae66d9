"""Feature-diversity measures: intrinsic dimension (TwoNN) of features, activated area of CAM maps.

**TwoNN** (Facco, d'Errico, Rodriguez and Laio, Sci. Rep. 2017). For each point, r1 and r2 are the
distances to its first and second nearest neighbours and mu = r2 / r1. If the density is roughly
constant over the scale of the second neighbour, mu follows a Pareto law, P(mu > x) = x^-d, whatever
the density, and d is the intrinsic dimension. Two estimators of d are offered:

- ``"fit"`` (default), the paper's: sort mu, take the empirical CDF F(mu_(i)) = i / N for i = 1..N
  (it starts at 1/N, as Facco et al. and the published GradMix code's ID.py write it), and fit the
  line -log(1 - F) = d log(mu) through the origin by least squares, after discarding the largest
  10% of mu (``discard_fraction``; the largest mu, where F = 1 and -log(1 - F) is infinite, always).
  The tail of mu is where the constant-density assumption fails first (the second neighbour far
  away, near boundaries or in sparse regions); this is also what Ansuini et al. (NeurIPS 2019) used
  for network representations, so numbers are comparable.
- ``"mle"``: the maximum-likelihood estimate of the Pareto exponent, d = N / sum(log mu), on all
  points (discarding a tail would bias the likelihood, which assumes the full law).

Points with a duplicate (r1 = 0) are left out: their ratio is undefined. Distances are computed
chunk by chunk (``chunk_size`` query rows against all points), so 10k x 10k costs a few hundred MB at
most; float64 by default, because near neighbours of low-dimensional data are close and the fast
|a|^2 + |b|^2 - 2 a.b form loses their distance to cancellation in float32 (the shortlist it picks is
re-measured as |a - b| in any case).

**Per class** (``twonn_per_class``), as the published code's Table 1 (ID.py): each class's points are
their own set (neighbours only within the class), the dimension is estimated per class and averaged
over the classes. One batched neighbour search serves every class: distances to points of other
classes are masked out.

**Activated area** S_M(tau): the fraction of CAM map pixels above tau (strictly), for a list of
thresholds, by default 9 values log-spaced over 1e-5 .. 1e-3. A model that looks at more of the image
has a larger area at small tau.
"""

from __future__ import annotations

import torch

__all__ = [
    "DEFAULT_AREA_THRESHOLDS",
    "activated_area",
    "area_thresholds",
    "two_nearest_distances",
    "twonn_dimension",
    "twonn_dimension_from_ratios",
    "twonn_per_class",
    "twonn_ratios",
]


def area_thresholds(low: float = 1e-5, high: float = 1e-3, count: int = 9) -> list[float]:
    """``count`` thresholds log-spaced from ``low`` to ``high`` inclusive (9 -> four per decade)."""
    if count == 1:
        return [low]
    step = (high / low) ** (1.0 / (count - 1))
    return [low * step**i for i in range(count - 1)] + [high]


DEFAULT_AREA_THRESHOLDS = tuple(area_thresholds())


def activated_area(maps: torch.Tensor, thresholds=DEFAULT_AREA_THRESHOLDS, per_map: bool = False) -> torch.Tensor:
    """S_M(tau): fraction of pixels with value > tau, per threshold; float64.

    maps (N, H, W) (e.g. ``reference.layercam`` output). Returns (T,) over all maps together, or with
    ``per_map`` (N, T), one row per map, so large sets can be processed in batches and averaged (the
    maps share one size, so the mean of the rows is the overall fraction).
    """
    if maps.dim() != 3:
        raise ValueError(f"activated_area: maps must be (N, H, W), got {tuple(maps.shape)}")
    flat = maps.reshape(maps.shape[0], -1)  # (N, H*W)
    # one reduction per threshold (a handful) rather than an (N, H*W, T) comparison tensor
    counts = torch.stack([(flat > tau).sum(dim=1) for tau in thresholds], dim=1)  # (N, T) int64
    fractions = counts.double() / flat.shape[1]  # (N, T)
    return fractions if per_map else fractions.mean(dim=0)


def two_nearest_distances(points: torch.Tensor, chunk_size: int = 1024,
                          dtype: torch.dtype = torch.float64, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Distances (N, 2) from each point of ``points`` (N, D) to its two nearest other points, sorted.

    Computed on the points' device, ``chunk_size`` rows at a time against all N points: the 8
    nearest candidates by |a|^2 + |b|^2 - 2 a.b (one matmul), then their distances measured directly.
    A point is excluded from its own neighbours by index, so a duplicate elsewhere counts (distance 0).
    ``groups`` (N,) int: neighbours only within a point's group (each group needs at least 3 points).
    """
    if points.dim() != 2 or points.shape[0] < 3:
        raise ValueError(f"TwoNN needs points (N, D) with N >= 3, got {tuple(points.shape)}")
    if groups is not None:
        groups = groups.to(points.device)
        if groups.shape != points.shape[:1]:
            raise ValueError(f"groups {tuple(groups.shape)} must be ({points.shape[0]},)")
        if groups.unique(return_counts=True)[1].min() < 3:
            raise ValueError("TwoNN per group needs at least 3 points in every group")
    points = points.to(dtype)
    # centring changes no distance but shrinks |a|^2 + |b|^2 - 2 a.b, so less of it cancels
    points = points - points.mean(dim=0, keepdim=True)  # (N, D)
    squared_norms = (points * points).sum(dim=1)  # (N,)
    count = points.shape[0]
    shortlist = min(count - 1, 8)  # candidates ranked by the fast formula, then measured exactly
    nearest = []
    for start in range(0, count, chunk_size):
        chunk = points[start:start + chunk_size]  # (c, D)
        rows = torch.arange(chunk.shape[0], device=points.device)
        squared = squared_norms[start:start + chunk_size, None] + squared_norms[None, :] - 2 * chunk @ points.T
        squared = squared.clamp_min(0)  # (c, N); rounding can go slightly negative
        squared[rows, start + rows] = float("inf")  # not one's own neighbour
        if groups is not None:  # nor a point of another group
            squared.masked_fill_(groups[start:start + chunk_size, None] != groups[None, :], float("inf"))
        candidates = squared.topk(shortlist, dim=1, largest=False).indices  # (c, s)
        # re-measure the shortlist directly: |a - b| is exact for duplicates (0) and keeps the
        # precision of close pairs that the expansion above rounds away
        exact = (chunk[:, None, :] - points[candidates]).norm(dim=2)  # (c, s)
        # a small group's shortlist reaches past its finite candidates (into other groups, or the point itself):
        # what was excluded above stays excluded
        exact.masked_fill_(squared.gather(1, candidates).isinf(), float("inf"))
        nearest.append(exact.topk(2, dim=1, largest=False).values)  # (c, 2), ascending
    return torch.cat(nearest)


def twonn_ratios(points: torch.Tensor, chunk_size: int = 1024, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """mu = r2 / r1 (M,) for every point with r1 > 0 (points with a duplicate are left out)."""
    distances = two_nearest_distances(points, chunk_size, dtype)  # (N, 2)
    r1, r2 = distances[:, 0], distances[:, 1]
    keep = r1 > 0
    return r2[keep] / r1[keep]


def twonn_dimension_from_ratios(mu: torch.Tensor, method: str = "fit", discard_fraction: float = 0.1) -> float:
    """Intrinsic dimension from the ratios mu (M,) >= 1; see the module docstring for the methods."""
    mu = mu.double().flatten()
    if mu.numel() < 2:
        raise ValueError(f"TwoNN needs at least 2 ratios, got {mu.numel()}")
    log_mu = mu.log()  # (M,)
    if method == "mle":
        return float(mu.numel() / log_mu.sum())
    if method != "fit":
        raise ValueError(f"unknown TwoNN method {method!r}; choose 'fit' or 'mle'")
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must lie in [0, 1), got {discard_fraction}")
    count = mu.numel()
    log_mu = log_mu.sort().values
    # the largest ratio has F = 1 (-log(1 - F) infinite): it never enters the fit
    kept = max(1, min(count - 1, int(count * (1 - discard_fraction))))
    empirical_cdf = torch.arange(1, count + 1, dtype=torch.float64, device=mu.device) / count  # (M,) i / N, i >= 1
    x = log_mu[:kept]  # (kept,)
    y = -torch.log1p(-empirical_cdf[:kept])  # -log(1 - F)
    # least squares through the origin: d = sum(x y) / sum(x x)
    return float((x * y).sum() / (x * x).sum())


def twonn_dimension(points: torch.Tensor, method: str = "fit", discard_fraction: float = 0.1,
                    chunk_size: int = 1024, dtype: torch.dtype = torch.float64) -> float:
    """TwoNN intrinsic dimension of ``points`` (N, D), e.g. the test features of a model."""
    return twonn_dimension_from_ratios(twonn_ratios(points, chunk_size, dtype), method, discard_fraction)


def twonn_per_class(points: torch.Tensor, labels: torch.Tensor, method: str = "fit", discard_fraction: float = 0.1,
                    chunk_size: int = 1024, dtype: torch.dtype = torch.float64) -> tuple[float, dict[int, float]]:
    """TwoNN of each class of ``points`` (N, D) with ``labels`` (N,), and their mean over the classes (ID.py's
    Table 1 number). Classes with fewer than 3 points are left out. Returns (mean, {class: dimension})."""
    labels = labels.to(points.device).long()
    classes, counts = labels.unique(return_counts=True)
    enough = classes[counts >= 3]
    keep = torch.isin(labels, enough)
    if enough.numel() == 0:
        raise ValueError("TwoNN per class needs a class with at least 3 points")
    points, labels = points[keep], labels[keep]
    distances = two_nearest_distances(points, chunk_size, dtype, groups=labels)  # (N, 2), within each class
    r1, r2 = distances[:, 0], distances[:, 1]
    per_class = {}
    for label in enough.tolist():  # a fit per class: a handful of sorts, not a loop over points
        in_class = (labels == label) & (r1 > 0)
        per_class[label] = twonn_dimension_from_ratios(r2[in_class] / r1[in_class], method, discard_fraction)
    return float(sum(per_class.values()) / len(per_class)), per_class

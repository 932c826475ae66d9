"""``window_argmax``: per sample, the top-left corner of the box with the largest map sum, on the device.

Twin of ``fastgradmix.gradmix.reference.window_argmax`` (same name, signature and tie rule: the smallest y,
then the smallest x). Two launches, no host read:

1. ``_row_window_sums``: for every row r and column x, the sum of ``maps[i, r, x : x + box_w[i]]``;
2. ``_box_argmax``: one program per sample adds ``box_h[i]`` consecutive row sums for every candidate
   corner, keeps the best, and writes (y, x).

Sums are direct fp32 sliding sums, O(H * W * (box_h + box_w)) adds per sample, all from cache for the
map sizes GradMix uses (the input resolution). Boxes with the same contents are summed in the same order,
so they tie exactly and the tie rule holds; integer-valued maps sum exactly. The reference sums in
float64 instead, so two boxes whose sums differ by less than fp32 rounding may be ordered differently.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgradmix.gradmix.checks import check_per_sample
from fastgradmix.kernels import _common


@triton.jit
def _row_window_sums(
    maps_ptr, box_w_ptr, row_sums_ptr, height, width, map_sn, map_sh, map_sw,
    BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):
    sample = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)[:, None]  # (Y, 1)
    box_w = tl.load(box_w_ptr + sample).to(tl.int32)
    source = maps_ptr + sample.to(tl.int64) * map_sn + rows * map_sh  # (Y, 1)
    target = row_sums_ptr + sample.to(tl.int64) * height * width + rows * width  # (Y, 1), contiguous
    for x0 in range(0, width, BLOCK_X):
        cols = x0 + tl.arange(0, BLOCK_X)[None, :]  # (1, X)
        total = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        for offset in range(0, box_w):  # left to right: equal windows add equal values in the same order
            keep = (rows < height) & (cols + offset < width)
            total += tl.load(source + (cols + offset) * map_sw, mask=keep, other=0.0).to(tl.float32)
        tl.store(target + cols, total, mask=(rows < height) & (cols < width))


@triton.jit
def _box_argmax(
    row_sums_ptr, box_h_ptr, box_w_ptr, top_ptr, left_ptr, height, width,
    BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):
    sample = tl.program_id(0)
    box_h = tl.load(box_h_ptr + sample).to(tl.int32)
    box_w = tl.load(box_w_ptr + sample).to(tl.int32)
    row_sums = row_sums_ptr + sample.to(tl.int64) * height * width
    best_sum = tl.full([], float("-inf"), tl.float32)
    best_index = tl.zeros([], tl.int32)  # y * W + x; stays 0 when no box fits, as in the reference
    # Only corners with the box inside the map: y <= H - box_h, x <= W - box_w.
    for y0 in range(0, height - box_h + 1, BLOCK_Y):
        ys = y0 + tl.arange(0, BLOCK_Y)[:, None]  # (Y, 1)
        for x0 in range(0, width - box_w + 1, BLOCK_X):
            xs = x0 + tl.arange(0, BLOCK_X)[None, :]  # (1, X)
            valid = (ys <= height - box_h) & (xs <= width - box_w)  # (Y, X)
            total = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
            for offset in range(0, box_h):  # top to bottom, the same order for every candidate
                total += tl.load(row_sums + (ys + offset) * width + xs, mask=valid, other=0.0)
            total = tl.where(valid, total, float("-inf"))
            tile_best = tl.max(tl.max(total, axis=1), axis=0)
            # The first maximal candidate of the tile in row-major order, then the tile against the best
            # so far: a larger sum wins, an equal sum only with a smaller index.
            flat = ys * width + xs
            tile_index = tl.min(tl.min(tl.where(valid & (total == tile_best), flat, height * width), axis=1), axis=0)
            better = (tile_best > best_sum) | ((tile_best == best_sum) & (tile_index < best_index))
            best_sum = tl.where(better, tile_best, best_sum)
            best_index = tl.where(better, tile_index, best_index)
    tl.store(top_ptr + sample, (best_index // width).to(tl.int64))
    tl.store(left_ptr + sample, (best_index % width).to(tl.int64))


@torch.no_grad()
def window_argmax(
    maps: torch.Tensor, box_h: torch.Tensor, box_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corner of the box with the largest map sum, per sample, with per-sample box sizes.

    ``maps`` (N, H, W) float, any strides; ``box_h``, ``box_w`` (N,) integer tensors with
    ``1 <= box_h[i] <= H`` and ``1 <= box_w[i] <= W`` (not checked; a box larger than the map yields
    (0, 0)). Ties go to the smallest y, then the smallest x. Returns int64 (N,) tensors ``(y, x)``.
    """
    if maps.dim() != 3:
        raise ValueError(f"window_argmax: maps must be (N, H, W), got {tuple(maps.shape)}")
    n, height, width = maps.shape
    check_per_sample("window_argmax", n, box_h=box_h, box_w=box_w)
    device = maps.device
    box_h, box_w = box_h.to(device=device), box_w.to(device=device)  # no-ops when already there
    top = _common.empty((n,), torch.int64, device)
    left = _common.empty((n,), torch.int64, device)
    if n == 0 or height * width == 0:
        return top, left
    row_sums = _common.empty((n, height, width), torch.float32, device)  # scratch, fully written by pass 1

    block_x = min(triton.next_power_of_2(width), 128)
    block_y = max(1, min(triton.next_power_of_2(height), 2048 // block_x))
    _row_window_sums[(n, triton.cdiv(height, block_y))](
        maps, box_w, row_sums, height, width, maps.stride(0), maps.stride(1), maps.stride(2),
        BLOCK_Y=block_y, BLOCK_X=block_x,
    )
    _box_argmax[(n,)](row_sums, box_h, box_w, top, left, height, width, BLOCK_Y=block_y, BLOCK_X=block_x)
    return top, left

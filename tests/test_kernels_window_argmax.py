"""The Triton ``window_argmax`` against every box sum computed in float64 here (and the reference).

The kernel sums in fp32, the reference in float64, so only where the answer is unambiguous must they
agree exactly: the kernel's box must be within fp32 rounding of the best sum, and where every box that
close has exactly the best float64 sum (integer maps: exact ties, the tie rule decides) it must be the
first of them in (y, x) order. Random float maps usually have one clear winner, which is then required.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from fastgradmix.gradmix import reference
from fastgradmix.kernels.window_argmax import window_argmax

# (batch, H, W, box sizes [(bh, bw), ...] or None for random per sample, map values, dtype)
# "integers": small whole numbers, exact in fp32 and with many exactly tied boxes (the tie rule).
CASES = [
    (4, 7, 9, None, "uniform", torch.float32),  # odd sizes, random boxes
    (4, 7, 9, None, "integers", torch.float32),
    (5, 13, 11, None, "integers", torch.float32),
    (1, 13, 11, [(4, 6)], "uniform", torch.float32),  # batch 1
    (3, 1, 1, [(1, 1)] * 3, "uniform", torch.float32),  # 1x1 map: the only answer is (0, 0)
    (4, 3, 2, [(1, 1), (3, 2), (1, 2), (3, 1)], "integers", torch.float32),  # map below 4x4
    (4, 6, 5, [(1, 1), (6, 5), (1, 5), (6, 1)], "integers", torch.float32),  # side 1, whole map
    (3, 64, 64, [(1, 1), (13, 29), (64, 64)], "uniform", torch.float32),  # 64x64 maps
    (3, 64, 64, [(32, 32), (6, 6), (20, 50)], "integers", torch.float32),
    (2, 5, 150, None, "integers", torch.float32),  # wider than one column tile (128): tiles compared
    (3, 16, 16, None, "uniform", "transposed"),  # a strided view (x-major in memory), not copied
    (4, 10, 12, None, "integers", torch.bfloat16),
    (4, 10, 12, None, "uniform", torch.float16),
]
if torch.cuda.is_available():  # sizes of a real batch, too slow for the interpreter
    CASES += [(256, 32, 32, None, "uniform", torch.float32), (64, 64, 64, None, "integers", torch.float32)]


def _maps(gen, batch, height, width, values, dtype):
    if values == "uniform":
        maps = torch.rand(batch, height, width, generator=gen)
    else:
        maps = torch.randint(0, 4, (batch, height, width), generator=gen).float()
    if dtype == "transposed":
        return maps.transpose(1, 2).contiguous().transpose(1, 2)  # same values, strides (HW, 1, H)
    return maps.to(dtype)


def _check_against_all_box_sums(maps, box_h, box_w, y, x) -> int:
    """Asserts the rules of the module docstring per sample; returns how many answers were pinned exactly."""
    pinned = 0
    for i in range(maps.shape[0]):
        bh, bw = int(box_h[i]), int(box_w[i])
        values = maps[i].double().numpy()
        sums = sliding_window_view(values, (bh, bw)).sum(axis=(2, 3))  # (H - bh + 1, W - bw + 1), float64
        best = sums.max()
        # fp32 running sums of bh + bw terms, each below the box total: a loose bound on their error
        tolerance = 4 * (bh + bw) * 2.0**-24 * np.abs(values).max() * bh * bw
        near = np.argwhere(sums >= best - tolerance)  # row-major: sorted by y, then x
        yi, xi = int(y[i]), int(x[i])
        assert 0 <= yi < sums.shape[0] and 0 <= xi < sums.shape[1], f"sample {i}: box outside the map"
        assert sums[yi, xi] >= best - tolerance, f"sample {i}: sum {sums[yi, xi]} far below the best {best}"
        if all(sums[tuple(where)] == best for where in near):
            assert (yi, xi) == tuple(near[0]), f"sample {i}: tie rule wants {tuple(near[0])}, got {(yi, xi)}"
            pinned += 1
    return pinned


@pytest.mark.parametrize("case_index", range(len(CASES)))
def test_window_argmax_kernel_finds_the_best_box(case_index, kernel_device, poison_kernel_outputs):
    batch, height, width, boxes, values, dtype = CASES[case_index]
    gen = torch.Generator().manual_seed(5000 + case_index)
    maps = _maps(gen, batch, height, width, values, dtype)
    if boxes is None:
        box_h = torch.randint(1, height + 1, (batch,), generator=gen)
        box_w = torch.randint(1, width + 1, (batch,), generator=gen)
    else:
        box_h, box_w = (torch.tensor(side) for side in zip(*boxes, strict=True))

    device_maps = maps.to(kernel_device)
    if dtype == "transposed":
        device_maps = device_maps.transpose(1, 2).contiguous().transpose(1, 2)
        assert not device_maps.is_contiguous()
    y, x = window_argmax(device_maps, box_h.to(kernel_device), box_w.to(kernel_device))

    assert y.dtype == torch.int64 and x.dtype == torch.int64 and y.shape == x.shape == (batch,)
    y, x = y.cpu(), x.cpu()
    pinned = _check_against_all_box_sums(maps, box_h, box_w, y, x)
    if values == "integers":  # every answer is exact there, so the tie rule is checked on every sample
        assert pinned == batch
    # where pinned down, the answer is also the reference's
    ref_y, ref_x = reference.window_argmax(maps, box_h, box_w)
    if pinned == batch:
        assert torch.equal(y, ref_y) and torch.equal(x, ref_x)


def test_window_argmax_kernel_separates_a_clear_winner(kernel_device):
    # random maps with one planted hot box per sample: the answer must be that box exactly
    gen = torch.Generator().manual_seed(5100)
    maps = torch.rand(6, 20, 24, generator=gen)
    box_h = torch.tensor([3, 5, 1, 7, 20, 4])
    box_w = torch.tensor([4, 2, 1, 9, 24, 24])
    corners = [(5, 7), (15, 0), (19, 23), (0, 15), (0, 0), (9, 0)]
    for i, (top, left) in enumerate(corners):
        maps[i, top:top + box_h[i], left:left + box_w[i]] += 2.0
    y, x = window_argmax(maps.to(kernel_device), box_h.to(kernel_device), box_w.to(kernel_device))
    assert list(zip(y.tolist(), x.tolist(), strict=True)) == corners


def test_window_argmax_kernel_ties_go_to_smallest_y_then_x(kernel_device, poison_kernel_outputs):
    maps = torch.zeros(4, 9, 9)
    maps[1, 6, 1] = maps[1, 2, 7] = 1.0  # different rows: the smaller y wins
    maps[2, 4, 6] = maps[2, 4, 2] = 1.0  # same row: the smaller x wins
    maps[3, 6, 1] = maps[3, 2, 7] = 1.0  # 3x3 boxes: the topmost box holding (2, 7) starts at y = 0, x = 5
    box = torch.tensor([4, 1, 1, 3])
    y, x = window_argmax(maps.to(kernel_device), box.to(kernel_device), box.to(kernel_device))
    assert y.tolist() == [0, 2, 4, 0] and x.tolist() == [0, 7, 2, 5]  # sample 0: all-zero map -> origin


def test_window_argmax_kernel_ties_across_column_tiles(kernel_device):
    # 130 columns span two tiles of 128: an equal sum found in the second tile wins only with a smaller y
    maps = torch.zeros(2, 3, 130)
    maps[:, 2, 5] = maps[:, 1, 129] = 1.0  # sample 0: (1, 129) comes first in row-major order
    maps[1, 1, 129] = 0.0
    maps[1, 2, 128] = 1.0  # sample 1: (2, 5) comes before (2, 128)
    box = torch.ones(2, dtype=torch.long, device=kernel_device)
    y, x = window_argmax(maps.to(kernel_device), box, box)
    assert y.tolist() == [1, 2] and x.tolist() == [129, 5]


def test_window_argmax_kernel_accepts_int32_sizes(kernel_device):
    gen = torch.Generator().manual_seed(5200)
    maps = torch.randint(0, 3, (3, 9, 8), generator=gen).float()
    box_h, box_w = torch.tensor([2, 9, 4]), torch.tensor([3, 1, 8])
    y, x = window_argmax(maps.to(kernel_device), box_h.int().to(kernel_device), box_w.int().to(kernel_device))
    assert _check_against_all_box_sums(maps, box_h, box_w, y.cpu(), x.cpu()) == 3


@pytest.mark.parametrize(
    ("maps", "box_h", "message"),
    [
        (torch.rand(2, 4), torch.ones(2, dtype=torch.long), r"\(N, H, W\)"),
        (torch.rand(2, 4, 4), torch.ones(3, dtype=torch.long), "box_h must be a tensor of shape"),
    ],
)
def test_window_argmax_kernel_rejects_bad_shapes(maps, box_h, message):
    with pytest.raises(ValueError, match=message):
        window_argmax(maps, box_h, torch.ones(2, dtype=torch.long))

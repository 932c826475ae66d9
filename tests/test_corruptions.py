"""Corruptions: shapes, determinism, severity ordering, published tables, and each building block against an
independent reference (scipy.ndimage, PIL, colorsys, plain loops of ImageMagick's and the benchmark's algorithms)."""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from fastgradmix.common.errors import UserError
from fastgradmix.evaluation.corruptions import CORRUPTIONS, blur, corrupt, digital, parameters, table_for_side
from fastgradmix.evaluation.corruptions.filters import (
    box_resize_matrix,
    clipped_zoom,
    gaussian_filter,
    motion_blur,
    plasma_fractal,
)
from fastgradmix.evaluation.corruptions.released import load_cifar10_c
from fastgradmix.evaluation.corruptions.tables import Elastic

# corruptions whose output does not depend on the seed
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


def scenes(n: int, side: int, channels: int = 3, seed: int = 0, width: int | None = None) -> torch.Tensor:
    """Natural-looking uint8 test images (N, C, side, width): smooth colour fields plus a few flat squares."""
    width = width or side
    g = torch.Generator().manual_seed(seed)
    base = gaussian_filter(torch.rand(n, channels, side, width, generator=g), side / 6, "reflect")
    low, high = base.amin(dim=(2, 3), keepdim=True), base.amax(dim=(2, 3), keepdim=True)
    base = 0.15 + 0.6 * (base - low) / (high - low)
    ys, xs = torch.arange(side).view(1, side, 1), torch.arange(width).view(1, 1, width)
    for _ in range(3):
        top, left = torch.randint(0, side // 2, (2, n, 1, 1), generator=g)
        size = torch.randint(side // 6, side // 2, (n, 1, 1), generator=g)
        inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
        base = torch.where(inside[:, None], torch.rand(n, channels, 1, 1, generator=g), base)
    return (base * 255).round().to(torch.uint8)


def mean_abs_change(images: torch.Tensor, name: str, seed: int = 5, table: str | None = None) -> list[float]:
    return [(corrupt(images, name, s, seed=seed, table=table).float() - images.float()).abs().mean().item()
            for s in range(1, 6)]


# --- every corruption, every severity ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 16, 16), (2, 3, 20, 28)], ids=["rgb32", "grey16", "rgb20x28"])
def test_all_corruptions_keep_shape_and_dtype(shape):
    images = scenes(shape[0], shape[2], shape[1], width=shape[3])
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            out = corrupt(images, name, severity, seed=1)
            assert out.dtype == torch.uint8 and out.shape == images.shape, (name, severity)


def test_tinyimagenet_table_at_64px_keeps_shape():
    images = scenes(2, 64)
    for name in CORRUPTIONS:
        out = corrupt(images, name, 5, seed=1)
        assert out.dtype == torch.uint8 and out.shape == images.shape, name


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_for_a_seed(name):
    images = scenes(4, 32)
    first = corrupt(images, name, 3, seed=11)
    assert torch.equal(first, corrupt(images, name, 3, seed=11))
    other = corrupt(images, name, 3, seed=12)
    if name in DETERMINISTIC:
        assert torch.equal(first, other)
    else:
        assert not torch.equal(first, other)


def test_bad_arguments():
    images = scenes(1, 32)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "spatter", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images.float(), "fog", 1)


# --- severity ordering ------------------------------------------------------------------------------------------

# the mean |corrupted - clean| grows strictly with severity for these at 32 px (CIFAR-10-C) and 64 px
# (Tiny-ImageNet-C); the other types are checked below against what their published parameters imply
MONOTONE = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "snow", "fog",
            "brightness", "contrast", "jpeg_compression")


@pytest.mark.parametrize("side", [32, 64])
def test_severity_increases_the_change(side):
    images = scenes(12, side)
    names = MONOTONE + (("motion_blur", "pixelate") if side == 64 else ())
    for name in names:
        change = mean_abs_change(images, name)
        assert all(a < b for a, b in zip(change, change[1:], strict=False)), (name, change)


def test_severity_ordering_of_the_cifar_exceptions():
    images = scenes(12, 32)
    # motion blur: severities 3 and 4 share sigma 2 and differ in radius (6 vs 8: 13 vs 17 taps); the extra taps
    # weigh exp(-169 / 8) relative and less, no visible difference; all other steps increase
    motion = mean_abs_change(images, "motion_blur")
    assert motion[0] < motion[1] < motion[2] < motion[4] and abs(motion[3] - motion[2]) < 0.01 * motion[2]
    # pixelate: sides 30, 28, 27, 24, 20; box-resampling aliasing makes 28 and 27 differ little either way
    pixel = mean_abs_change(images, "pixelate")
    assert pixel[0] < pixel[1] and pixel[2] < pixel[3] < pixel[4]
    # glass blur: severities 4 and 5 repeat the shuffle of 2 and 3 (same blur sigma) twice
    glass = mean_abs_change(images, "glass_blur")
    assert glass[3] > glass[1] and glass[4] > glass[2]
    # frost: severities 1 and 2 keep the image weight 1 and raise the frost weight 0.2 -> 0.3
    frost = mean_abs_change(images, "frost")
    assert frost[1] > frost[0]


def test_elastic_parts_follow_the_table():
    # the table shrinks the affine jitter (0.08 -> 0.03 of the side) and grows the local displacement
    # (alpha / sigma from 0 to 3.3), so each part is checked alone
    images = scenes(12, 32).float() / 255
    affine_only, local_only = [], []
    for severity in range(1, 6):
        p = parameters("elastic_transform", severity, "cifar10-c")
        for part, store in ((Elastic(0, 0, p.affine), affine_only), (Elastic(p.alpha, p.sigma, 0), local_only)):
            out = digital.elastic_transform(images, part, torch.Generator().manual_seed(3))
            store.append((out - images).abs().mean().item())
    assert all(a > b for a, b in zip(affine_only, affine_only[1:], strict=False)), affine_only
    assert local_only[0] < 1e-6 and all(a < b for a, b in zip(local_only, local_only[1:], strict=False)), local_only


# --- published parameter tables ---------------------------------------------------------------------------------

def test_table_values_match_the_published_scripts():
    # make_cifar_c.py / make_tinyimagenet_c.py of hendrycks/robustness
    assert [parameters("gaussian_noise", s, "cifar10-c") for s in range(1, 6)] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert [parameters("gaussian_noise", s, "tinyimagenet-c") for s in range(1, 6)] == [0.04, 0.08, 0.12, 0.15, 0.18]
    assert [parameters("shot_noise", s, "cifar10-c") for s in range(1, 6)] == [500, 250, 100, 75, 50]
    assert [parameters("jpeg_compression", s, "cifar10-c") for s in range(1, 6)] == [80, 65, 58, 50, 40]
    assert [parameters("jpeg_compression", s, "tinyimagenet-c") for s in range(1, 6)] == [65, 58, 50, 40, 25]
    assert tuple(parameters("motion_blur", 5, "cifar10-c")) == (9, 2.5)
    assert tuple(parameters("glass_blur", 4, "tinyimagenet-c")) == (0.7, 2, 1)
    assert tuple(parameters("snow", 5, "cifar10-c")) == (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)
    assert tuple(parameters("elastic_transform", 2, "cifar10-c")) == (0.05, 0.2, 0.07)
    assert table_for_side(32) == "cifar10-c" and table_for_side(64) == "tinyimagenet-c"
    assert len(blur.zoom_factors(1.06)) == 7  # np.arange(1, 1.06, 0.01) includes 1.06


@pytest.mark.parametrize("table,side", [("cifar10-c", 32), ("tinyimagenet-c", 64)])
def test_gaussian_noise_std_per_severity(table, side):
    grey = torch.full((64, 3, side, side), 128, dtype=torch.uint8)  # far from the clipping limits
    for severity in range(1, 6):
        noise = (corrupt(grey, "gaussian_noise", severity, seed=severity).float() - 128) / 255
        expected = parameters("gaussian_noise", severity, table)
        assert noise.std().item() == pytest.approx(expected, rel=0.03), severity


def test_shot_noise_variance_and_impulse_fraction():
    grey = torch.full((64, 3, 32, 32), 102, dtype=torch.uint8)  # x = 0.4
    for severity in range(1, 6):
        photons = parameters("shot_noise", severity, "cifar10-c")
        values = corrupt(grey, "shot_noise", severity, seed=severity).float() / 255
        # Poisson(x c) / c has variance x / c (before uint8 rounding, which adds 1 / (12 * 255^2))
        assert values.var().item() == pytest.approx(0.4 / photons + 1 / (12 * 255 ** 2), rel=0.06), severity
        amount = parameters("impulse_noise", severity, "cifar10-c")
        hit = corrupt(grey, "impulse_noise", severity, seed=severity) != 102
        assert hit.float().mean().item() == pytest.approx(amount, rel=0.08), severity


def test_contrast_and_brightness_formulas():
    images = scenes(3, 32)
    x = images.double() / 255
    for severity in range(1, 6):
        c = parameters("contrast", severity, "cifar10-c")
        mean = x.mean(dim=(2, 3), keepdim=True)
        expected = (((x - mean) * c + mean).clamp(0, 1) * 255).round()
        assert (corrupt(images, "contrast", severity).double() - expected).abs().max() <= 1


def test_brightness_matches_hsv_round_trip():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    pixels[0, :, 0, 0] = 0  # a black pixel: saturation 0, becomes grey
    shift = parameters("brightness", 4, "cifar10-c")
    expected = np.empty(pixels.shape)
    for row in range(6):
        for col in range(6):
            h, s, v = colorsys.rgb_to_hsv(*(pixels[0, :, row, col] / 255))
            expected[0, :, row, col] = colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0))
    got = corrupt(torch.from_numpy(pixels), "brightness", 4).numpy()
    assert np.abs(got.astype(float) - np.round(expected * 255)).max() <= 1


# --- building blocks against independent references -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize("sigma,truncate", [(0.4, 4.0), (1.3, 4.0), (6.4, 3.0), (0.1, 4.0)])
def test_gaussian_filter_matches_scipy(mode, sigma, truncate):
    rng = np.random.default_rng(1)
    images = rng.random((2, 3, 12, 15))
    got = gaussian_filter(torch.from_numpy(images), sigma, mode, truncate).numpy()
    expected = ndimage.gaussian_filter(images, sigma=(0, 0, sigma, sigma), mode=mode, truncate=truncate)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def benchmark_clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """The benchmark's clipped_zoom on one (H, W, C) image, with scipy's zoom."""
    h = image.shape[0]
    crop = math.ceil(h / factor)
    top = (h - crop) // 2
    zoomed = ndimage.zoom(image[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


@pytest.mark.parametrize("factor", [1.0, 1.01, 1.05, 1.1, 1.25, 1.75, 2.25])
def test_clipped_zoom_matches_scipy_zoom(factor):
    rng = np.random.default_rng(2)
    images = rng.random((2, 3, 32, 32))
    got = clipped_zoom(torch.from_numpy(images), factor).numpy()
    for index in range(2):
        expected = benchmark_clipped_zoom(images[index].transpose(1, 2, 0), factor).transpose(2, 0, 1)
        np.testing.assert_allclose(got[index], expected, atol=1e-9)


def test_displace_matches_map_coordinates_reflect():
    rng = np.random.default_rng(3)
    image = rng.random((1, 1, 10, 12))
    dx, dy = rng.uniform(-3, 3, (10, 12)), rng.uniform(-3, 3, (10, 12))  # many samples fall outside
    got = digital.displace(torch.from_numpy(image), torch.from_numpy(dx)[None], torch.from_numpy(dy)[None]).numpy()
    ys, xs = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    expected = ndimage.map_coordinates(image[0, 0], [ys + dy, xs + dx], order=1, mode="reflect")
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-9)


def imagemagick_motion_blur(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage, pixel by pixel, on one (H, W) channel."""
    width = int(2 * math.ceil(radius) + 1)
    kernel = np.array([math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(width)])
    kernel /= kernel.sum()
    point_x, point_y = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(point_x, point_y)
    offsets = [(math.ceil(i * point_y / hyp - 0.5), math.ceil(i * point_x / hyp - 0.5)) for i in range(width)]
    h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            for weight, (ox, oy) in zip(kernel, offsets, strict=False):
                out[y, x] += weight * image[min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)]
    return out


def test_motion_blur_matches_imagemagick_algorithm():
    rng = np.random.default_rng(4)
    images = rng.random((3, 2, 11, 13))
    angles = np.array([-44.0, 10.0, 135.0])
    got = motion_blur(torch.from_numpy(images), 6, 2.0, torch.from_numpy(angles)).numpy()
    for n in range(3):
        for c in range(2):
            np.testing.assert_allclose(got[n, c], imagemagick_motion_blur(images[n, c], 6, 2.0, angles[n]),
                                       atol=1e-12)


def test_glass_shuffle_matches_sequential_swaps():  # swap="true": the pixels exchanged
    rng = np.random.default_rng(5)
    images = rng.random((2, 3, 9, 8))
    d = 2
    visits = blur.glass_shift_count(9, 8, d)
    shifts = rng.integers(-d, d, (2, visits, 2, 2))
    got = blur.shuffle_locally(torch.from_numpy(images), d, torch.from_numpy(shifts), swap="true").numpy()
    expected = images.transpose(0, 2, 3, 1).copy()  # (N, H, W, C)
    for n in range(2):
        for iteration in range(2):
            visit = 0
            for h in range(9 - d, d, -1):
                for w in range(8 - d, d, -1):
                    dy, dx = shifts[iteration, visit, :, n]
                    here, there = expected[n, h, w].copy(), expected[n, h + dy, w + dx].copy()
                    expected[n, h, w], expected[n, h + dy, w + dx] = there, here
                    visit += 1
    np.testing.assert_array_equal(got, expected.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("in_size,out_size", [(32, 30), (32, 27), (32, 20), (20, 32), (64, 57), (27, 32)])
def test_box_resize_matrix_matches_pil(in_size, out_size):
    rng = np.random.default_rng(6)
    row = rng.integers(0, 256, (1, in_size)).astype(np.uint8)
    expected = np.asarray(Image.fromarray(row).resize((out_size, 1), Image.BOX), dtype=float)
    got = torch.from_numpy(row.astype(float)) @ box_resize_matrix(in_size, out_size).T
    np.testing.assert_array_equal(np.floor(got.numpy() + 0.5), expected)  # PIL rounds halves up


def test_pixelate_matches_pil_box_resizes():
    images = scenes(4, 32)
    for severity in range(1, 6):
        fraction = parameters("pixelate", severity, "cifar10-c")
        got = corrupt(images, "pixelate", severity).numpy()
        for n in range(4):
            pil = Image.fromarray(images[n].permute(1, 2, 0).numpy())
            small = int(32 * fraction)
            expected = np.asarray(pil.resize((small, small), Image.BOX).resize((32, 32), Image.BOX))
            diff = np.abs(got[n].transpose(1, 2, 0).astype(int) - expected)
            assert diff.max() == 0, (severity, n, diff.max())


def test_jpeg_equals_pil_round_trip():
    images = scenes(2, 32)
    got = corrupt(images, "jpeg_compression", 2).numpy()
    for n in range(2):
        buffer = io.BytesIO()
        Image.fromarray(images[n].permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=65)
        np.testing.assert_array_equal(got[n].transpose(1, 2, 0), np.asarray(Image.open(buffer)))


def test_defocus_kernel_and_affine_warp_match_opencv():
    cv2 = pytest.importorskip("cv2")
    for radius, alias_blur in [(0.3, 0.4), (1.5, 0.1), (3, 0.1)]:
        grid = np.arange(-8, 9)
        xs, ys = np.meshgrid(grid, grid)
        disk = ((xs ** 2 + ys ** 2) <= radius ** 2).astype(np.float64)
        disk /= disk.sum()
        expected = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
        got = blur.disk_kernel(radius, alias_blur).numpy()
        trim = (17 - got.shape[0]) // 2
        np.testing.assert_allclose(got, expected[trim:17 - trim, trim:17 - trim], atol=1e-12)
        assert np.abs(expected).sum() == pytest.approx(np.abs(got).sum())  # nothing non-zero was trimmed
    image = scenes(1, 32)[0].permute(1, 2, 0).numpy().astype(np.float32) / 255
    source = digital.affine_control_points(32, 32)
    target = source + torch.tensor([[1.5, -2.0], [0.7, 2.2], [-2.4, 0.3]], dtype=torch.float64)
    matrix = cv2.getAffineTransform(source.numpy().astype(np.float32), target.numpy().astype(np.float32))
    expected = cv2.warpAffine(image, matrix, (32, 32), borderMode=cv2.BORDER_REFLECT_101)
    got = digital.affine_warp(torch.from_numpy(image).permute(2, 0, 1)[None], source, target[None])[0]
    # OpenCV interpolates with 1/32-pixel fixed-point weights
    assert np.abs(got.permute(1, 2, 0).numpy() - expected).max() < 0.02


def test_plasma_fractal_range_and_smoothness():
    g = torch.Generator().manual_seed(0)
    rough = plasma_fractal(8, 32, 1.5, g)
    smooth = plasma_fractal(8, 32, 3.0, g)
    for field in (rough, smooth):
        assert field.shape == (8, 32, 32)
        assert torch.allclose(field.amin(dim=(1, 2)), torch.zeros(8)) and torch.allclose(field.amax(dim=(1, 2)),
                                                                                          torch.ones(8))
    roughness = [(f - f.roll(1, dims=2)).abs().mean().item() for f in (rough, smooth)]
    assert roughness[0] > roughness[1]  # a larger decay damps the fine levels: smoother haze


# --- released CIFAR-10-C ----------------------------------------------------------------------------------------

def test_load_released_cifar10_c(tmp_path):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (5 * 6, 32, 32, 3)).astype(np.uint8)  # 6 images per severity
    labels = np.tile(np.arange(6), 5).astype(np.uint8)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    pixels, got_labels = load_cifar10_c(tmp_path, "fog", 3)
    assert pixels.shape == (6, 3, 32, 32) and pixels.dtype == torch.uint8
    assert torch.equal(pixels, torch.from_numpy(images[12:18]).permute(0, 3, 1, 2))
    assert got_labels.tolist() == list(range(6))
    with pytest.raises(UserError, match="snow.npy not found"):
        load_cifar10_c(tmp_path, "snow", 1)
    np.save(tmp_path / "bad.npy", images[:7])
    with pytest.raises(UserError, match="expected uint8"):
        load_cifar10_c(tmp_path, "bad", 1)


@pytest.mark.parametrize("height,width,d,channels", [(9, 8, 2, 3), (7, 7, 1, 3), (6, 11, 1, 1)])
def test_released_glass_shuffle_is_the_benchmarks_numpy_loop(height, width, d, channels):
    """The benchmark's loop restated on (H, W, C) NumPy arrays: the tuple assignment swaps views, so (h', w')
    is copied onto (h, w) (numpy issue 14428). Single-channel images follow the same rule here."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (2, channels, height, width)).astype(np.uint8)
    visits = blur.glass_shift_count(height, width, d)
    shifts = rng.integers(-d, d, (2, visits, 2, 2))  # (iterations, visits, (dy, dx), N)
    got = blur.shuffle_locally(torch.from_numpy(images), d, torch.from_numpy(shifts)).numpy()
    for n in range(2):
        x = images[n].transpose(1, 2, 0).copy()  # (H, W, C), as the scripts hold an image
        for iteration in range(2):
            visit = 0
            for h in range(height - d, d, -1):
                for w in range(width - d, d, -1):
                    dy, dx = shifts[iteration, visit, :, n]
                    h_prime, w_prime = h + dy, w + dx
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]  # the scripts' line, verbatim
                    visit += 1
        np.testing.assert_array_equal(got[n], x.transpose(2, 0, 1))
    # the copy loses pixels: some value of the input is gone, which a true swap never does
    swapped = blur.shuffle_locally(torch.from_numpy(images), d, torch.from_numpy(shifts), swap="true").numpy()
    assert sorted(swapped[0].ravel().tolist()) == sorted(images[0].ravel().tolist())
    assert not np.array_equal(got, swapped)


def test_glass_blur_swap_option_reaches_the_shuffle():
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    released = corrupt(images, "glass_blur", 5, seed=4)
    assert torch.equal(released, corrupt(images, "glass_blur", 5, seed=4, glass_swap="released"))
    assert not torch.equal(released, corrupt(images, "glass_blur", 5, seed=4, glass_swap="true"))


def test_frost_blends_crops_of_the_benchmarks_photographs_when_installed(tmp_path, monkeypatch):
    """Stand-in photographs in the package layout: every output is the blend with a crop of one of the five
    photographs scaled by 0.2 (32 px and below), at some position."""
    import torch.nn.functional as F

    from fastgradmix.evaluation.corruptions import weather
    from fastgradmix.evaluation.corruptions.tables import TABLES

    rng = np.random.default_rng(8)
    for name in weather.FROST_PHOTOGRAPHS + ("frost6.jpg",):
        Image.fromarray(rng.integers(0, 256, (60, 75, 3)).astype(np.uint8)).save(tmp_path / name, quality=95)
    monkeypatch.setattr(weather, "frost_photograph_folder", lambda: tmp_path)
    weather.frost_photographs.cache_clear()
    try:
        assert "benchmark's frost photographs" in weather.frost_source()
        images = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
        out = corrupt(images, "frost", 3, seed=5, table="cifar10-c").double()
        p = TABLES["cifar10-c"]["frost"][2]
        scaled = []
        for name in weather.FROST_PHOTOGRAPHS:  # 60 x 75 -> 12 x 15, bilinear, half-pixel centres
            pixels = torch.from_numpy(np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=np.float32).copy())
            scaled.append(F.interpolate(pixels.permute(2, 0, 1)[None], size=(12, 15), mode="bilinear",
                                        align_corners=False)[0].double())
        for n in range(4):
            candidates = [(p.image_weight * images[n].double() + p.frost_weight * photo[:, y:y + 8, x:x + 8])
                          .clamp(0, 255).round()
                          for photo in scaled for y in range(12 - 8) for x in range(15 - 8)]
            # float32 blending in the library: a value at .5 may round either way
            best = min(candidates, key=lambda c: float((c - out[n]).abs().sum()))
            assert float((best - out[n]).abs().max()) <= 1.0 and float((best - out[n]).abs().mean()) < 0.02
    finally:
        weather.frost_photographs.cache_clear()

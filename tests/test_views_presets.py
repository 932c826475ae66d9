"""The training views the presets give: MNIST's are the image up to a rotation within +-5 degrees (the published
RandomRotation((-5, 5)), nothing else), SVHN's are flipped about half the time (the paper's SimCLR views), for the
device loader's batched ops and for the torchvision loader. The rotation is recovered against SciPy's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from fastgradmix.data.augment import augment_view, view_spec
from fastgradmix.data.loaders.torch_workers import view_transform
from fastgradmix.runs.config import parse_args

SIZE = 32
ANGLES = np.round(np.arange(-9.0, 9.0001, 0.1), 1)


def _spec(protocol: str, data_flip: bool, data_color: bool, *extra: str):
    cfg, _ = parse_args(["--protocol", protocol, *extra])
    channels = 1 if protocol == "mnist" else 3
    return view_spec(cfg.views, cfg.image_size, (0.25,) * channels, (0.5,) * channels, data_flip, data_color,
                     cfg.rotate_degrees)


def _digit_like() -> np.ndarray:
    """An asymmetric 32x32 pattern with a black border (what a rotation moves in and out stays black)."""
    image = np.zeros((SIZE, SIZE))
    image[8:24, 12:15] = 1.0  # a bar
    image[8:11, 12:22] = 0.8  # a flag at the top
    image[18:21, 17:20] = 0.5  # a dot
    return ndimage.gaussian_filter(image, 0.7)


def _best_angle(view: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """The angle in ANGLES whose SciPy rotation of ``image`` (bilinear, about the centre, zeros outside) is
    closest to ``view``, and that distance (mean absolute difference)."""
    errors = [np.abs(ndimage.rotate(image, angle, reshape=False, order=1, mode="constant", cval=0.0) - view).mean()
              for angle in ANGLES]
    best = int(np.argmin(errors))
    return float(ANGLES[best]), float(errors[best])


def _device_views(spec, image: np.ndarray, count: int, channels: int) -> np.ndarray:
    batch = torch.from_numpy(np.round(image * 255)).to(torch.uint8).expand(count, channels, SIZE, SIZE)
    views = augment_view(batch.contiguous(), spec, torch.Generator().manual_seed(0))
    return (views * 0.5 + 0.25).numpy()  # back to [0, 1]


def _torch_views(spec, image: np.ndarray, count: int, channels: int) -> np.ndarray:
    transform = view_transform(spec, channels)
    pixels = torch.from_numpy(np.round(image * 255)).to(torch.uint8).expand(channels, SIZE, SIZE).contiguous()
    views = []
    for index in range(count):
        torch.manual_seed(index)
        views.append(transform(pixels))
    return (torch.stack(views) * 0.5 + 0.25).numpy()


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_mnist_paper_views_are_the_image_up_to_a_small_rotation(loader):
    spec = _spec("mnist", False, False)
    assert (spec.crop, spec.flip, spec.color, spec.rotate_degrees) == (False, False, False, 5.0)
    image = np.round(_digit_like() * 255) / 255
    views = (_device_views if loader == "device" else _torch_views)(spec, image, 40, 1)[:, 0]
    angles = []
    for view in views:
        angle, error = _best_angle(view, image)
        assert error < 0.01, (angle, error)  # a rotation of the image and nothing else: no crop, flip, colour
        assert abs(angle) <= 5.1
        # and a rotation 2 degrees off fits clearly worse, so the angle is pinned down
        worse = np.abs(ndimage.rotate(image, angle + 2, reshape=False, order=1) - view).mean()
        assert worse > 2 * error
        angles.append(angle)
    assert min(angles) < -3 and max(angles) > 3  # drawn over the whole range


def _ramp() -> np.ndarray:
    """Grey, brightening from left to right (0 to 0.5): colour jitter keeps its direction, a flip reverses it."""
    return np.tile(np.linspace(0.0, 0.5, SIZE), (SIZE, 1))


def _flipped_share(views: np.ndarray) -> float:
    grey = views.mean(axis=1)  # (N, H, W)
    left, right = grey[:, :, : SIZE // 2].mean(axis=(1, 2)), grey[:, :, SIZE // 2:].mean(axis=(1, 2))
    assert np.all(np.abs(right - left) > 1e-3)  # every view shows the ramp one way or the other
    return float(np.mean(right < left))


@pytest.mark.parametrize("loader,count", [("device", 800), ("torch", 300)])
def test_svhn_paper_views_are_flipped_about_half_the_time(loader, count):
    # the SVHN data set's own flag says "no flip"; the paper preset's simclr views flip anyway
    spec = _spec("svhn", False, True)
    assert (spec.crop, spec.flip, spec.color) == (True, True, True)
    make = _device_views if loader == "device" else _torch_views
    share = _flipped_share(make(spec, _ramp(), count, 3))
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / count)  # binomial(count, 1/2) within 4 standard deviations
    # the same views without the flip (--views simclr-noflip, the behaviour before the presets) never flip
    noflip = _spec("svhn", False, True, "--views", "simclr-noflip")
    assert _flipped_share(make(noflip, _ramp(), 100, 3)) == 0.0

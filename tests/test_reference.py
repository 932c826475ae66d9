"""Tests of fastgradmix.gradmix.reference against independent slow implementations.

Every expected value comes from a per-sample Python/NumPy loop written here (or from the grad-cam
library), never from the function under test. Each case draws its inputs from its own seeded generator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from host_reads import assert_no_host_read
from torch import nn

from fastgradmix.gradmix.reference import layercam, paste_resized, window_argmax

CHANNELS_LAST = torch.channels_last


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- slow references


def _bilinear_np(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of one (h, w) map, half-pixel centres (align_corners=False), in float64."""

    def taps(in_len: int, out_len: int):
        source = np.maximum((np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5, 0.0)
        i0 = np.minimum(np.floor(source).astype(np.int64), in_len - 1)
        i1 = np.minimum(i0 + 1, in_len - 1)
        lam = np.clip(source - i0, 0.0, 1.0)
        return i0, i1, lam

    r0, r1, lam_r = taps(image.shape[0], out_h)
    c0, c1, lam_c = taps(image.shape[1], out_w)
    rows = image[r0] * (1 - lam_r)[:, None] + image[r1] * lam_r[:, None]  # (out_h, w)
    return rows[:, c0] * (1 - lam_c) + rows[:, c1] * lam_c  # (out_h, out_w)


def _slow_layercam(acts, grads, out_size, variant, eps=1e-7) -> np.ndarray:
    """Per sample, per layer, in float64: the documented LayerCAM / GradCAM semantics."""
    batch = acts[0].shape[0]
    result = np.zeros((batch, *out_size))
    for i in range(batch):
        for a, g in zip(acts, grads, strict=True):
            a_i = a[i].float().double().numpy()  # (C, h, w)
            g_i = g[i].float().double().numpy()
            if variant == "layercam":
                weights = np.maximum(g_i, 0)
            else:
                weights = np.broadcast_to(g_i.mean(axis=(1, 2))[:, None, None], g_i.shape)
            cam = np.maximum((weights * a_i).sum(axis=0), 0)  # (h, w)
            cam = cam / (cam.max() + eps)
            result[i] += _bilinear_np(cam, *out_size)
    return result


def _slow_window_argmax(maps: torch.Tensor, box_h, box_w) -> tuple[list[int], list[int]]:
    """Try every box position in row-major order; a strictly larger sum is needed to move."""
    values = maps.float().double().numpy()
    ys, xs = [], []
    for i in range(values.shape[0]):
        bh, bw = int(box_h[i]), int(box_w[i])
        best, best_yx = -np.inf, None
        for y in range(values.shape[1] - bh + 1):
            for x in range(values.shape[2] - bw + 1):
                total = values[i, y : y + bh, x : x + bw].sum()
                if total > best:
                    best, best_yx = total, (y, x)
        ys.append(best_yx[0])
        xs.append(best_yx[1])
    return ys, xs


def _slow_paste(images, partner, y, x, box_h, box_w) -> torch.Tensor:
    out = images.clone()
    for i in range(images.shape[0]):
        y0, x0, bh, bw = int(y[i]), int(x[i]), int(box_h[i]), int(box_w[i])
        resized = F.interpolate(
            partner[i : i + 1].float(), size=(bh, bw), mode="bilinear", align_corners=False, antialias=False
        )
        out[i, :, y0 : y0 + bh, x0 : x0 + bw] = resized[0].to(images.dtype)
    return out


# --------------------------------------------------------------------------- layercam

# Inputs are upcast exactly to float64 in the slow reference, so the tolerance only has to absorb the
# fp32 accumulation of the channel sum and the resize; it does not depend on the input dtype much.
CAM_TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-5, 2e-5), torch.bfloat16: (2e-5, 2e-5)}

# (batch, channels, layer sizes (h, w), out_size, variant, dtype, channels_last)
LAYERCAM_CASES = [
    (4, 8, [(4, 4)], None, "layercam", torch.float32, False),  # one layer, native size
    (4, 8, [(4, 4)], None, "gradcam", torch.float32, False),
    (1, 5, [(7, 5)], None, "layercam", torch.float32, False),  # batch 1, non-square
    (3, 6, [(1, 1)], None, "layercam", torch.float32, False),  # 1x1 map: every sample's map is 1 or 0
    (3, 6, [(2, 3)], (5, 4), "gradcam", torch.float32, False),  # tiny map, upsampled to an odd size
    (3, 7, [(2, 2), (4, 4), (7, 5)], (16, 16), "layercam", torch.float32, False),  # multi-layer
    (3, 7, [(2, 2), (4, 4), (7, 5)], (16, 16), "gradcam", torch.float32, False),
    (2, 4, [(2, 2), (4, 4), (7, 5)], (13, 11), "layercam", torch.float32, False),  # odd out size
    (2, 4, [(3, 3), (16, 16)], (16, 16), "layercam", torch.float32, False),  # one layer already at out_size
    (2, 4, [(8, 8)], (3, 5), "layercam", torch.float32, False),  # downsampling
    (3, 16, [(4, 4), (8, 8)], None, "layercam", torch.float32, True),  # channels_last, default out_size
    (3, 16, [(4, 4), (7, 5)], (13, 11), "gradcam", torch.float32, True),
    (3, 16, [(4, 4), (7, 5)], (16, 16), "layercam", torch.float16, False),
    (3, 16, [(4, 4), (7, 5)], (16, 16), "layercam", torch.bfloat16, True),
    (2, 16, [(2, 3)], None, "gradcam", torch.bfloat16, False),
    (2, 16, [(4, 4)], (9, 9), "gradcam", torch.float16, True),
]


def _random_layers(seed, batch, channels, sizes, dtype, channels_last):
    gen = _generator(seed)
    acts, grads = [], []
    for h, w in sizes:
        # activations after a ReLU are non-negative; gradients have both signs
        a = torch.rand(batch, channels, h, w, generator=gen).to(dtype)
        g = torch.randn(batch, channels, h, w, generator=gen).to(dtype)
        if channels_last:
            a, g = a.contiguous(memory_format=CHANNELS_LAST), g.contiguous(memory_format=CHANNELS_LAST)
        acts.append(a)
        grads.append(g)
    return acts, grads


@pytest.mark.parametrize("case_index", range(len(LAYERCAM_CASES)))
def test_layercam_matches_slow_loop(case_index):
    batch, channels, sizes, out_size, variant, dtype, channels_last = LAYERCAM_CASES[case_index]
    acts, grads = _random_layers(case_index, batch, channels, sizes, dtype, channels_last)
    expected_size = out_size or max(sizes, key=lambda hw: hw[0] * hw[1])

    maps = layercam(acts if len(acts) > 1 else acts[0], grads if len(grads) > 1 else grads[0],
                    out_size=out_size, variant=variant)

    assert maps.dtype == torch.float32 and maps.is_contiguous()
    assert maps.shape == (batch, *expected_size)
    expected = _slow_layercam(acts, grads, expected_size, variant)
    atol, rtol = CAM_TOLERANCE[dtype]
    np.testing.assert_allclose(maps.numpy(), expected, atol=atol, rtol=rtol)


def test_layercam_default_size_takes_first_largest_layer():
    # 4x2 and 2x4 have the same area: the first listed wins
    acts, grads = _random_layers(100, 2, 3, [(2, 2), (4, 2), (2, 4)], torch.float32, False)
    maps = layercam(acts, grads)
    assert maps.shape == (2, 4, 2)
    np.testing.assert_allclose(maps.numpy(), _slow_layercam(acts, grads, (4, 2), "layercam"), atol=1e-5)


def test_layercam_all_zero_map_stays_zero():
    # all-negative gradients -> every LayerCAM weight is 0 -> the map is 0, not NaN
    gen = _generator(101)
    acts = torch.rand(2, 4, 3, 3, generator=gen)
    grads = -torch.rand(2, 4, 3, 3, generator=gen)
    maps = layercam(acts, grads, out_size=(6, 6))
    assert torch.equal(maps, torch.zeros(2, 6, 6))


@pytest.mark.parametrize(
    ("acts", "grads", "kwargs", "message"),
    [
        (torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), {"variant": "scorecam"}, "unknown variant"),
        (torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5), {}, "same shape"),
        (torch.rand(2, 3, 4), torch.rand(2, 3, 4), {}, r"\(N, C, h, w\)"),
        ([torch.rand(2, 3, 4, 4)] * 2, [torch.rand(2, 3, 4, 4)], {}, "2 activation tensors but 1"),
        ([], [], {}, "empty"),
        ([torch.rand(2, 3, 4, 4), torch.rand(3, 3, 2, 2)], [torch.rand(2, 3, 4, 4), torch.rand(3, 3, 2, 2)],
         {}, "batch"),
        ("not a tensor", torch.rand(2, 3, 4, 4), {}, "must be a Tensor"),
    ],
)
def test_layercam_rejects_bad_input(acts, grads, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layercam(acts, grads, **kwargs)


# --------------------------------------------------------------------------- layercam vs grad-cam

CAM_LAYERS = ("conv4_2", "conv5_2")


@pytest.fixture(scope="module")
def gradcam_run():
    """A small seeded ResNet-18 + linear classifier; our hooked acts/grads and grad-cam's results."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fastgradmix.models import ResNetEncoder

    with torch.random.fork_rng():  # seeded weights without disturbing the global RNG of other tests
        torch.manual_seed(0)
        encoder = ResNetEncoder("resnet18", in_channels=3, stem="cifar", width=16)
        model = nn.Sequential(encoder, nn.Linear(encoder.feature_dim, 5)).eval()
    images = torch.randn(3, 3, 32, 32, generator=_generator(7))
    classes = torch.tensor([0, 3, 1])
    modules = [encoder.cam_module(name) for name in CAM_LAYERS]

    # Ours: forward hooks keep the layer outputs, autograd.grad differentiates the same scalar
    # grad-cam backpropagates (the sum over the batch of logits[i, c_i]).
    captured = []
    handles = [m.register_forward_hook(lambda _m, _in, out: captured.append(out)) for m in modules]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    score = logits[torch.arange(3), classes].sum()
    grads = torch.autograd.grad(score, captured)
    ours = {"acts": [a.detach() for a in captured], "grads": [g.detach() for g in grads]}

    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    theirs = {"single_output": {}}
    for name, module in zip(CAM_LAYERS, modules, strict=True):
        with LayerCAM(model=model, target_layers=[module]) as cam:
            theirs["single_output"][name] = cam(input_tensor=images, targets=targets)  # (N, 32, 32)
    with LayerCAM(model=model, target_layers=modules) as cam:
        theirs["multi_output"] = cam(input_tensor=images, targets=targets)  # (N, 32, 32)
        acts_np = [a.numpy() for a in cam.activations_and_grads.activations]
        grads_np = [g.numpy() for g in cam.activations_and_grads.gradients]
        theirs["acts"], theirs["grads"] = acts_np, grads_np
        # the raw per-layer map sum_c ReLU(G) * A, before any ReLU or rescaling
        theirs["raw"] = [cam.get_cam_image(images, m, targets, a, g, False)
                         for m, a, g in zip(modules, acts_np, grads_np, strict=True)]
        # per layer: max(0, .), min-max rescale, cv2 resize to the input size: (N, 1, 32, 32) each
        theirs["per_layer"] = cam.compute_cam_per_layer(images, targets, False)
    return ours, theirs


def _minmax(maps: np.ndarray) -> np.ndarray:
    """grad-cam's scale_cam_image without the resize: per sample (x - min) / (max(x - min) + 1e-7)."""
    shifted = maps - maps.min(axis=(1, 2), keepdims=True)
    return shifted / (shifted.max(axis=(1, 2), keepdims=True) + 1e-7)


def test_gradcam_oracle_sees_the_same_activations_and_gradients(gradcam_run):
    ours, theirs = gradcam_run
    for a, g, a_ref, g_ref in zip(ours["acts"], ours["grads"], theirs["acts"], theirs["grads"], strict=True):
        np.testing.assert_allclose(a.numpy(), a_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.numpy(), g_ref, rtol=1e-5, atol=1e-8)
        assert np.abs(g_ref).max() > 0  # a vanishing gradient would make the comparisons vacuous


def test_layercam_matches_gradcam_native_resolution(gradcam_run):
    # Before any resize both are ReLU(sum_c ReLU(G) * A); we divide by max + 1e-7, and grad-cam's raw
    # map (before its min subtraction) divided the same way must agree.
    ours, theirs = gradcam_run
    for a, g, raw in zip(ours["acts"], ours["grads"], theirs["raw"], strict=True):
        raw = np.maximum(raw, 0)
        expected = raw / (raw.max(axis=(1, 2), keepdims=True) + 1e-7)
        np.testing.assert_allclose(layercam(a, g).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_layercam_matches_gradcam_single_layer_output(gradcam_run):
    # grad-cam min-max rescales before and after its cv2 resize; we only divide by the max. Bilinear
    # resizing commutes with a per-sample affine map, so min-max rescaling our resized map must give
    # grad-cam's full output exactly (up to eps): this checks the weighting and the resize convention.
    ours, theirs = gradcam_run
    for index, name in enumerate(CAM_LAYERS):
        maps = layercam(ours["acts"][index], ours["grads"][index], out_size=(32, 32)).numpy()
        np.testing.assert_allclose(_minmax(maps), theirs["single_output"][name], rtol=1e-4, atol=2e-5)


def test_layercam_matches_gradcam_multi_layer(gradcam_run):
    ours, theirs = gradcam_run
    maps = layercam(ours["acts"], ours["grads"], out_size=(32, 32)).numpy()

    # grad-cam's per-layer map is resize((r - m) / (M - m + eps)) for the ReLU'd raw map r with
    # per-sample min m and max M; ours is resize(r / (M + eps)). Undo its min subtraction with its own
    # m and M, then sum over layers as we do (grad-cam takes the mean).
    expected = np.zeros_like(maps, dtype=np.float64)
    for raw, scaled in zip(theirs["raw"], theirs["per_layer"], strict=True):
        raw = np.maximum(raw, 0)
        low = raw.min(axis=(1, 2))[:, None, None]
        high = raw.max(axis=(1, 2))[:, None, None]
        expected += (scaled[:, 0] * (high - low + 1e-7) + low) / (high + 1e-7)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=2e-5)

    # And grad-cam's whole multi-layer output from our native-resolution maps, aggregated its way:
    # min-max each layer *before* resizing, resize, mean over layers, min-max again.
    per_layer = []
    for a, g in zip(ours["acts"], ours["grads"], strict=True):
        native = _minmax(layercam(a, g).numpy())  # (N, h, w)
        per_layer.append(np.stack([_bilinear_np(m, 32, 32) for m in native]))  # (N, 32, 32)
    aggregated = _minmax(np.mean(per_layer, axis=0))
    np.testing.assert_allclose(aggregated, theirs["multi_output"], rtol=1e-4, atol=2e-5)


# --------------------------------------------------------------------------- window_argmax

# (batch, H, W, box sizes [(bh, bw), ...] or None for random per sample, map values, dtype)
# "integers" maps (small whole numbers) have many exactly equal box sums and exercise the tie rule.
WINDOW_CASES = [
    (4, 7, 9, None, "uniform", torch.float32),
    (4, 7, 9, None, "integers", torch.float32),
    (5, 13, 11, None, "integers", torch.float32),
    (1, 13, 11, [(4, 6)], "uniform", torch.float32),  # batch 1
    (3, 1, 1, [(1, 1)] * 3, "uniform", torch.float32),  # 1x1 map: the only answer is (0, 0)
    (4, 6, 5, [(1, 1), (6, 5), (1, 5), (6, 1)], "integers", torch.float32),  # side 1, whole map
    (3, 64, 64, [(1, 1), (13, 29), (64, 64)], "uniform", torch.float32),
    (6, 16, 16, None, "integers", torch.float64),
    (4, 10, 12, None, "integers", torch.bfloat16),
]


def _random_boxes(gen, batch, height, width):
    box_h = torch.randint(1, height + 1, (batch,), generator=gen)
    box_w = torch.randint(1, width + 1, (batch,), generator=gen)
    return box_h, box_w


@pytest.mark.parametrize("case_index", range(len(WINDOW_CASES)))
def test_window_argmax_matches_slow_loop(case_index):
    batch, height, width, boxes, values, dtype = WINDOW_CASES[case_index]
    gen = _generator(1000 + case_index)
    if values == "uniform":
        maps = torch.rand(batch, height, width, generator=gen)
    else:
        maps = torch.randint(0, 4, (batch, height, width), generator=gen).float()
    maps = maps.to(dtype)
    if boxes is None:
        box_h, box_w = _random_boxes(gen, batch, height, width)
    else:
        box_h, box_w = (torch.tensor(side) for side in zip(*boxes, strict=True))

    y, x = window_argmax(maps, box_h, box_w)

    assert y.dtype == torch.int64 and x.dtype == torch.int64 and y.shape == x.shape == (batch,)
    expected_y, expected_x = _slow_window_argmax(maps, box_h, box_w)
    assert y.tolist() == expected_y and x.tolist() == expected_x


def test_window_argmax_accepts_int32_sizes():
    gen = _generator(1100)
    maps = torch.rand(3, 9, 8, generator=gen)
    box_h, box_w = _random_boxes(gen, 3, 9, 8)
    y, x = window_argmax(maps, box_h.int(), box_w.int())
    assert (y.tolist(), x.tolist()) == _slow_window_argmax(maps, box_h, box_w)


def test_window_argmax_box_sums_are_exact_where_float32_is_not():
    # 1000 + k/1024: a float32 running sum of 4096 such values (~4e6) has an ulp of 0.25 or more and
    # cannot tell the boxes apart; float64 sums them exactly, as the slow reference does.
    gen = _generator(1200)
    maps = 1000 + torch.randint(0, 8, (3, 64, 64), generator=gen).float() / 1024
    box_h, box_w = torch.tensor([5, 17, 40]), torch.tensor([9, 3, 33])
    y, x = window_argmax(maps, box_h, box_w)
    assert (y.tolist(), x.tolist()) == _slow_window_argmax(maps, box_h, box_w)


def test_window_argmax_ties_on_zero_map_go_to_origin():
    maps = torch.zeros(3, 7, 9)
    y, x = window_argmax(maps, torch.tensor([1, 3, 7]), torch.tensor([1, 5, 9]))
    assert y.tolist() == [0, 0, 0] and x.tolist() == [0, 0, 0]


def test_window_argmax_ties_between_equal_hot_spots():
    maps = torch.zeros(3, 9, 9)
    maps[0, 6, 1] = maps[0, 2, 7] = 1.0  # different rows: the smaller y wins
    maps[1, 4, 6] = maps[1, 4, 2] = 1.0  # same row: the smaller x wins
    maps[2, 6, 1] = maps[2, 2, 7] = 1.0  # 3x3 boxes: every box holding (2, 7) ties with those holding
    # (6, 1); the topmost one holding (2, 7) starts at y = 0, and its leftmost at x = 5
    y, x = window_argmax(maps, torch.tensor([1, 1, 3]), torch.tensor([1, 1, 3]))
    assert y.tolist() == [2, 4, 0] and x.tolist() == [7, 2, 5]


# --------------------------------------------------------------------------- paste_resized

# fp32 matches F.interpolate to rounding; fp16/bf16 outputs are the fp32 result cast, so they may
# differ from the slow reference by one unit in the last place when the fp32 values straddle a rounding
# boundary.
PASTE_TOLERANCE = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}

# (batch, C, H, W, partner Hp, Wp, images layout, partner layout, dtype)
PASTE_CASES = [
    (4, 3, 32, 32, 32, 32, "nchw", "nchw", torch.float32),
    (4, 3, 13, 11, 13, 11, "channels_last", "channels_last", torch.float32),  # odd sizes
    (1, 3, 9, 7, 20, 5, "nchw", "nchw", torch.float32),  # batch 1, partner larger in one axis
    (5, 1, 12, 10, 3, 4, "nchw", "channels_last", torch.float32),  # C = 1, tiny partner
    (5, 1, 12, 10, 12, 10, "channels_last", "nchw", torch.float32),
    (4, 3, 17, 15, 8, 30, "channels_last", "nchw", torch.float16),
    (4, 3, 17, 15, 17, 15, "nchw", "nchw", torch.float16),
    (4, 3, 16, 16, 16, 16, "channels_last", "channels_last", torch.bfloat16),
    (3, 1, 7, 9, 11, 6, "nchw", "nchw", torch.bfloat16),
]


def _layout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    memory_format = CHANNELS_LAST if layout == "channels_last" else torch.contiguous_format
    return tensor.contiguous(memory_format=memory_format)


def _paste_boxes(gen, batch, height, width):
    """Random boxes inside the image, with the awkward ones forced in: side 1 and the whole image."""
    box_h, box_w = _random_boxes(gen, batch, height, width)
    box_h[0], box_w[0] = height, width
    if batch > 1:
        box_h[1], box_w[1] = 1, 1
    if batch > 2:
        box_h[2], box_w[2] = 1, width
    y = (torch.rand(batch, generator=gen) * (height - box_h + 1)).long()
    x = (torch.rand(batch, generator=gen) * (width - box_w + 1)).long()
    return y, x, box_h, box_w


def _box_mask(shape, y, x, box_h, box_w) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for i in range(shape[0]):
        mask[i, :, int(y[i]) : int(y[i] + box_h[i]), int(x[i]) : int(x[i] + box_w[i])] = True
    return mask


@pytest.mark.parametrize("case_index", range(len(PASTE_CASES)))
def test_paste_resized_matches_slow_loop(case_index):
    batch, channels, height, width, src_h, src_w, layout, partner_layout, dtype = PASTE_CASES[case_index]
    gen = _generator(2000 + case_index)
    images = _layout(torch.randn(batch, channels, height, width, generator=gen).to(dtype), layout)
    partner = _layout(torch.randn(batch, channels, src_h, src_w, generator=gen).to(dtype), partner_layout)
    y, x, box_h, box_w = _paste_boxes(gen, batch, height, width)
    images_before = images.clone()

    mixed = paste_resized(images, partner, y, x, box_h, box_w)

    assert mixed.dtype == dtype and mixed.shape == images.shape
    assert mixed.stride() == images.stride()  # memory format preserved
    if layout == "channels_last":
        assert mixed.is_contiguous(memory_format=CHANNELS_LAST)
    assert torch.equal(images, images_before) and images.stride() == images_before.stride()

    inside = _box_mask(images.shape, y, x, box_h, box_w)
    assert torch.equal(mixed[~inside], images[~inside])  # outside the box: bit for bit
    expected = _slow_paste(images, partner, y, x, box_h, box_w)
    atol, rtol = PASTE_TOLERANCE[dtype]
    torch.testing.assert_close(mixed.float(), expected.float(), atol=atol, rtol=rtol)


def test_paste_resized_whole_image_box_same_size_is_a_copy():
    # resizing to the partner's own size is the identity, so the output is the partner exactly
    gen = _generator(2100)
    images = torch.randn(2, 3, 5, 7, generator=gen)
    partner = torch.randn(2, 3, 5, 7, generator=gen)
    origin = torch.zeros(2, dtype=torch.long)
    mixed = paste_resized(images, partner, origin, origin, torch.tensor([5, 5]), torch.tensor([7, 7]))
    assert torch.equal(mixed, partner)


def test_paste_resized_box_of_one_pixel_reads_partner_centre():
    # a 1x1 box samples the partner at its centre: source (0.5 * Hp - 0.5, 0.5 * Wp - 0.5)
    partner = torch.arange(4 * 6, dtype=torch.float32).view(1, 1, 4, 6)  # value = 6 * row + col
    images = torch.zeros(1, 1, 3, 3)
    one = torch.ones(1, dtype=torch.long)
    mixed = paste_resized(images, partner, one, one, one, one)
    assert mixed[0, 0, 1, 1].item() == pytest.approx(6 * 1.5 + 2.5)
    assert mixed.sum().item() == pytest.approx(6 * 1.5 + 2.5)


_TWO_ONES = torch.ones(2, dtype=torch.long)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: window_argmax(torch.rand(2, 4), _TWO_ONES, _TWO_ONES), r"\(N, H, W\)"),
        (lambda: window_argmax(torch.rand(2, 4, 4), torch.ones(3, dtype=torch.long), _TWO_ONES),
         "box_h must be a tensor of shape"),
        (lambda: paste_resized(torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4), *[_TWO_ONES] * 4),
         "same N and C"),
        (lambda: paste_resized(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), _TWO_ONES,
                               torch.ones(1, dtype=torch.long), _TWO_ONES, _TWO_ONES),
         "x must be a tensor of shape"),
    ],
    ids=["maps-2d", "box-length", "partner-channels", "x-length"],
)
def test_window_and_paste_reject_bad_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reference_ops_keep_their_dtypes_under_autocast():
    # mixed-precision training calls these inside autocast: maps stay fp32, the mix keeps the input dtype
    acts, grads = _random_layers(2300, 2, 4, [(2, 2), (4, 4)], torch.bfloat16, True)
    images = torch.rand(2, 3, 8, 8, generator=_generator(2301)).to(torch.bfloat16)
    ones = torch.ones(2, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = layercam(acts, grads, out_size=(8, 8))
        mixed = paste_resized(images, torch.rand(2, 3, 5, 5), ones, ones, ones * 3, ones * 4)
    assert maps.dtype == torch.float32 and mixed.dtype == torch.bfloat16
    expected = _slow_layercam(acts, grads, (8, 8), "layercam")
    np.testing.assert_allclose(maps.numpy(), expected, atol=2e-5, rtol=2e-5)


def test_reference_ops_build_no_autograd_graph():
    # like the kernels they replace: outputs never require grad, even from inputs that do
    acts, grads = _random_layers(2200, 2, 4, [(4, 4)], torch.float32, False)
    assert not layercam(acts[0].requires_grad_(), grads[0]).requires_grad
    images = torch.rand(2, 3, 6, 6, requires_grad=True)
    ones = torch.ones(2, dtype=torch.long)
    partner = torch.rand(2, 3, 5, 5, requires_grad=True)
    assert not paste_resized(images, partner, ones, ones, ones, ones).requires_grad


# --------------------------------------------------------------------------- no host synchronisation


def _op_inputs():
    gen = _generator(3000)
    acts, grads = _random_layers(3001, 3, 8, [(2, 2), (4, 4), (7, 5)], torch.float16, True)
    maps = torch.rand(3, 13, 11, generator=gen)
    images = torch.randn(3, 3, 13, 11, generator=gen).contiguous(memory_format=CHANNELS_LAST)
    partner = torch.randn(3, 3, 9, 16, generator=gen)
    y, x, box_h, box_w = _paste_boxes(gen, 3, 13, 11)
    return {
        "layercam": (lambda a0, a1, a2, g0, g1, g2: layercam([a0, a1, a2], [g0, g1, g2], out_size=(16, 16)),
                     (*acts, *grads)),
        "gradcam": (lambda a, g: layercam(a, g, variant="gradcam"), (acts[2], grads[2])),
        "window_argmax": (window_argmax, (maps, box_h, box_w)),
        "paste_resized": (paste_resized, (images, partner, y, x, box_h, box_w)),
    }


@pytest.mark.parametrize("op", ["layercam", "gradcam", "window_argmax", "paste_resized"])
def test_reference_ops_never_read_tensor_data_on_the_host(op):
    fn, tensors = _op_inputs()[op]
    assert_no_host_read(fn, *tensors)


@pytest.mark.parametrize(
    "host_read",
    [
        lambda t: t.sum().item(),
        lambda t: bool(t.sum() > 0),
        lambda t: int(t.argmax()),
        lambda t: t.tolist(),
        lambda t: t.cpu().numpy(),
        lambda t: t[t > 0.5],
        lambda t: t.nonzero(),
        lambda t: t.masked_select(t > 0.5),
        lambda t: t.unique(),
    ],
    ids=["item", "bool", "int", "tolist", "numpy", "bool-mask", "nonzero", "masked_select", "unique"],
)
def test_host_read_detector_catches_known_host_reads(host_read):
    # The guard must be able to fail, or the test above proves nothing.
    with pytest.raises((AssertionError, RuntimeError, NotImplementedError)):
        assert_no_host_read(host_read, torch.rand(3, 4))


def test_host_read_detector_allows_integer_indexing():
    assert_no_host_read(lambda t: t[torch.tensor([0, 2])] + 1, torch.rand(3, 4))

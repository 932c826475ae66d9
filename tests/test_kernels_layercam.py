"""The Triton ``layercam`` against its specification, ``fastgradmix.gradmix.reference.layercam``.

On CPU the kernels run in Triton's interpreter (tests/conftest.py), on a GPU compiled. Every case draws
fresh inputs from its own seed; every tensor the wrapper allocates (output and scratch) starts as NaN.
"""

from __future__ import annotations

import pytest
import torch

from fastgradmix.gradmix import reference
from fastgradmix.kernels.layercam import layercam

# Both read the same fp16/bf16 values and accumulate in fp32; only the order of the channel sum and of
# normalise-then-resize differ, so the tolerance hardly depends on the input dtype.
TOLERANCE = {  # dtype: (atol, rtol)
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-5, 2e-5),
    torch.bfloat16: (2e-5, 2e-5),
}

# (batch, channels, layer sizes (h, w), out_size, variant, dtype, layout)
CASES = [
    (4, 8, [(4, 4)], None, "layercam", torch.float32, "nchw"),  # one layer at its own size
    (4, 8, [(4, 4)], None, "gradcam", torch.float32, "nchw"),
    (1, 5, [(7, 5)], None, "layercam", torch.float32, "nchw"),  # batch 1, odd, non-square
    (3, 6, [(1, 1)], None, "layercam", torch.float32, "channels_last"),  # 1x1 map: each sample 1 or 0
    (3, 6, [(2, 3)], (5, 4), "gradcam", torch.float32, "nchw"),  # map below 4x4, upsampled to odd size
    (3, 7, [(2, 2), (4, 4), (7, 5)], (16, 16), "layercam", torch.float32, "nchw"),  # multi-layer
    (3, 7, [(2, 2), (4, 4), (7, 5)], (16, 16), "gradcam", torch.float32, "channels_last"),
    # more layers than one aggregation launch folds (4): a second launch adds to the first
    (2, 4, [(2, 2), (4, 4), (7, 5), (3, 3), (1, 1), (5, 2)], (13, 11), "layercam", torch.float32, "nchw"),
    (2, 4, [(8, 8)], (3, 5), "layercam", torch.float32, "nchw"),  # downsampling
    (3, 16, [(4, 4), (8, 8)], None, "layercam", torch.float32, "channels_last"),  # default out_size
    (2, 300, [(4, 4)], (32, 32), "layercam", torch.float32, "channels_last"),  # C over one channel block
    (2, 6, [(16, 12)], (64, 64), "layercam", torch.float32, "nchw"),  # 192 positions: two blocks; 64x64
    (3, 4, [(20, 20)], None, "gradcam", torch.float32, "channels_last"),  # 400 positions: four blocks
    (2, 6, [(5, 7), (3, 3)], (10, 14), "gradcam", torch.float32, "sliced"),  # strided views, no copy
    (2, 6, [(5, 7)], (9, 9), "layercam", torch.float32, "transposed"),  # (h, w) not one run in memory
    (3, 16, [(4, 4), (7, 5)], (16, 16), "layercam", torch.float16, "nchw"),
    (3, 16, [(4, 4), (7, 5)], (16, 16), "layercam", torch.bfloat16, "channels_last"),
    (2, 16, [(2, 3)], None, "gradcam", torch.bfloat16, "nchw"),
    (2, 16, [(4, 4)], (9, 9), "gradcam", torch.float16, "channels_last"),
]
if torch.cuda.is_available():  # the shapes of a real CIFAR batch (ResNet-18 conv4_2 + conv5_2)
    CASES += [(256, 256, [(4, 4), (8, 8)], (32, 32), "layercam", torch.bfloat16, "channels_last")]


def _layer(gen, shape, dtype, layout, signed):
    n, c, h, w = shape
    if layout == "sliced":  # a window into a larger tensor
        big = torch.randn if signed else torch.rand
        return big(n, c + 2, h + 1, w + 2, generator=gen).to(dtype)[:, 1:-1, 1:, 1:-1]
    tensor = (torch.randn if signed else torch.rand)(shape, generator=gen).to(dtype)
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # same values, x-major memory
        return tensor.transpose(2, 3).contiguous().transpose(2, 3)
    return tensor


def _to_device(tensor, device):
    """``tensor`` on ``device`` with the same strides, views included."""
    if tensor._base is None:
        return tensor.to(device)
    return tensor._base.to(device).as_strided(tensor.size(), tensor.stride(), tensor.storage_offset())


@pytest.mark.parametrize("case_index", range(len(CASES)))
def test_layercam_kernel_matches_reference(case_index, kernel_device, poison_kernel_outputs):
    batch, channels, sizes, out_size, variant, dtype, layout = CASES[case_index]
    gen = torch.Generator().manual_seed(6000 + case_index)
    # activations after a ReLU are non-negative; gradients have both signs
    acts = [_layer(gen, (batch, channels, h, w), dtype, layout, signed=False) for h, w in sizes]
    grads = [_layer(gen, (batch, channels, h, w), dtype, layout, signed=True) for h, w in sizes]
    expected = reference.layercam(acts, grads, out_size=out_size, variant=variant)

    device_acts = [_to_device(a, kernel_device) for a in acts]
    device_grads = [_to_device(g, kernel_device) for g in grads]
    if layout == "transposed":
        assert device_acts[0].stride(-1) != 1
    # a single layer goes in as a bare tensor, as in the reference's signature
    maps = layercam(device_acts if len(sizes) > 1 else device_acts[0],
                    device_grads if len(sizes) > 1 else device_grads[0], out_size=out_size, variant=variant)

    assert maps.dtype == torch.float32 and maps.is_contiguous() and maps.shape == expected.shape
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(maps.cpu(), expected, atol=atol, rtol=rtol)  # NaN anywhere fails


def test_layercam_kernel_all_zero_gradients_give_zero_maps(kernel_device, poison_kernel_outputs):
    # analytic: no positive gradient -> zero CAM, and eps keeps 0 / (0 + eps) at 0 rather than NaN
    acts = torch.rand(2, 4, 3, 3, device=kernel_device)
    grads = -torch.rand(2, 4, 3, 3, device=kernel_device)
    maps = layercam(acts, grads, out_size=(5, 5))
    assert torch.equal(maps.cpu(), torch.zeros(2, 5, 5))


def test_layercam_kernel_peak_is_one_per_layer(kernel_device):
    # analytic: a layer is divided by its per-sample maximum + eps, so at native size its peak is 1 - eps / max.
    # 20 x 15 = 300 positions span three blocks of 128: the peak sits in the last, first and middle one.
    gen = torch.Generator().manual_seed(6100)
    acts, grads = torch.rand(3, 5, 20, 15, generator=gen), torch.rand(3, 5, 20, 15, generator=gen)
    for sample, position in enumerate([299, 0, 200]):
        acts[sample, :, position // 15, position % 15] = 10.0
    maps = layercam(acts.to(kernel_device), grads.to(kernel_device)).cpu()
    torch.testing.assert_close(maps.amax(dim=(1, 2)), torch.ones(3), atol=1e-6, rtol=0)
    assert maps.flatten(1).argmax(dim=1).tolist() == [299, 0, 200]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: layercam([], []), "empty list"),
        (lambda: layercam([torch.rand(2, 3, 4, 4)], [torch.rand(2, 3, 4, 4)] * 2), "one gradient per"),
        (lambda: layercam(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5)), "same shape"),
        (lambda: layercam(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), variant="x"), "unknown variant"),
    ],
    ids=["empty", "count", "shape", "variant"],
)
def test_layercam_kernel_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()

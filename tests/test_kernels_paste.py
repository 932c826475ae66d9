"""The Triton ``paste_resized`` against its specification, ``fastgradmix.gradmix.reference.paste_resized``.

On CPU the kernel runs in Triton's interpreter (tests/conftest.py), on a GPU compiled. Every case draws
fresh inputs from its own seed, and every tensor the wrapper allocates starts as NaN
(``poison_kernel_outputs``), so an output element the kernel skips fails the comparison.
"""

from __future__ import annotations

import pytest
import torch

from fastgradmix.gradmix import reference
from fastgradmix.kernels.paste import paste_resized

# The reference and the kernel compute the same fp32 blend; a compiled kernel may contract it into
# fused multiply-adds (an ulp), and fp16/bf16 outputs are that fp32 value rounded, so they may land one
# unit in the last place apart when the fp32 values straddle a rounding boundary.
TOLERANCE = {  # dtype: (atol, rtol)
    torch.float32: (1e-6, 1e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}

# (batch, C, H, W, partner Hp, Wp, images layout, partner layout, dtype)
CASES = [
    (4, 3, 64, 64, 64, 64, "channels_last", "channels_last", torch.float32),  # 64x64 images
    (4, 3, 32, 32, 32, 32, "nchw", "nchw", torch.float32),
    (1, 3, 9, 7, 20, 5, "nchw", "nchw", torch.float32),  # batch 1; partner taller (downsampling), odd sizes
    (5, 1, 12, 10, 3, 2, "nchw", "channels_last", torch.float32),  # one channel, partner below 4x4
    (4, 3, 3, 2, 5, 5, "channels_last", "nchw", torch.float32),  # image below 4x4: boxes of 1 and 2 px
    (4, 2, 6, 5, 6, 5, "sliced", "sliced", torch.float32),  # non-dense views: strides, no copy
    (4, 3, 17, 15, 8, 30, "channels_last", "nchw", torch.float16),
    (4, 3, 17, 15, 17, 15, "nchw", "nchw", torch.float16),
    (4, 3, 16, 16, 16, 16, "channels_last", "channels_last", torch.bfloat16),
    (3, 1, 7, 9, 11, 6, "nchw", "nchw", torch.bfloat16),
]
if torch.cuda.is_available():  # sizes of a real batch, too slow for the interpreter
    CASES += [
        (256, 3, 32, 32, 32, 32, "nchw", "nchw", torch.float32),
        (128, 3, 64, 64, 64, 64, "channels_last", "channels_last", torch.bfloat16),
    ]


def _random_tensor(gen, shape, dtype, layout):
    if layout == "sliced":  # a window into a larger tensor: neither NCHW- nor channels_last-dense
        n, c, h, w = shape
        return torch.randn(n, c + 1, h + 2, w + 3, generator=gen).to(dtype)[:, 1:, 1:-1, 2:-1]
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=memory_format)


def _to_device(tensor, device):
    """``tensor`` on ``device`` with the same strides, views included (``.to`` would make a view dense)."""
    if tensor._base is None:
        return tensor.to(device)  # dense tensors keep their memory format
    base = tensor._base.to(device)
    return base.as_strided(tensor.size(), tensor.stride(), tensor.storage_offset())


def _boxes(gen, batch, height, width):
    """Random boxes inside the image; with 4+ samples the first four are the whole image, 1x1, one full
    row and one full column."""
    box_h = torch.randint(1, height + 1, (batch,), generator=gen)
    box_w = torch.randint(1, width + 1, (batch,), generator=gen)
    if batch >= 4:
        box_h[:4] = torch.tensor([height, 1, 1, height])
        box_w[:4] = torch.tensor([width, 1, width, 1])
    y = (torch.rand(batch, generator=gen) * (height - box_h + 1)).long()
    x = (torch.rand(batch, generator=gen) * (width - box_w + 1)).long()
    return y, x, box_h, box_w


@pytest.mark.parametrize("case_index", range(len(CASES)))
def test_paste_kernel_matches_reference(case_index, kernel_device, poison_kernel_outputs):
    batch, channels, height, width, src_h, src_w, layout, partner_layout, dtype = CASES[case_index]
    gen = torch.Generator().manual_seed(4000 + case_index)
    images = _random_tensor(gen, (batch, channels, height, width), dtype, layout)
    partner = _random_tensor(gen, (batch, channels, src_h, src_w), dtype, partner_layout)
    boxes = _boxes(gen, batch, height, width)
    expected = reference.paste_resized(images, partner, *boxes)
    images_before = images.clone()

    mixed = paste_resized(*(_to_device(t, kernel_device) for t in (images, partner, *boxes))).cpu()

    assert mixed.dtype == dtype and mixed.shape == images.shape
    assert mixed.stride() == expected.stride()  # the layout of images (dense) or contiguous (a view)
    assert torch.equal(images, images_before)
    y, x, box_h, box_w = boxes
    outside = torch.ones(images.shape, dtype=torch.bool)
    for i in range(batch):
        outside[i, :, y[i]:y[i] + box_h[i], x[i]:x[i] + box_w[i]] = False
    assert torch.equal(mixed[outside], images[outside])  # bit for bit, so no NaN left
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(mixed.float(), expected.float(), atol=atol, rtol=rtol)


def test_paste_kernel_one_pixel_box_reads_partner_centre(kernel_device, poison_kernel_outputs):
    # analytic: a 1x1 box samples the partner at its centre, source (0.5 * Hp - 0.5, 0.5 * Wp - 0.5)
    partner = torch.arange(4 * 6, dtype=torch.float32, device=kernel_device).view(1, 1, 4, 6)  # 6 * row + col
    images = torch.zeros(1, 1, 3, 3, device=kernel_device)
    one = torch.ones(1, dtype=torch.long, device=kernel_device)
    mixed = paste_resized(images, partner, one, one, one, one).cpu()
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 1, 1] = 6 * 1.5 + 2.5
    assert torch.equal(mixed, expected)


def test_paste_kernel_accepts_int32_boxes(kernel_device):
    gen = torch.Generator().manual_seed(4100)
    images = torch.randn(4, 3, 10, 12, generator=gen)
    partner = torch.randn(4, 3, 7, 7, generator=gen)
    boxes = _boxes(gen, 4, 10, 12)
    mixed = paste_resized(images.to(kernel_device), partner.to(kernel_device),
                          *(t.int().to(kernel_device) for t in boxes)).cpu()
    torch.testing.assert_close(mixed, reference.paste_resized(images, partner, *boxes), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4)), "same N and C"),
        ((torch.rand(2, 3, 4), torch.rand(2, 3, 4, 4)), "same N and C"),
    ],
)
def test_paste_kernel_rejects_bad_shapes(args, message):
    ones = torch.ones(2, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        paste_resized(*args, ones, ones, ones, ones)
    with pytest.raises(ValueError, match="box_w must be a tensor of shape"):
        paste_resized(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), ones, ones, ones, ones[:1])

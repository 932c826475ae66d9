"""The bundled default: scikit-learn's real 8x8 handwritten digits, with MNIST's OSR split lists.

The data ships inside scikit-learn (1,797 images, 0..16 intensities), so the default run needs no
download. Images are scaled to 0..255 and upsampled bilinearly to the run's image size once, here.
The train/test partition is a fixed stratified 70/30 split, the same on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.splits import known_classes

TEST_FRACTION = 0.3
PARTITION_SEED = 0


def load_digits_protocol(split: int, image_size: int) -> OpenSetData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)  # (1797, 8, 8) in 0..255
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=PARTITION_SEED)
    pixels = torch.from_numpy(images)[:, None]  # (N, 1, 8, 8)
    pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    pixels = pixels.round().clamp(0, 255).to(torch.uint8)

    known = known_classes("mnist", split)
    unknown = [d for d in range(10) if d not in known]
    to_known_label = torch.full((10,), -1, dtype=torch.int64)
    to_known_label[torch.tensor(known)] = torch.arange(len(known))
    labels_t = torch.from_numpy(labels)

    train_idx_t = torch.from_numpy(train_idx)
    train_idx_t = train_idx_t[to_known_label[labels_t[train_idx_t]] >= 0]
    test_idx_t = torch.from_numpy(test_idx)
    test_mapped = to_known_label[labels_t[test_idx_t]]
    # knowns first, then unknowns: a fixed order for evaluation
    test_idx_t = torch.cat([test_idx_t[test_mapped >= 0], test_idx_t[test_mapped < 0]])

    return OpenSetData(
        protocol="digits", split=split,
        train_images=pixels[train_idx_t].contiguous(),
        train_labels=to_known_label[labels_t[train_idx_t]],
        test_images=pixels[test_idx_t].contiguous(),
        test_labels=to_known_label[labels_t[test_idx_t]],
        known_classes=[str(d) for d in known], unknown_classes=[str(d) for d in unknown],
        mean=(0.5,), std=(0.5,), flip=False, color=False,
    )

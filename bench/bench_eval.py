"""The open-set evaluation of a Tiny-ImageNet-sized run, fp32 against bf16 autocast + channels_last (issue 16).

What the final evaluation of a run costs: the features of every bank image (the known training images)
and every test image (``evaluation.features.extract_features``: eval mode, no gradients, un-augmented views
made on the device, the model in the given precision, fp32 features out), then Algorithm 1's top-k class
similarity scores (``topk_similarity.class_topk_scores``, fp32, chunked) and the prediction. Tiny ImageNet
split sizes: 10,000 bank images (20 known classes x 500) and 10,000 test images, 64 px, 3 channels,
ResNet-18 at full width (64) with the CIFAR stem, evaluation batch 512 (the default). The images are
random uint8: the cost does not depend on the pixels.

    pytest bench/bench_eval.py --benchmark-only                          # minutes per row on 2 CPU cores
    FGM_BENCH_EVAL_IMAGES=256 pytest bench/bench_eval.py --benchmark-only   # a quick smoke run

FGM_BENCH_EVAL_IMAGES=N sets both the bank and the test set to N images. Each row is one timed pass (the
whole evaluation), after a warm-up pass over one batch. The last test checks the target: the bf16 +
channels_last evaluation at least 2x faster than fp32 NCHW (on a GPU: bf16 against fp32 likewise).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from benchlib import DEVICE, record, sync

from fastgradmix.common.precision import FP32, Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.topk_similarity import class_topk_scores, osr_predict
from fastgradmix.models import build_model

IMAGES = int(os.environ.get("FGM_BENCH_EVAL_IMAGES", "10000"))
SIZE, WIDTH, CLASSES, TOPK, BATCH = 64, 64, 20, 10, 512
ROWS = {"fp32 nchw": FP32, "bf16 channels_last": Precision("bf16", channels_last=True)}  # the first: baseline
TARGET_SPEEDUP_MIN = 2.0
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def scene():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "model": build_model("resnet18", 3, width=WIDTH).to(DEVICE).eval(),
        "bank_images": torch.randint(0, 256, (IMAGES, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator),
        "bank_labels": torch.arange(IMAGES) % CLASSES,  # (N,) every class about equally often
        "test_images": torch.randint(0, 256, (IMAGES, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator),
        "spec": AugmentSpec(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), flip=False, color=False),
    }


def evaluate(scene, model, precision: Precision, bank_images, test_images) -> torch.Tensor:
    """Bank and test features in ``precision``, then the open-set scores (T,) fp32."""
    bank = extract_features(model, bank_images, scene["spec"], BATCH, DEVICE, precision, progress=False)  # (N, D)
    test = extract_features(model, test_images, scene["spec"], BATCH, DEVICE, precision, progress=False)  # (T, D)
    class_scores = class_topk_scores(test, bank, scene["bank_labels"][:bank_images.shape[0]].to(DEVICE), CLASSES,
                                     k=TOPK)  # (T, C)
    return osr_predict(class_scores)[1]


@pytest.mark.parametrize("row", list(ROWS))
def test_evaluation(benchmark, scene, row):
    precision = ROWS[row]
    model = scene["model"].to(memory_format=precision.memory_format)
    warm = scene["bank_images"][:BATCH]
    evaluate(scene, model, precision, warm, warm)  # oneDNN / cuDNN pick their kernels once
    sync()

    def whole_evaluation():
        begin = time.perf_counter()
        scores = evaluate(scene, model, precision, scene["bank_images"], scene["test_images"])
        sync()
        SECONDS[row] = time.perf_counter() - begin
        assert scores.dtype == torch.float32 and torch.isfinite(scores).all()

    benchmark.group = f"evaluation {IMAGES} bank + {IMAGES} test, resnet18-w{WIDTH} {SIZE}px"
    record(benchmark, "baseline" if row == next(iter(ROWS)) else "candidate", row, 1, images=2 * IMAGES,
           size=SIZE, width=WIDTH, batch=BATCH, precision=precision.name, channels_last=precision.channels_last)
    benchmark.pedantic(whole_evaluation, rounds=1, warmup_rounds=0, iterations=1)
    benchmark.extra_info["note"] = f"{2 * IMAGES / SECONDS[row]:.0f} images/s"


def test_bf16_evaluation_meets_the_target():
    if set(ROWS) - SECONDS.keys():
        pytest.skip("needs both evaluation rows of this module in the same run")
    speedup = SECONDS["fp32 nchw"] / SECONDS["bf16 channels_last"]
    summary = (f"evaluation of {IMAGES} + {IMAGES} images: fp32 NCHW {SECONDS['fp32 nchw']:.1f} s, bf16 + "
               f"channels_last {SECONDS['bf16 channels_last']:.1f} s, {speedup:.2f}x ({torch.get_num_threads()} "
               "torch threads)")
    print(summary)
    assert speedup >= TARGET_SPEEDUP_MIN, summary

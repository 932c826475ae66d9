"""Shared pieces of the deployment tests (export, predict, native): one tiny trained digits run and its
exported model folder, made once per test session (also across pytest-xdist workers, under a file lock),
real digit images written as PNG and JPEG files, and the eager reference the predictors must agree with.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

# a tiny run: one epoch of a width-8 ResNet-18 on 16 px digits, seconds on a CPU
TINY_TRAIN = ["--epochs", "1", "--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers",
              "conv4_2", "--eval-batch-size", "256", "--no-progress"]
EVERY_NTH_TEST_IMAGE = 9  # JPEG copies of 60 of the 540 digits test images


def shared_folder(tmp_path_factory, name: str, produce: Callable[[Path], None]) -> Path:
    """A folder that ``produce`` fills once per test session, whichever worker asks first."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            produce(folder)
            (folder / ".done").touch()
    return folder


def trained_run(tmp_path_factory) -> Path:
    def produce(folder: Path) -> None:
        from fastgradmix.train import main

        main([*TINY_TRAIN, "--out", str(folder / "run")])

    return shared_folder(tmp_path_factory, "deploy-run", produce) / "run"


def exported_model(tmp_path_factory) -> Path:
    run_dir = trained_run(tmp_path_factory)

    def produce(folder: Path) -> None:
        from fastgradmix.deploy.exporter import export

        export(run_dir, folder / "model", progress=False)

    return shared_folder(tmp_path_factory, "deploy-model", produce) / "model"


@dataclass
class DigitImages:
    folder: Path
    png: list[Path]  # every test image, as the protocol holds it (16x16 gray): the evaluation's exact inputs
    jpeg: list[Path]  # every ninth as a tinted 24x24 RGB JPEG: decoding, luma and resize are exercised
    rows: list[int]  # test-set row of each PNG


def write_digit_images(folder: Path) -> None:
    """Writes the digits test images (knowns, then unknowns) as files, the way a user would have them."""
    from fastgradmix.data.protocols import build_protocol

    data = build_protocol("digits", 0, 16, "")
    (folder / "png").mkdir(parents=True)
    (folder / "jpeg").mkdir()
    for row in range(data.test_images.shape[0]):
        pixels = data.test_images[row, 0].numpy()  # (16, 16) uint8
        label = int(data.test_labels[row])
        name = f"{row:03d}_{data.known_classes[label] if label >= 0 else 'unknown'}"
        Image.fromarray(pixels).save(folder / "png" / f"{name}.png")
        if row % EVERY_NTH_TEST_IMAGE == 0:
            tinted = np.stack([pixels, (pixels * 0.8).astype(np.uint8), (pixels * 0.6 + 40).astype(np.uint8)], -1)
            Image.fromarray(tinted).resize((24, 24), Image.BILINEAR).save(folder / "jpeg" / f"{name}.jpg",
                                                                          quality=92)


def digit_images(tmp_path_factory) -> DigitImages:
    folder = shared_folder(tmp_path_factory, "deploy-images", write_digit_images)
    png = sorted((folder / "png").iterdir())
    jpeg = sorted((folder / "jpeg").iterdir())
    return DigitImages(folder, png, jpeg, [int(path.name[:3]) for path in png])


def eager_model(run_dir: Path):
    """The trained model in eval mode, rebuilt straight from the run's files (not through export.py)."""
    from fastgradmix.models import build_model

    config = json.loads((run_dir / "config.json").read_text())
    model = build_model(config["arch"], 1, config["stem"], config["width"], config["feature_dim"])
    model.load_state_dict(torch.load(run_dir / "last.pt", weights_only=True)["model"])
    return model.eval()


def parse_text_lines(stdout: str) -> dict[str, tuple[str, float, float]]:
    """predict's text lines -> {path: (label, score, threshold)}."""
    parsed = {}
    for line in stdout.splitlines():
        path, label, score, threshold = line.split("\t")
        assert score.startswith("score=") and threshold.startswith("threshold="), line
        parsed[path] = (label, float(score[6:]), float(threshold[10:]))
    return parsed


def predict_cli(capsys, *args) -> tuple[int, str, str]:
    """Runs fastgradmix.predict in this process: (exit code, stdout, stderr)."""
    from fastgradmix.predict import main

    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_bad_inputs(folder: Path, images: DigitImages) -> dict[str, str]:
    """A folder with one good image and every kind of bad one; returns {path: expected problem}."""
    folder.mkdir()
    shutil.copy(images.png[0], folder / "good.png")
    (folder / "text.png").write_text("not an image")
    png, jpeg = images.png[0].read_bytes(), images.jpeg[0].read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.fromarray(np.zeros((16, 16, 4), dtype=np.uint8)).save(folder / "rgba.png")
    (folder / "empty").mkdir()
    return {
        str(folder / "text.png"): "not a JPEG or PNG file",
        str(folder / "truncated.png"): "cannot decode image",
        str(folder / "truncated.jpg"): "cannot decode image",
        str(folder / "rgba.png"): "4 channels",
        str(folder / "empty"): "no .jpg, .jpeg or .png images",
        str(folder / "missing.jpg"): "no such file or folder",
    }


def check_problem_lines(stderr: str, prog: str, expected: dict[str, str]) -> None:
    lines = stderr.strip().splitlines()
    for path, problem in expected.items():
        matching = [line for line in lines if line.startswith(f"{prog}: error: {path}: ")]
        assert len(matching) == 1 and problem in matching[0], (path, stderr)

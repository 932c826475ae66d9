"""``--tensorboard`` on fastgradmix.train and fastgradmix.evaluate: the event files, read back with
TensorBoard's own reader, hold the logged numbers (equal to metrics.jsonl and results.json), the grid of
mixed views with their boxes, the ROC curve and the evaluation's figures; the grid's pixels against a
written-out loop; without the package, one line and exit 2 before anything is written."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from fastgradmix.common import tensorboard as tensorboard_module
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.train import main as train_main
from fastgradmix.training.tensorboard_log import BOX_COLOUR, view_grid

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2",
        "--no-progress", "--eval-batch-size", "256"]

TRAIN_SCALARS = {"loss/loss", "loss/supcon", "loss/simclr", "loss/mix", "train/lr", "train/images_per_s",
                 "train/step_ms", "train/augment_share", "train/cam_grad_share", "train/peak_memory_mib",
                 "final/auroc", "final/closed_acc", "final/openness", "final/train_wall_s", "final/images_per_s"}


def _events(folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def _png_pixels(encoded: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def test_train_and_evaluate_write_event_files_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train_main(TINY + ["--epochs", "2", "--train-subset", "192", "--log-every", "2", "--out", str(run),
                       "--tensorboard"])
    evaluate_main(["--run", str(run), "--tasks", "osr", "--tensorboard", "--no-progress"])
    events = _events(run / "tb")
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert TRAIN_SCALARS <= scalars
    assert {"eval/osr/auroc", "eval/osr/tnr", "eval/osr/closed_acc"} <= scalars
    assert not any("/settings/" in tag for tag in scalars)
    assert images == {"gradmix/views", "final/roc", "eval/roc_osr", "eval/hist_osr"}

    # the numbers are the run's own: metrics.jsonl line by line, results.json at the end
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for tag, field in (("loss/loss", "loss"), ("loss/mix", "mix"), ("train/lr", "lr"), ("train/step_ms", "step_ms")):
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert logged == [(line["step"], pytest.approx(line[field], rel=1e-6)) for line in lines], tag
    results = json.loads((run / "results.json").read_text())
    for metric in ("auroc", "closed_acc", "openness"):
        assert events.Scalars(f"final/{metric}")[0].value == pytest.approx(results[metric], rel=1e-6)
    assert events.Scalars("eval/osr/auroc")[0].value == pytest.approx(results["evaluation"]["osr"]["auroc"],
                                                                      rel=1e-6)

    # one grid per epoch, at the epoch's last step: 16 views of 16 px, enlarged 4x, 8 per row, red boxes
    grids = events.Images("gradmix/views")
    steps_per_epoch = (lines[-1]["step"] + 1) // 2
    assert [grid.step for grid in grids] == [steps_per_epoch - 1, 2 * steps_per_epoch - 1]
    pixels = _png_pixels(grids[-1].encoded_image_string)
    assert pixels.shape == (2 + 2 * (64 + 2), 2 + 8 * (64 + 2), 3)
    red = np.all(pixels == np.round(np.array(BOX_COLOUR) * 255).astype(np.uint8), axis=-1)
    tiles = [red[2 + r * 66:2 + r * 66 + 64, 2 + c * 66:2 + c * 66 + 64] for r in range(2) for c in range(8)]
    assert all(tile.any() for tile in tiles) and not red[0:2].any()  # every view has its box, padding has none
    roc = _png_pixels(events.Images("final/roc")[0].encoded_image_string)
    assert roc.shape[0] > 100 and roc.shape[1] > 100


def test_view_grid_outlines_each_box_like_a_written_out_loop():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 5, 6, generator=generator) * 2 - 1  # normalised: some pixels clip
    top, left = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1])
    box_h, box_w = torch.tensor([5, 3, 1]), torch.tensor([6, 2, 4])
    grid = view_grid(images, mean, std, (top, left, box_h, box_w), min_side=1)  # (3, H', W') uint8

    for i in range(3):
        expected = np.clip(images[i].double().numpy() * np.array(std)[:, None, None]
                           + np.array(mean)[:, None, None], 0, 1)  # (3, 5, 6)
        t, lft, h, w = int(top[i]), int(left[i]), int(box_h[i]), int(box_w[i])
        for y in range(5):
            for x in range(6):
                on_border = t <= y < t + h and lft <= x < lft + w and (y in (t, t + h - 1) or x in (lft, lft + w - 1))
                if on_border:
                    expected[:, y, x] = BOX_COLOUR
        tile = grid[:, 2:2 + 5, 2 + i * (6 + 2):2 + i * (6 + 2) + 6].numpy()
        np.testing.assert_allclose(tile, np.round(expected * 255), atol=1)


def test_view_grid_enlarges_small_views_and_keeps_the_outline_thin():
    images = torch.zeros(2, 1, 4, 4)
    grid = view_grid(images, (0.0,), (1.0,), tuple(torch.tensor([v, v]) for v in (1, 1, 2, 2)), min_side=16)
    tile = grid[:, 2:18, 2:18]  # the first view, 4x enlarged
    red = (tile[0] == 255) & (tile[1] == round(BOX_COLOUR[1] * 255))
    # the box is pixels 4..11 of the enlarged tile; its one-pixel outline has 4 * 8 - 4 pixels
    assert int(red.sum()) == 28 and bool(red[4, 4:12].all()) and not bool(red[5, 5:11].any())


@pytest.mark.parametrize("tool", ["train", "evaluate"])
def test_without_the_package_one_line_and_exit_2(tool, tmp_path, monkeypatch, capsys):
    real_find_spec = tensorboard_module.importlib.util.find_spec
    monkeypatch.setattr(tensorboard_module.importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real_find_spec(name, *args))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        if tool == "train":
            train_main(TINY + ["--epochs", "1", "--out", str(run), "--tensorboard"])
        else:
            run.mkdir()
            evaluate_main(["--run", str(run), "--tensorboard", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'fastgradmix[tensorboard]'" in err
    assert not run.exists() or list(run.iterdir()) == []

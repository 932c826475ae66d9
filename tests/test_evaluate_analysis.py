"""python -m fastgradmix.evaluate --tasks linear,diversity end to end on tiny digits runs trained here.

References written independently of the library: the model's forward on hand-normalised images, scikit-learn's
LogisticRegression for the linear probe (the objective linear_probe.py documents), scikit-learn's nearest
neighbours for TwoNN, and LayerCAM of the open-set score computed one image at a time.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from fastgradmix.data.protocols import build_protocol
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.evaluation.diversity_task import grid_rows
from fastgradmix.models import build_model
from fastgradmix.train import main as train_main

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--epochs", "2"]
# normalised maps (the written-out reference below normalises): conv4_2 maps of 16 px digits are positive
# almost everywhere, so the thresholds span 0.05..0.6
AREA_RANGE = ["--area-range", "0.05,0.6", "--area-maps", "normalized"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """GradMix (keeping epoch_001.pt) and plain runs of split 0, and a GradMix run of split 1."""
    root = tmp_path_factory.mktemp("analysis-runs")
    train_main(TINY + ["--out", str(root / "gradmix"), "--save-every", "1"])
    train_main(TINY + ["--out", str(root / "plain"), "--aug", "none"])
    train_main(TINY + ["--out", str(root / "split1"), "--split", "1"])
    return root


@pytest.fixture
def run(runs, tmp_path):
    return shutil.copytree(runs / "gradmix", tmp_path / "run")


def evaluate(*args):
    evaluate_main([*args, "--no-progress"])


def _model_and_data(run_dir, checkpoint="last.pt"):
    cfg = json.loads((run_dir / "config.json").read_text())
    data = build_protocol("digits", cfg["split"], cfg["image_size"], "unused", progress=False)
    model = build_model(cfg["arch"], 1, cfg["stem"], cfg["width"], cfg["feature_dim"])
    model.load_state_dict(torch.load(run_dir / checkpoint, weights_only=True)["model"])
    return model.eval(), data


def _inputs(images):
    return (images.float() / 255 - 0.5) / 0.5  # digits: mean 0.5, std 0.5, stored at the run's size


def _sklearn_probe_accuracy(train, train_labels, test, test_labels, weight_decay=1e-4):
    """Top-1 and top-5 of LogisticRegression with C = 1 / (weight_decay N) on features standardised with the
    training mean and (ddof 1) std: the objective of the library's probe."""
    mean, std = train.mean(0), train.std(0, ddof=1)
    std = np.where(std > 1e-6, std, 1.0)
    classifier = LogisticRegression(C=1 / (weight_decay * len(train)), max_iter=20000, tol=1e-10)
    classifier.fit((train - mean) / std, train_labels)
    scores = classifier.decision_function((test - mean) / std)
    top = np.argsort(-scores, axis=1)
    return float(np.mean(top[:, 0] == test_labels)), float(np.mean((top[:, :5] == test_labels[:, None]).any(1)))


def test_linear_task_matches_sklearn_at_every_checkpoint(run):
    evaluate("--run", str(run), "--tasks", "linear")
    linear = json.loads((run / "results.json").read_text())["evaluation"]["linear"]
    assert [point["epoch"] for point in linear["curve"]] == [1, 2]  # epoch_001.pt, then last.pt (epoch 2)
    assert linear["features"] == "encoder" and linear["num_classes"] == 6
    for point, checkpoint in zip(linear["curve"], ["epoch_001.pt", "last.pt"], strict=True):
        model, data = _model_and_data(run, checkpoint)
        known = data.test_labels >= 0
        with torch.no_grad():
            train = model.encoder(_inputs(data.train_images)).double().numpy()
            test = model.encoder(_inputs(data.test_images[known])).double().numpy()
        top1, top5 = _sklearn_probe_accuracy(train, data.train_labels.numpy(), test, data.test_labels[known].numpy())
        n_test = int(known.sum())
        # two solvers to a tolerance: a test image on the decision boundary may go either way
        assert point["top1"] == pytest.approx(top1, abs=2.5 / n_test), checkpoint
        assert point["top5"] == pytest.approx(top5, abs=2.5 / n_test), checkpoint
    assert linear["top1"] == linear["curve"][-1]["top1"] and linear["n_test"] == n_test
    text = (run / "report.md").read_text()
    assert "## Linear evaluation" in text and "](plots/linear_curve.png)" in text
    with Image.open(run / "plots" / "linear_curve.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_linear_features_are_cached_per_checkpoint_version(run, monkeypatch):
    evaluate("--run", str(run), "--tasks", "linear")
    first = json.loads((run / "results.json").read_text())["evaluation"]["linear"]
    assert len(list((run / "feature_cache").glob("*.pt"))) == 2

    def no_forward(*args, **kwargs):
        raise AssertionError("features recomputed although the checkpoint did not change")

    monkeypatch.setattr("fastgradmix.evaluation.linear_task.extract_features", no_forward)
    evaluate("--run", str(run), "--tasks", "linear")
    again = json.loads((run / "results.json").read_text())["evaluation"]["linear"]
    assert again["curve"] == first["curve"]
    # a rewritten checkpoint is a new version: its features are computed again
    state = torch.load(run / "last.pt", weights_only=True)
    torch.save(state, run / "last.pt")
    with pytest.raises(AssertionError, match="recomputed"):
        evaluate("--run", str(run), "--tasks", "linear")


def _written_out_twonn(points):
    distances, _ = NearestNeighbors(n_neighbors=3).fit(points).kneighbors(points)  # self, first, second
    mu = np.sort(distances[:, 2] / distances[:, 1])
    kept = int(len(mu) * 0.9)
    x = np.log(mu[:kept])
    y = -np.log(1 - np.arange(1, len(mu) + 1)[:kept] / len(mu))  # the empirical CDF starts at 1/N
    return float((x * y).sum() / (x * x).sum())


def _written_out_cam_areas(model, data, thresholds, topk=10):
    """LayerCAM at conv4_2 of each known test image alone, for d(open-set score)/dA; S_M over all of them."""
    with torch.no_grad():
        bank = F.normalize(model(_inputs(data.train_images)), dim=1)
    acts = {}
    hook = model.cam_module("conv4_2").register_forward_hook(lambda module, i, output: acts.update(a=output))
    above = np.zeros(len(thresholds))
    images = data.test_images[data.test_labels >= 0]
    for image in images:
        z = model(_inputs(image[None]))[0]
        similarity = bank @ z  # (B,)
        scores = [similarity[data.train_labels == c].topk(topk).values.sum() for c in range(data.num_known)]
        gradient = torch.autograd.grad(torch.stack(scores).max(), acts["a"])[0][0]
        cam = F.relu((F.relu(gradient) * acts["a"][0]).sum(0))
        cam = cam / (cam.max() + 1e-7)
        cam = F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
        above += np.array([(cam > tau).double().mean().item() for tau in thresholds])
    hook.remove()
    return above / len(images)


def _written_out_raw_cam_areas(model, data, thresholds, topk=10):
    """S_M of the raw LayerCAM at conv4_2's own resolution, one image at a time, counted in NumPy."""
    with torch.no_grad():
        bank = F.normalize(model(_inputs(data.train_images)), dim=1)
    acts = {}
    hook = model.cam_module("conv4_2").register_forward_hook(lambda module, i, output: acts.update(a=output))
    above, shape = np.zeros(len(thresholds)), None
    images = data.test_images[data.test_labels >= 0]
    for image in images:
        z = model(_inputs(image[None]))[0]
        similarity = bank @ z  # (B,)
        scores = [similarity[data.train_labels == c].topk(topk).values.sum() for c in range(data.num_known)]
        gradient = torch.autograd.grad(torch.stack(scores).max(), acts["a"])[0][0].double().numpy()
        activation = acts["a"][0].detach().double().numpy()
        cam = np.maximum((np.maximum(gradient, 0) * activation).sum(0), 0)  # (h, w), not normalised
        shape = cam.shape
        above += np.array([np.count_nonzero(cam > tau) / cam.size for tau in thresholds])
    hook.remove()
    return above / len(images), shape


def test_activated_area_of_raw_maps_at_the_cam_resolution_is_a_numpy_count(run):
    evaluate("--run", str(run), "--tasks", "diversity", "--area-range", "1e-4,1e-1", "--cam-grid", "2")
    diversity = json.loads((run / "results.json").read_text())["evaluation"]["diversity"]
    assert diversity["area_maps"] == "raw"
    model, data = _model_and_data(run)
    expected, shape = _written_out_raw_cam_areas(model, data, diversity["thresholds"])
    assert shape == (4, 4) and diversity["map_size"] == "conv4_2 4x4"  # 16 px: conv4_x has stride 4
    assert diversity["activated_area"] == pytest.approx(expected.tolist(), abs=2e-3)
    assert expected[0] > expected[-1]  # raw maps are not normalised: the range shows a curve
    assert "not normalised, at the CAM layer's resolution (conv4_2 4x4)" in (run / "report.md").read_text()


def test_per_class_intrinsic_dimension_of_the_training_features(run):
    evaluate("--run", str(run), "--tasks", "diversity", "--id-features", "train-per-class", "--cam-grid", "2")
    diversity = json.loads((run / "results.json").read_text())["evaluation"]["diversity"]
    model, data = _model_and_data(run)
    with torch.no_grad():
        encoder = model.encoder(_inputs(data.train_images)).double().numpy()
        head = model(_inputs(data.train_images)).double().numpy()
    labels = data.train_labels.numpy()
    for key, features in (("twonn_encoder", encoder), ("twonn_head", head)):
        per_class = {data.known_classes[c]: _written_out_twonn(features[labels == c]) for c in range(data.num_known)}
        assert diversity[f"{key}_per_class"] == pytest.approx(per_class, rel=1e-3)
        assert diversity[key] == pytest.approx(np.mean(list(per_class.values())), rel=1e-3)
    assert diversity["id_features"] == "train-per-class" and diversity["n_id"] == len(labels)
    assert "each known class's training images" in (run / "report.md").read_text()


def test_diversity_task_against_written_out_measures(run):
    evaluate("--run", str(run), "--tasks", "diversity", *AREA_RANGE)
    diversity = json.loads((run / "results.json").read_text())["evaluation"]["diversity"]
    model, data = _model_and_data(run)
    known = data.test_labels >= 0
    with torch.no_grad():
        encoder = model.encoder(_inputs(data.test_images[known])).double().numpy()
        head = model(_inputs(data.test_images[known])).double().numpy()
    assert diversity["n"] == int(known.sum()) and diversity["cam_layers"] == "conv4_2"
    assert diversity["twonn_encoder"] == pytest.approx(_written_out_twonn(encoder), rel=1e-3)
    assert diversity["twonn_head"] == pytest.approx(_written_out_twonn(head), rel=1e-3)
    assert diversity["thresholds"][0] == pytest.approx(0.05) and diversity["thresholds"][-1] == pytest.approx(0.6)
    expected = _written_out_cam_areas(model, data, diversity["thresholds"])
    assert diversity["activated_area"] == pytest.approx(expected.tolist(), abs=1e-3)
    assert expected[0] > expected[-1] > 0  # the range shows the curve, not a constant
    text = (run / "report.md").read_text()
    assert "## Feature diversity" in text
    for figure in ("plots/activated_area.png", "plots/cam_grid.png"):
        assert f"]({figure})" in text
        with Image.open(run / figure) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_default_thresholds_span_1e5_to_1e3(run):
    evaluate("--run", str(run), "--tasks", "diversity", "--cam-grid", "2")
    diversity = json.loads((run / "results.json").read_text())["evaluation"]["diversity"]
    assert diversity["thresholds"][0] == pytest.approx(1e-5) and diversity["thresholds"][-1] == pytest.approx(1e-3)
    assert len(diversity["thresholds"]) == 9
    assert all(0.0 <= a <= 1.0 for a in diversity["activated_area"])


def test_compare_puts_the_diversity_of_two_runs_side_by_side(run, runs):
    evaluate("--run", str(run), "--tasks", "diversity", "--compare", str(runs / "plain"), *AREA_RANGE)
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    compare = evaluation["compare"]
    assert compare["aug"] == "none" and compare["this_aug"] == "gradmix" and "corruption" not in compare
    model, data = _model_and_data(runs / "plain")
    with torch.no_grad():
        encoder = model.encoder(_inputs(data.test_images[data.test_labels >= 0])).double().numpy()
    assert compare["diversity"]["twonn_encoder"] == pytest.approx(_written_out_twonn(encoder), rel=1e-3)
    assert compare["diversity"]["activated_area"] != evaluation["diversity"]["activated_area"]
    assert not (runs / "plain" / "report.md").exists()  # nothing is written into the other run
    text = (run / "report.md").read_text()
    assert "this run (gradmix)" in text and "plain (none)" in text
    with Image.open(run / "plots" / "cam_grid.png") as image:  # three rows: images, this run, the other run
        assert image.format == "PNG" and image.size[1] > 300


def test_compare_needs_the_same_test_images(run, runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate("--run", str(run), "--tasks", "diversity", "--compare", str(runs / "split1"))
    assert exit_info.value.code == 2
    assert "same test images" in capsys.readouterr().err
    assert "evaluation" not in json.loads((run / "results.json").read_text())


@pytest.mark.parametrize("args,message", [
    (["--area-range", "1e-3"], "--area-range"),
    (["--area-range", "1e-3,1e-5"], "LOW <= HIGH"),
    (["--cam-grid", "0"], "--cam-grid"),
])
def test_bad_diversity_options_are_one_line(run, args, message, capsys):
    with pytest.raises(SystemExit):
        evaluate("--run", str(run), "--tasks", "diversity", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_grid_rows_take_half_known_half_unknown():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1, -1, 0])
    rows = grid_rows(labels, 4)
    assert rows.tolist() == [0, 9, 6, 8]  # known rows 0..9 spread (0 and 9), unknown rows 6..8 (6 and 8)
    assert grid_rows(torch.tensor([0, 1, 2]), 8).tolist() == [0, 1, 2]  # closed set: all known, as many as exist


def test_sweep_folder_aggregates_linear_and_diversity(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "gradmix", sweep / "split0")
    shutil.copytree(runs / "split1", sweep / "split1")
    evaluate("--run", str(sweep), "--tasks", "linear,diversity", "--max-images", "80", "--max-bank", "300")
    top = json.loads((sweep / "results.json").read_text())["evaluation"]
    per_split = [json.loads((sweep / f"split{k}" / "results.json").read_text())["evaluation"] for k in (0, 1)]
    top1 = [result["linear"]["top1"] for result in per_split]
    assert top["linear"]["mean"]["top1"]["mean"] == pytest.approx(np.mean(top1))
    assert top["linear"]["mean"]["top1"]["std"] == pytest.approx(np.std(top1, ddof=1))
    dims = [result["diversity"]["twonn_encoder"] for result in per_split]
    assert top["diversity"]["mean"]["twonn_encoder"]["mean"] == pytest.approx(np.mean(dims))
    assert top["diversity"]["activated_area"] == pytest.approx(
        np.mean([result["diversity"]["activated_area"] for result in per_split], axis=0).tolist())
    assert per_split[0]["linear"]["n_test"] == 80
    text = (sweep / "report.md").read_text()
    assert "## Linear evaluation" in text and "## Feature diversity" in text and "mean ± std" in text

"""python -m fastgradmix.evaluate end to end on tiny digits runs trained here: osr, closed, corruption, ood against
noise and an ImageFolder out-set, merging into results.json, the report and its figures, sweeps, --compare.

The scores are checked against an independent NumPy implementation of Algorithm 1 and scikit-learn's AUROC.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.evaluation.corruption_task import corruption_seed
from fastgradmix.evaluation.corruptions import corrupt
from fastgradmix.models import build_model
from fastgradmix.train import main as train_main

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--epochs", "1"]
FAST_CORRUPTIONS = ["--corruptions", "gaussian_noise,contrast,pixelate", "--severities", "1,3,5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits runs (GradMix and plain) of split 0, and one of split 1."""
    root = tmp_path_factory.mktemp("digits-runs")
    train_main(TINY + ["--out", str(root / "gradmix")])
    train_main(TINY + ["--out", str(root / "plain"), "--aug", "none"])
    train_main(TINY + ["--out", str(root / "split1"), "--split", "1"])
    return root


@pytest.fixture
def run(runs, tmp_path):
    """A fresh copy of the GradMix run, so every test starts from training's files only."""
    return shutil.copytree(runs / "gradmix", tmp_path / "run")


def independent_scorer(run_dir, topk: int = 10):
    """Algorithm 1 written out with NumPy for a digits run: model forward, cosine similarities, per-class top-k
    sums. Returns (score(images) -> (open-set scores, predictions), the protocol's data)."""
    from fastgradmix.data.protocols import build_protocol

    cfg = json.loads((run_dir / "config.json").read_text())
    data = build_protocol("digits", cfg["split"], cfg["image_size"], "unused", progress=False)
    model = build_model(cfg["arch"], 1, cfg["stem"], cfg["width"], cfg["feature_dim"])
    model.load_state_dict(torch.load(run_dir / "last.pt", weights_only=True)["model"])
    model.eval()

    def features(images):
        x = (images.float() / 255 - 0.5) / 0.5  # digits: mean 0.5, std 0.5, stored at the run's size
        with torch.no_grad():
            return F.normalize(model(x), dim=1).double().numpy()

    bank = features(data.train_images)
    bank_labels = data.train_labels.numpy()

    def score(images):
        similarity = features(images) @ bank.T
        class_scores = np.stack([np.sort(similarity[:, bank_labels == c], axis=1)[:, ::-1][:, :topk].sum(axis=1)
                                 for c in range(data.num_known)], axis=1)
        return class_scores.max(axis=1), class_scores.argmax(axis=1)

    return score, data


def independent_algorithm1(run_dir, topk: int = 10):
    """(open-set scores, predictions, labels) of the digits test set, by ``independent_scorer``."""
    score, data = independent_scorer(run_dir, topk)
    return (*score(data.test_images), data.test_labels.numpy())


def evaluate(*args):
    evaluate_main([*args, "--no-progress"])


def test_all_tasks_on_digits(run):
    training = json.loads((run / "results.json").read_text())
    evaluate("--run", str(run), "--tasks", "all", *FAST_CORRUPTIONS)
    results = json.loads((run / "results.json").read_text())
    # training's keys are kept as they were
    assert {k: v for k, v in results.items() if k != "evaluation"} == training
    evaluation = results["evaluation"]
    assert {"osr", "closed", "corruption"} <= evaluation.keys() and "ood" not in evaluation
    assert "no OOD pairing" in evaluation["skipped"]["ood"]

    scores, predictions, labels = independent_algorithm1(run)
    known = labels >= 0
    expected_auroc = roc_auc_score(known, scores)
    expected_acc = float(np.mean(predictions[known] == labels[known]))
    # float32 (library) and float64 (here) similarities may order a near-tie differently: a few pairs of 70,000
    assert evaluation["osr"]["auroc"] == pytest.approx(expected_auroc, abs=1e-4)
    assert evaluation["osr"]["auroc"] == pytest.approx(training["auroc"], abs=1e-6)
    assert evaluation["osr"]["closed_acc"] == pytest.approx(expected_acc)
    assert evaluation["closed"]["closed_acc"] == pytest.approx(expected_acc)
    assert evaluation["osr"]["n_known"] == known.sum() and evaluation["osr"]["n_unknown"] == (~known).sum()
    assert evaluation["osr"]["openness"] == pytest.approx(1 - np.sqrt(6 / 10))

    corruption = evaluation["corruption"]
    assert corruption["table"] == "cifar10-c" and corruption["severities"] == [1, 3, 5]
    assert corruption["clean_acc"] == pytest.approx(expected_acc)
    for name, accuracies in corruption["acc"].items():
        assert corruption["drop"][name] == pytest.approx([expected_acc - a for a in accuracies])
        assert corruption["mean_drop"][name] == pytest.approx(np.mean(corruption["drop"][name]))
    assert corruption["overall_mean_drop"] == pytest.approx(np.mean(list(corruption["mean_drop"].values())))
    # contrast at severity 5 (factor 0.15) flattens 16 px digits: the classifier must suffer
    assert corruption["drop"]["contrast"][-1] > corruption["drop"]["contrast"][0]
    # two entries recomputed here: corrupt the known test images (one chunk of <= 1000, its documented seed)
    score, data = independent_scorer(run)
    known_images, known_labels = data.test_images[data.test_labels >= 0], data.test_labels[data.test_labels >= 0]
    for name, severity, column in (("contrast", 5, 2), ("gaussian_noise", 3, 1)):
        corrupted = corrupt(known_images, name, severity, seed=corruption_seed(0, name, severity, 0))
        accuracy = float(np.mean(score(corrupted)[1] == known_labels.numpy()))
        assert corruption["acc"][name][column] == pytest.approx(accuracy, abs=1.5 / known_labels.numel()), name

    text = (run / "report.md").read_text()
    for figure in ("plots/roc_osr.png", "plots/hist_osr.png", "plots/corruption.png"):
        assert f"]({figure})" in text
        with Image.open(run / figure) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert "## Skipped" in text and "no OOD pairing" in text


def test_evaluating_again_merges_tasks_and_records_settings(run):
    evaluate("--run", str(run), "--tasks", "osr", "--topk", "3")
    first = json.loads((run / "results.json").read_text())["evaluation"]
    evaluate("--run", str(run), "--tasks", "closed", "--score", "normalized")
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    assert evaluation["osr"] == first["osr"]  # kept from the first invocation
    assert evaluation["osr"]["settings"]["topk"] == 3 and evaluation["closed"]["settings"]["score"] == "normalized"
    scores, _, labels = independent_algorithm1(run, topk=3)
    assert evaluation["osr"]["auroc"] == pytest.approx(roc_auc_score(labels >= 0, scores), abs=1e-4)
    assert "## Open-set recognition" in (run / "report.md").read_text()


def test_normalized_score_matches_independent_normalisation(run):
    evaluate("--run", str(run), "--tasks", "osr", "--score", "normalized", "--topk", "3")
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    from fastgradmix.data.protocols import build_protocol  # rebuild the class scores, normalise by their sum

    cfg = json.loads((run / "config.json").read_text())
    data = build_protocol("digits", 0, cfg["image_size"], "unused", progress=False)
    model = build_model(cfg["arch"], 1, cfg["stem"], cfg["width"], cfg["feature_dim"])
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    model.eval()
    with torch.no_grad():
        bank = F.normalize(model((data.train_images.float() / 255 - 0.5) / 0.5), dim=1).double().numpy()
        test = F.normalize(model((data.test_images.float() / 255 - 0.5) / 0.5), dim=1).double().numpy()
    similarity = test @ bank.T
    labels = data.train_labels.numpy()
    class_scores = np.stack([np.sort(similarity[:, labels == c], axis=1)[:, -3:].sum(axis=1) for c in range(6)], 1)
    normalised = class_scores / class_scores.sum(axis=1, keepdims=True)
    known = data.test_labels.numpy() >= 0
    assert evaluation["osr"]["auroc"] == pytest.approx(roc_auc_score(known, normalised.max(axis=1)), abs=1e-4)


def test_ood_against_noise_and_an_imagefolder(run, tmp_path):
    folder = tmp_path / "letters"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(6):  # RGB, a different size: resized and turned grey for the 1-channel digits run
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    evaluate("--run", str(run), "--tasks", "ood", "--ood-out", f"noise:uniform,folder:{folder}")
    ood = json.loads((run / "results.json").read_text())["evaluation"]["ood"]
    assert set(ood) == {"noise:uniform", f"folder:{folder}"}
    scores, _, labels = independent_algorithm1(run)
    n_known = int((labels >= 0).sum())
    assert ood["noise:uniform"]["n_in"] == n_known and ood["noise:uniform"]["n_out"] == n_known
    assert ood[f"folder:{folder}"]["n_out"] == 12
    for result in ood.values():
        assert set(result) >= {"tnr", "auroc", "dtacc", "auin", "auout"}
        assert all(0 <= result[k] <= 1 for k in ("tnr", "auroc", "dtacc", "auin", "auout"))
    assert (run / "plots" / "roc_ood.png").is_file() and "## Out-of-distribution" in (run / "report.md").read_text()


def test_max_images_caps_each_set(run):
    evaluate("--run", str(run), "--tasks", "osr,corruption", "--max-images", "40", "--corruptions", "fog",
             "--severities", "2")
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    assert evaluation["osr"]["n_known"] == 40 and evaluation["osr"]["n_unknown"] == 40
    assert evaluation["corruption"]["n"] == 40 and list(evaluation["corruption"]["acc"]) == ["fog"]


def test_compare_puts_two_runs_side_by_side(run, runs):
    evaluate("--run", str(run), "--tasks", "corruption", "--compare", str(runs / "plain"), "--corruptions",
             "gaussian_noise,fog", "--severities", "1,5", "--max-images", "80")
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    compare = evaluation["compare"]
    assert compare["aug"] == "none" and compare["this_aug"] == "gradmix"
    assert set(compare["corruption"]["mean_drop"]) == {"gaussian_noise", "fog"}
    assert not (runs / "plain" / "report.md").exists()  # nothing is written into the other run
    text = (run / "report.md").read_text()
    assert "### Compared with" in text and "plots/corruption.png" in text


def test_sweep_folder_gives_mean_and_std(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "gradmix", sweep / "split0")
    shutil.copytree(runs / "split1", sweep / "split1")
    evaluate("--run", str(sweep), "--tasks", "osr,closed", "--max-images", "80", "--max-bank", "300")
    top = json.loads((sweep / "results.json").read_text())["evaluation"]
    per_split = [json.loads((sweep / f"split{k}" / "results.json").read_text())["evaluation"]["osr"]["auroc"]
                 for k in (0, 1)]
    assert [row["auroc"] for row in top["osr"]["per_split"]] == per_split
    assert top["osr"]["mean"]["auroc"]["mean"] == pytest.approx(np.mean(per_split))
    assert top["osr"]["mean"]["auroc"]["std"] == pytest.approx(np.std(per_split, ddof=1))
    for k, row in enumerate(top["osr"]["per_split"]):
        assert row["split"] == k
    assert "mean ± std" in (sweep / "report.md").read_text()

"""OOD and closed-set evaluation of CIFAR-10 runs: the default pairing (CIFAR-100 and SVHN test sets, written
here in their official formats), the released CIFAR-10-C arrays, and real CIFAR-10 from ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_writers import write_cifar10_pickles, write_cifar100_pickles, write_svhn
from sklearn.metrics import roc_auc_score

from fastgradmix.data.protocols import build_protocol
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.evaluation.out_sets import default_out_sets
from fastgradmix.models import build_model
from fastgradmix.train import main as train_main

TINY = ["--width", "4", "--batch-size", "32", "--cam-layers", "conv4_2", "--no-progress", "--epochs", "1",
        "--eval-batch-size", "256"]


def evaluate(*args):
    evaluate_main([*args, "--no-progress"])


def test_default_pairing():
    assert default_out_sets("cifar10-closed") == ["cifar10-vs-cifar100", "cifar10-vs-svhn"]
    assert default_out_sets("cifar10-vs-svhn") == ["cifar10-vs-cifar100", "cifar10-vs-svhn"]
    assert default_out_sets("digits") == [] and default_out_sets("cifar10") == []


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """CIFAR-10 (8 train / 4 test per class), CIFAR-100 test (50 images) and SVHN test (30) as official files."""
    root = tmp_path_factory.mktemp("cifar-files")
    rng = np.random.default_rng(0)

    def images(n):
        return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)

    write_cifar10_pickles(root / "cifar-10-batches-py", {"train": (images(80), np.repeat(np.arange(10), 8)),
                                                         "test": (images(40), np.repeat(np.arange(10), 4))})
    write_cifar100_pickles(root / "cifar-100-python", {"train": (images(100), np.arange(100)),
                                                       "test": (images(50), np.arange(50) % 100)})
    write_svhn(root / "svhn", "test", images(30), np.arange(30) % 10)
    return root


@pytest.fixture(scope="module")
def cifar_run(cifar_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("cifar-run") / "run"
    train_main(TINY + ["--protocol", "cifar10-closed", "--data-root", str(cifar_root), "--out", str(run)])
    return run


def independent_scores(run, root, images):
    """Algorithm 1 written out with NumPy: the max over classes of the top-10 cosine similarity sums."""
    cfg = json.loads((run / "config.json").read_text())
    data = build_protocol("cifar10-closed", 0, 32, root, progress=False)
    model = build_model(cfg["arch"], 3, cfg["stem"], cfg["width"], cfg["feature_dim"])
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    model.eval()
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)

    def features(x):
        with torch.no_grad():
            return F.normalize(model((x.float() / 255 - mean) / std), dim=1).double().numpy()

    similarity = features(images) @ features(data.train_images).T
    labels = data.train_labels.numpy()
    return np.stack([np.sort(similarity[:, labels == c], axis=1)[:, -10:].sum(axis=1) for c in range(10)], 1).max(1)


def test_cifar10_run_against_its_pairing(cifar_run, cifar_root):
    evaluate("--run", str(cifar_run), "--tasks", "all", "--corruptions", "fog", "--severities", "2")
    evaluation = json.loads((cifar_run / "results.json").read_text())["evaluation"]
    assert "closed-set" in evaluation["skipped"]["osr"] and "osr" not in evaluation
    ood = evaluation["ood"]
    assert set(ood) == {"cifar10-vs-cifar100", "cifar10-vs-svhn"}
    assert (ood["cifar10-vs-cifar100"]["n_in"], ood["cifar10-vs-cifar100"]["n_out"]) == (40, 50)
    assert ood["cifar10-vs-svhn"]["n_out"] == 30
    data = build_protocol("cifar10-closed", 0, 32, cifar_root, progress=False)
    known = independent_scores(cifar_run, cifar_root, data.test_images)
    out = independent_scores(cifar_run, cifar_root, build_protocol("cifar10-vs-svhn", 0, 32, cifar_root,
                                                                   progress=False).test_images[40:])
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[known, out])
    assert ood["cifar10-vs-svhn"]["auroc"] == pytest.approx(expected, abs=1e-3)  # 1 / 1200 per flipped near-tie
    assert evaluation["closed"]["n"] == 40 and evaluation["corruption"]["n"] == 40
    text = (cifar_run / "report.md").read_text()
    assert "cifar10-vs-svhn" in text and "plots/roc_ood.png" in text


def test_missing_out_set_data(cifar_run, cifar_root, tmp_path, capsys):
    root = tmp_path / "no-svhn"
    root.mkdir()
    for name in ("cifar-10-batches-py", "cifar-100-python"):
        (root / name).symlink_to(cifar_root / name)
    evaluate("--run", str(cifar_run), "--tasks", "all", "--data-root", str(root), "--corruptions", "fog",
             "--severities", "1")
    evaluation = json.loads((cifar_run / "results.json").read_text())["evaluation"]
    assert set(evaluation["ood"]) == {"cifar10-vs-cifar100"}
    assert "svhn" in evaluation["skipped"]["ood cifar10-vs-svhn"].lower()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # asked for explicitly, a missing out-set is an error
        evaluate("--run", str(cifar_run), "--tasks", "ood", "--data-root", str(root))
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_released_cifar10_c(cifar_run, cifar_root, tmp_path):
    # arrays holding the clean test images at every severity: accuracy equals the clean one, drop exactly 0
    data = build_protocol("cifar10-closed", 0, 32, cifar_root, progress=False)
    clean = data.test_images.permute(0, 2, 3, 1).numpy()
    labels = np.repeat(np.arange(10), 4).astype(np.uint8)
    for name in ("fog", "snow"):
        np.save(tmp_path / f"{name}.npy", np.concatenate([clean] * 5))
    np.save(tmp_path / "labels.npy", np.concatenate([labels] * 5))
    evaluate("--run", str(cifar_run), "--tasks", "corruption", "--corruption-data", str(tmp_path),
             "--corruptions", "fog,snow")
    corruption = json.loads((cifar_run / "results.json").read_text())["evaluation"]["corruption"]
    assert corruption["source"].startswith("released CIFAR-10-C")
    assert corruption["n"] == 40 and corruption["overall_mean_drop"] == 0.0
    assert corruption["drop"]["fog"] == [0.0] * 5


@pytest.mark.slow
def test_real_cifar10_against_uniform_noise(real_data, tmp_path):
    root = real_data("cifar10")
    run = tmp_path / "run"
    train_main(TINY + ["--protocol", "cifar10-closed", "--data-root", str(root), "--train-subset", "320",
                       "--batch-size", "64", "--out", str(run)])
    evaluate("--run", str(run), "--tasks", "closed,ood", "--ood-out", "noise:uniform", "--max-images", "300")
    evaluation = json.loads((run / "results.json").read_text())["evaluation"]
    ood = evaluation["ood"]["noise:uniform"]
    assert (ood["n_in"], ood["n_out"]) == (300, 300)
    assert evaluation["closed"]["n"] == 300
    # even one epoch on 320 images tells real photographs from uniform noise
    assert ood["auroc"] > 0.6
    assert (run / "plots" / "hist_ood.png").is_file()

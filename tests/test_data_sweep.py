"""Runs on the new protocols through the CLI: --split all (resumable), closed-set results, --train-subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fastgradmix.train as train_module
from fastgradmix.train import main

# a tiny run: bundled digits, 128 training images, 2 steps per epoch
TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--train-subset", "128"]


@pytest.mark.slow
def test_split_all_is_resumable_and_writes_mean_std(tmp_path, monkeypatch):
    base = tmp_path / "sweep"
    main(TINY + ["--split", "all", "--epochs", "2", "--stop-after", "1", "--out", str(base)])
    assert (base / "split0" / "last.pt").is_file() and not (base / "split0" / "results.json").exists()
    assert not (base / "split1").exists() and not (base / "summary.json").exists()

    calls = []
    real_train = train_module.train

    def recording_train(cfg):
        calls.append((cfg.split, cfg.resume))
        return real_train(cfg)

    monkeypatch.setattr(train_module, "train", recording_train)
    main(TINY + ["--split", "all", "--epochs", "2", "--out", str(base)])
    assert calls == [(0, True), (1, False), (2, False), (3, False), (4, False)]  # split 0 resumed

    per_split = [json.loads((base / f"split{k}" / "results.json").read_text()) for k in range(5)]
    assert [r["split"] for r in per_split] == list(range(5)) and all(r["n_train"] == 128 for r in per_split)
    summary = json.loads((base / "summary.json").read_text())
    for key in ("auroc", "closed_acc"):
        values = np.array([r[key] for r in per_split])
        assert summary[key]["mean"] == pytest.approx(values.mean())
        assert summary[key]["std"] == pytest.approx(values.std(ddof=1))
    markdown = (base / "summary.md").read_text()
    assert f"| mean ± std | {summary['auroc']['mean']:.4f} ± {summary['auroc']['std']:.4f}" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 5 + 1  # header, 5 splits, the mean row

    # a third call finds every split finished: nothing is trained again
    calls.clear()
    stamps = [(base / f"split{k}" / "results.json").stat().st_mtime_ns for k in range(5)]
    main(TINY + ["--split", "all", "--epochs", "2", "--out", str(base)])
    assert calls == []
    assert stamps == [(base / f"split{k}" / "results.json").stat().st_mtime_ns for k in range(5)]

    # the resumed split 0 equals an uninterrupted run of split 0
    main(TINY + ["--split", "0", "--epochs", "2", "--out", str(tmp_path / "straight")])
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(base / "split0" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_split_all_of_a_single_split_protocol(synthetic_data, tmp_path):
    root, _ = synthetic_data
    base = tmp_path / "closed"
    main(["--protocol", "cifar10-closed", "--data-root", str(root), "--split", "all", "--width", "8",
          "--batch-size", "16", "--epochs", "1", "--no-progress", "--out", str(base)])
    summary = json.loads((base / "summary.json").read_text())
    assert len(summary["splits"]) == 1 and summary["auroc"] is None and summary["closed_acc"]["std"] == 0.0
    assert "| 0 | n/a |" in (base / "summary.md").read_text()


def test_closed_set_run_records_null_auroc(synthetic_data, tmp_path, capsys):
    root, _ = synthetic_data
    out = tmp_path / "run"
    main(["--protocol", "cifar10-closed", "--data-root", str(root), "--width", "8", "--batch-size", "16",
          "--epochs", "1", "--no-progress", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["auroc"] is None and 0.0 <= results["closed_acc"] <= 1.0
    assert (results["n_train"], results["n_known_test"], results["n_unknown_test"]) == (50, 30, 0)
    printed = capsys.readouterr().out
    assert "cifar10-closed split 0: 10 known / 0 unknown classes, openness 0.0000" in printed
    assert "n/a (closed set" in printed


def test_mnist_preset_and_train_subset(synthetic_data, tmp_path):
    root, _ = synthetic_data
    out = tmp_path / "run"
    main(["--protocol", "mnist", "--data-root", str(root), "--train-subset", "12", "--width", "8",
          "--batch-size", "6", "--epochs", "1", "--no-progress", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert (results["n_train"], results["n_known_test"], results["n_unknown_test"]) == (12, 18, 12)
    config = json.loads((out / "config.json").read_text())
    assert config["aug"] == "none" and config["image_size"] == 32 and config["train_subset"] == 12

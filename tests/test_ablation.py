"""bench/ablation.py: a tiny grid trains each run once, prints one table read from the runs' results, and picks up
where it stopped when run again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ablation.py"
TINY = ["--", "--width", "4", "--image-size", "16", "--batch-size", "64", "--eval-batch-size", "512", "--epochs", "2",
        "--train-subset", "256"]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_table_and_resume(ablation, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid"
    args = ["--out", str(out), "--augs", "cutmix", "--layers", "conv5_2", "--no-progress"]
    # first invocation: every run stops after one of its two epochs
    assert ablation.main(args + TINY + ["--stop-after", "1"]) == []
    assert "not finished yet" in capsys.readouterr().out
    names = ["supcon+simclr-cutmix", "supcon+simclr-gradmix-conv5_2", "ce"]  # ce: the baseline row
    assert all((out / name / "last.pt").is_file() and not (out / name / "results.json").exists() for name in names)

    rows = ablation.main(args + TINY)  # resumes every run, evaluates, prints the table
    printed = capsys.readouterr().out
    assert [row["run"] for row in rows] == names
    for row in rows:
        results = json.loads((out / row["run"] / "results.json").read_text())
        config = json.loads((out / row["run"] / "config.json").read_text())
        assert results["epochs"] == 2 and row["auroc"] == results["auroc"]
        assert row["closed_acc"] == results["closed_acc"]
        assert row["id_encoder"] == results["evaluation"]["diversity"]["twonn_encoder"] > 0
        assert config["seed"] == 0 and config["width"] == 4
        assert f"| {row['run']} | {row['auroc']:.4f} | {row['closed_acc']:.4f} |" in printed
    assert json.loads((out / "supcon+simclr-gradmix-conv5_2" / "config.json").read_text())["cam_layers"] == "conv5_2"
    ce_config = json.loads((out / "ce" / "config.json").read_text())
    assert (ce_config["method"], ce_config["aug"]) == ("ce", "none") and rows[-1]["score"] == "msp"
    assert (out / "ablation.md").read_text().count("| supcon+simclr-") == 2
    assert json.loads((out / "ablation.json").read_text()) == rows

    # a third invocation trains and evaluates nothing: everything is finished
    def fail(*args, **kwargs):
        raise AssertionError("ran again")

    monkeypatch.setattr(ablation, "train_main", fail)
    monkeypatch.setattr(ablation, "evaluate_main", fail)
    assert ablation.main(args + TINY) == rows


def test_unknown_aug_is_refused(ablation, tmp_path):
    with pytest.raises(SystemExit, match="unknown --augs entry 'sparkle'"):
        ablation.main(["--out", str(tmp_path), "--augs", "sparkle"])

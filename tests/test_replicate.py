"""bench/replicate.py, the GPU replication kit, in its dry form (seconds on a CPU): every row trains in its own
process, the table is read from the runs' results, and a second invocation trains nothing again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "replicate.py"


@pytest.fixture(scope="module")
def replicate():
    spec = importlib.util.spec_from_file_location("replicate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_kit_trains_every_row_and_prints_one_table(replicate, tmp_path, monkeypatch, capsys):
    out = tmp_path / "kit"
    rows = replicate.main(["--preset", "dry", "--out", str(out)])
    printed = capsys.readouterr().out
    assert [row["row"] for row in rows] == ["gradmix", "none", "ce", "ce (top-k)"]
    for row in rows:
        folder = out / row["row"].split(" ")[0]
        results = json.loads((folder / "results.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        assert config["epochs"] == 1 and config["protocol"] == "digits" and config["train_subset"] == 128
        assert 0 <= row["auroc"] <= 1 and 0 <= row["closed_acc"] <= 1
        assert f"| {row['row']} | {row['score']} | {row['auroc']:.4f} | {row['closed_acc']:.4f} |" in printed
        if row["row"] == "ce (top-k)":
            assert row["auroc"] == results["evaluation"]["osr"]["auroc"]
        else:
            assert row["auroc"] == results["auroc"] and row["wall_s"] > row["train_wall_s"] > 0
    assert [json.loads((out / name / "config.json").read_text())["aug"] for name in ("gradmix", "none", "ce")] == \
        ["gradmix", "none", "none"]
    assert rows[2]["score"] == "msp" and rows[3]["score"] == "sum"
    assert json.loads((out / "table.json").read_text()) == rows
    assert "| row | open-set score | AUROC |" in (out / "table.md").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(replicate, "train_command", fail)  # finished rows are read back, not retrained
    again = replicate.main(["--preset", "dry", "--out", str(out), "--runs", "gradmix,none"])
    assert [row["auroc"] for row in again] == [rows[0]["auroc"], rows[1]["auroc"]]


def test_a_real_data_preset_needs_a_data_root(replicate, tmp_path):
    with pytest.raises(SystemExit, match="--data-root"):
        replicate.main(["--preset", "cpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        replicate.main(["--preset", "dry", "--runs", "gradmix,sparkle", "--out", str(tmp_path)])

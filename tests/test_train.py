"""The training CLI end to end on the bundled digits protocol: smoke, exact resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastgradmix.train import main

# a tiny configuration: a few steps per epoch, seconds per run
TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2",
        "--no-progress", "--eval-batch-size", "256"]

RESULT_KEYS = {"protocol", "split", "method", "aug", "epochs", "seed", "auroc", "closed_acc", "n_train",
               "n_known_test", "n_unknown_test", "train_wall_s", "images_per_s"}


def test_training_smoke_writes_the_run_files(tmp_path):
    out = tmp_path / "run"
    main(TINY + ["--epochs", "1", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= results.keys()
    assert 0.0 <= results["auroc"] <= 1.0 and 0.0 <= results["closed_acc"] <= 1.0
    assert results["n_train"] > 0 and results["n_known_test"] > 0 and results["n_unknown_test"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["aug"] == "gradmix" and config["protocol"] == "digits"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and {"loss", "mix", "lr", "images_per_s"} <= lines[0].keys()
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1


def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(TINY + ["--epochs", "2", "--out", str(straight)])
    main(TINY + ["--epochs", "2", "--out", str(resumed), "--stop-after", "1"])
    assert not (resumed / "results.json").exists()
    assert torch.load(resumed / "last.pt", weights_only=True)["epoch"] == 1
    main(["--resume", "--out", str(resumed), "--no-progress"])
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "last.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume
    assert json.loads((straight / "results.json").read_text())["auroc"] == pytest.approx(
        json.loads((resumed / "results.json").read_text())["auroc"])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastgradmix.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args,expected", [
    (["--protocol", "nope"], "unknown protocol 'nope'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "many"], "invalid int value"),
    (["--aug", "sparkles"], "invalid choice"),
    (["--gamma-min", "0.6", "--gamma-max", "0.5"], "--gamma-min"),
    (["--cam-layers", "conv9_1"], "bad CAM layer name"),
    (["--cam-layers", "conv5_7"], "does not exist"),
    (["--split", "7"], "out of range"),
    (["--batch-size", "100000"], "exceeds"),
    (["--resume"], "not found"),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "run"
    result = _cli(*TINY, "--epochs", "1", "--out", str(out), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_unreadable_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    main(TINY + ["--epochs", "2", "--stop-after", "1", "--out", str(out)])
    (out / "last.pt").write_bytes(b"this is not a checkpoint")
    result = _cli("--resume", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot read checkpoint" in result.stderr


def test_existing_run_is_not_overwritten_silently(tmp_path):
    out = tmp_path / "run"
    main(TINY + ["--epochs", "1", "--out", str(out)])
    before = (out / "results.json").read_text()
    result = _cli(*TINY, "--epochs", "1", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert (out / "results.json").read_text() == before

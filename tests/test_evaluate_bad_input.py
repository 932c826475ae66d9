"""Bad input to python -m fastgradmix.evaluate: one line on stderr, exit code 2, the run folder untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.train import main as train_main

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad-input") / "run"
    train_main(TINY + ["--out", str(run)])
    return run


def snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def fails_cleanly(capsys, args, expected):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main([*args, "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert expected in err[0] and "Traceback" not in err[0], err[0]


@pytest.mark.parametrize("extra,expected", [
    (["--tasks", "osr,sparkles"], "unknown task sparkles"),
    (["--tasks", "ood"], "no OOD pairing"),
    (["--severities", "0,2"], "each must be 1-5"),
    (["--severities", "two"], "comma-separated integers"),
    (["--corruptions", "rain"], "unknown corruption rain"),
    (["--tasks", "corruption", "--corruption-data", "/nonexistent/CIFAR-10-C"], "not found"),
    (["--tasks", "osr", "--compare", "/nonexistent/run"], "--compare compares corruption robustness"),
    (["--tasks", "ood", "--ood-out", "imagenet-r"], "not an OOD protocol"),
    (["--tasks", "ood", "--ood-out", "folder:/nonexistent/folder"], "no such folder"),
    (["--topk", "0"], "--topk must be >= 1"),
    (["--max-images", "-3"], "must be >= 0"),
    (["--score", "softmax"], "invalid choice"),
])
def test_bad_options(trained, tmp_path, capsys, extra, expected):
    before = snapshot(trained)
    fails_cleanly(capsys, ["--run", str(trained), *extra], expected)
    assert snapshot(trained) == before


def test_missing_or_empty_run_folder(tmp_path, capsys):
    fails_cleanly(capsys, ["--run", str(tmp_path / "nowhere")], "no such folder")
    fails_cleanly(capsys, ["--run", str(tmp_path)], "holds no run")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_files(trained, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained / "config.json").read_text())
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    before = snapshot(broken)
    fails_cleanly(capsys, ["--run", str(broken)], "cannot read checkpoint")
    (broken / "last.pt").write_bytes((trained / "last.pt").read_bytes())
    (broken / "config.json").write_text("{ not json")
    fails_cleanly(capsys, ["--run", str(broken)], "config.json: not valid JSON")
    (broken / "config.json").write_text((trained / "config.json").read_text())
    (broken / "results.json").write_text("{ truncated")
    before = snapshot(broken)
    fails_cleanly(capsys, ["--run", str(broken), "--tasks", "closed"], "results.json")
    assert snapshot(broken) == before  # the unreadable results.json is not replaced


def test_command_line_reports_one_line(trained, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastgradmix.evaluate", "--run", str(trained), "--tasks", "nope"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fastgradmix.evaluate: error: unknown task nope: choose from "
                                                  "osr, closed, ood, corruption, linear, diversity"]

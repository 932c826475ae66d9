"""The trainer end to end with each input pipeline (--loader dali|torch|device) on the bundled digits, and the
one-line message of --loader dali where DALI is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastgradmix.data.loaders.dali import dali_available
from fastgradmix.train import main

# a tiny configuration: 11 steps, seconds per run
TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--epochs", "1"]


@pytest.mark.parametrize("loader", [pytest.param("dali", marks=pytest.mark.skipif(
    not dali_available(), reason="NVIDIA DALI is not installed")), "torch", "device"])
def test_training_runs_end_to_end_with_each_loader(tmp_path, capsys, loader):
    out = tmp_path / "run"
    main(TINY + ["--loader", loader, "--out", str(out)])
    assert f"input pipeline: {loader} (" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["auroc"] <= 1.0 and 0.0 <= results["closed_acc"] <= 1.0
    assert results["n_train"] == 754 and results["n_known_test"] + results["n_unknown_test"] == 540
    assert json.loads((out / "config.json").read_text())["loader"] == loader
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 754 // 64 - 1  # one epoch of full batches


def test_loader_dali_without_dali_says_how_to_install_it_in_one_line(tmp_path):
    # a process where `import nvidia.dali` fails, as on a machine without it
    code = ("import sys; sys.modules['nvidia.dali'] = None; from fastgradmix.train import main; "
            f"main({TINY + ['--loader', 'dali', '--out', str(tmp_path / 'run')]!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "pip install" in lines[0] and "fastgradmix[dali]" in lines[0]
    assert not (tmp_path / "run").exists()

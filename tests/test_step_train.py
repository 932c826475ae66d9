"""The fast step inside the training CLI: timing fields in metrics.jsonl, a non-finite loss and CUDA's
out-of-memory error each end the run with one line, and the last good checkpoint survives."""

from __future__ import annotations

import json

import pytest
import torch

from fastgradmix.train import main
from fastgradmix.training import loop as train_module
from fastgradmix.training.step import TrainStep

# digits: 754 training images, so 11 steps of 64 per epoch
TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2",
        "--no-progress", "--eval-batch-size", "256"]
STEPS_PER_EPOCH = 11


def test_metrics_hold_step_timing_and_memory(tmp_path):
    out = tmp_path / "run"
    main(TINY + ["--epochs", "2", "--stop-after", "1", "--log-every", "4", "--out", str(out)])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 7, 10]  # every 4 steps and at the end of the epoch
    for line in lines:
        assert line["images_per_s"] > 0 and line["step_ms"] > 0 and line["peak_memory_mib"] > 0
        assert 0 < line["augment_share"] < 1 and 0 < line["cam_grad_share"] < 1
        assert "overflow_skipped_steps" not in line  # fp16 only


class _StepThatDiverges(TrainStep):
    """Makes the weights NaN before its ``poison_call``-th call, as a diverging run would."""

    poison_call = 6

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.poison_call:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return super().__call__(*args, **kwargs)


def test_non_finite_loss_names_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    main(TINY + ["--epochs", "3", "--stop-after", "1", "--out", str(out)])
    good = (out / "last.pt").read_bytes()
    capsys.readouterr()

    monkeypatch.setattr(train_module, "TrainStep", _StepThatDiverges)
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", "--out", str(out), "--log-every", "4"])
    assert exit_info.value.code == 2
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert len(stderr_lines) == 1, stderr_lines
    # the resumed epoch starts at step 11; its 6th step (16) goes bad, inside the log window 15..18
    bad_step = STEPS_PER_EPOCH + _StepThatDiverges.poison_call - 1
    assert f"non-finite (NaN or inf) at step {bad_step} (epoch 1)" in stderr_lines[0]
    assert "--lr" in stderr_lines[0] and "last.pt still holds the last good state (after epoch 1)" in stderr_lines[0]
    assert (out / "last.pt").read_bytes() == good
    assert not (out / "results.json").exists()
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) < bad_step


class _StepOutOfMemory(TrainStep):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(*args, **kwargs)


def test_cuda_out_of_memory_is_one_line_suggesting_a_smaller_batch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "TrainStep", _StepOutOfMemory)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(TINY + ["--epochs", "1", "--out", str(out)])
    assert exit_info.value.code == 2
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert len(stderr_lines) == 1, stderr_lines
    assert "out of memory at step 2" in stderr_lines[0]
    assert "smaller --batch-size" in stderr_lines[0] and "--amp" in stderr_lines[0]
    assert not (out / "results.json").exists() and not (out / "last.pt").exists()

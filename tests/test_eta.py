"""The expected-time line a run prints after its first logged steps (training/eta.py)."""

from __future__ import annotations

import re

import pytest

from fastgradmix.train import main as train_main
from fastgradmix.training.eta import RunEta, about, cpu_advice, format_duration


@pytest.mark.parametrize("seconds, text", [(0.2, "0 s"), (0.6, "1 s"), (42.4, "42 s"), (59.6, "1 min 00 s"),
                                           (185, "3 min 05 s"), (7620, "2 h 07 min"), (-3, "0 s")])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert format_duration(seconds) == text
    assert about(seconds) == ("under 1 s" if seconds < 0.5 else f"about {text}")


def test_cpu_advice_names_only_faster_settings_not_in_use():
    assert cpu_advice("cuda", "fp32", True, "torch") == []
    assert cpu_advice("cpu", "bf16", True, "dali") == []
    assert cpu_advice("cpu", "fp32", False, "device") == []  # no native bf16: fp32 is the faster choice
    assert any("--precision auto" in line for line in cpu_advice("cpu", "fp32", True, "device"))
    assert any("--loader device" in line for line in cpu_advice("cpu", "bf16", True, "torch"))


def test_the_line_comes_once_after_the_second_window_from_its_rate():
    probes = []

    def probe():
        probes.append(1)
        return 2.0, 100  # 20 ms per image

    eta = RunEta(end_step=100, eval_images=1000, probe=probe, advice=["--precision auto (...)"])
    assert eta.after_window(10, 10, 30.0) is None  # the warm-up window: not used
    line = eta.after_window(20, 10, 5.0)  # 0.5 s per step, 80 steps left: 40 s
    assert line == ("expected: training about 40 s more (500 ms per step, 80 steps left), then evaluation about "
                    "20 s (1000 images); faster on this CPU: --precision auto (...)")
    assert eta.after_window(30, 10, 5.0) is None and probes == [1]  # once


def test_a_run_of_one_window_still_gets_its_line_and_no_probe_without_evaluation():
    eta = RunEta(end_step=5, eval_images=10, probe=None, advice=[])
    assert eta.after_window(5, 5, 1.0) == "expected: training under 1 s more (200 ms per step, 0 steps left)"


def test_a_training_run_prints_the_line_with_the_cpu_advice(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTGRADMIX_FAST_BF16", "1")  # as on a CPU with native bf16
    train_main(["--width", "8", "--image-size", "16", "--batch-size", "128", "--cam-layers", "conv4_2",
                "--no-progress", "--epochs", "1", "--log-every", "2", "--loader", "device", "--precision", "fp32",
                "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("expected:")]
    assert len(lines) == 1, lines
    # 5 steps, windows of 2, 2 and 1 steps: the line after the second window, 1 step left; 754 + 540 images
    duration = r"(under 1 s|about \d+ (s|min \d\d s|h \d\d min))"
    assert re.fullmatch(rf"expected: training {duration} more \(\d+ ms per step, 1 steps left\), then "
                        rf"evaluation {duration} \(1294 images\); faster on this CPU: --precision auto .*",
                        lines[0]), lines[0]

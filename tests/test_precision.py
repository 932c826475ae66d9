"""--precision: the detection of fast bf16 (faked CPU flags and CUDA capabilities), the option's resolution and
its --amp alias, fp32 reproducing itself exactly whichever flag asks for it, the bf16 + channels_last loss curve
against fp32, and bf16 evaluation (after training and in fastgradmix.evaluate) against fp32 evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from test_step_compile import LOSS_CURVE_RTOL

from fastgradmix.common.errors import UserError
from fastgradmix.common.precision import (
    FP32,
    Precision,
    fast_bf16_here,
    has_fast_bf16,
    parse_cpu_flags,
    resolve_precision,
)
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.runs.config import merge, parse_args
from fastgradmix.runs.precision import resolve_run_config, run_precision
from fastgradmix.train import main as train_main

CPU = torch.device("cpu")

# an excerpt of /proc/cpuinfo on an AMD EPYC Zen 4 (avx512_bf16, no AMX), flags shortened
ZEN4_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs
"""
ICELAKE_FLAGS = frozenset("fpu sse avx avx2 avx512f avx512bw avx512vl avx512_vnni".split())  # AVX-512, no bf16
SAPPHIRE_FLAGS = frozenset("avx512f avx512bw amx_tile amx_bf16 amx_int8".split())  # AMX, no avx512_bf16 listed


# ---- the detection, from faked facts ----

def test_cpu_flags_are_read_from_cpuinfo_text():
    flags = parse_cpu_flags(ZEN4_CPUINFO)
    assert "avx512_bf16" in flags and "avx2" in flags and "sysret_ss_attrs" not in flags
    assert parse_cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # ARM's line
    assert parse_cpu_flags("") == frozenset()


@pytest.mark.parametrize("flags, onednn, expected", [
    (parse_cpu_flags(ZEN4_CPUINFO), True, True),  # avx512_bf16
    (SAPPHIRE_FLAGS, True, True),  # amx_bf16
    (ICELAKE_FLAGS, True, False),  # AVX-512 without bf16: oneDNN emulates it, slower than fp32
    (frozenset(), True, False),  # not Linux, or a VM hiding the flags
    (parse_cpu_flags(ZEN4_CPUINFO), False, False),  # a torch built without oneDNN bf16
    (frozenset({"bf16", "asimd"}), True, False),  # ARM's bf16 flag: not one we measured
])
def test_fast_bf16_on_a_cpu_needs_a_bf16_flag_and_onednn(flags, onednn, expected):
    assert has_fast_bf16("cpu", onednn_bf16=onednn, cpu_flags=flags) is expected


@pytest.mark.parametrize("capability, expected", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True),
                                                  ((12, 0), True), (None, False)])
def test_fast_bf16_on_cuda_needs_compute_capability_8(capability, expected):
    assert has_fast_bf16("cuda", cuda_capability=capability) is expected
    assert has_fast_bf16("mps", cuda_capability=capability, onednn_bf16=True,
                         cpu_flags=frozenset({"avx512_bf16"})) is False


def test_the_environment_overrides_the_detection(monkeypatch):
    monkeypatch.setattr("fastgradmix.common.precision._cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr("fastgradmix.common.precision._onednn_bf16", lambda: True)
    monkeypatch.delenv("FASTGRADMIX_FAST_BF16")
    assert fast_bf16_here(CPU)  # the faked facts
    monkeypatch.setenv("FASTGRADMIX_FAST_BF16", "0")
    assert not fast_bf16_here(CPU)
    monkeypatch.setattr("fastgradmix.common.precision._cpu_flags", lambda: frozenset())
    monkeypatch.setenv("FASTGRADMIX_FAST_BF16", "1")
    assert fast_bf16_here(CPU)
    monkeypatch.setenv("FASTGRADMIX_FAST_BF16", "yes")
    with pytest.raises(UserError, match="FASTGRADMIX_FAST_BF16"):
        fast_bf16_here(CPU)


# ---- resolving the option ----

def test_auto_is_bf16_channels_last_where_fast_else_fp32_nchw():
    assert resolve_precision("auto", CPU, fast_bf16=True) == Precision("bf16", channels_last=True)
    assert resolve_precision("auto", CPU, fast_bf16=False) == FP32
    assert resolve_precision("auto", CPU, channels_last=False, fast_bf16=True) == Precision("bf16", False)
    assert resolve_precision("bf16", CPU) == Precision("bf16", True)
    assert resolve_precision("fp32", CPU) == Precision("fp32", False)
    assert resolve_precision("fp32", CPU, channels_last=True) == Precision("fp32", True)
    assert Precision("bf16", True).dtype == torch.bfloat16 and FP32.dtype is None
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve_precision("fp16", CPU)


def test_amp_is_an_alias_of_precision():
    def requested(*argv):
        cfg, _ = parse_args(list(argv))
        return cfg.precision

    assert requested() == "auto"
    assert requested("--amp") == "bf16"
    assert requested("--amp", "--amp-dtype", "fp16") == "fp16"
    assert requested("--no-amp") == "fp32"
    assert requested("--precision", "bf16", "--amp") == "bf16"
    with pytest.raises(UserError, match="--amp means --precision bf16"):
        parse_args(["--amp", "--precision", "fp32"])
    with pytest.raises(UserError, match="--no-amp means --precision fp32"):
        parse_args(["--no-amp", "--precision", "auto"])


def test_the_resolved_config_is_consistent_and_old_run_folders_keep_their_precision(monkeypatch):
    monkeypatch.setenv("FASTGRADMIX_FAST_BF16", "1")
    cfg = resolve_run_config(parse_args([])[0], CPU)
    assert (cfg.precision, cfg.amp, cfg.amp_dtype, cfg.channels_last) == ("bf16", True, "bf16", True)
    cfg = resolve_run_config(parse_args(["--precision", "fp32"])[0], CPU)
    assert (cfg.precision, cfg.amp, cfg.channels_last) == ("fp32", False, False)
    # a config.json written before --precision existed: amp said it, channels_last was a plain bool
    assert merge({}, {"amp": False, "channels_last": False}).precision == "fp32"
    assert merge({}, {"amp": True, "amp_dtype": "bf16", "channels_last": True}).precision == "bf16"
    # a resumed run keeps its recorded layout unless told otherwise
    saved = {"precision": "bf16", "amp": True, "channels_last": False}
    assert resolve_run_config(merge({}, saved), CPU).channels_last is False
    assert resolve_run_config(merge({"channels_last": True}, saved), CPU).channels_last is True
    # evaluation: the run's own precision, or another; fp16 runs are read in bf16 on a CPU
    assert run_precision(merge({}, saved), CPU) == Precision("bf16", False)
    assert run_precision(merge({}, saved), CPU, "fp32") == FP32
    assert run_precision(merge({}, {"precision": "fp16", "channels_last": True}), CPU) == Precision("bf16", True)


# ---- training and evaluating: one epoch and a half of 11 steps on digits, every step logged ----

RUN = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
       "--epochs", "2", "--log-every", "1", "--loader", "device", "--eval-batch-size", "256"]
TIMING_KEYS = {"train_wall_s", "images_per_s", "step_ms", "augment_share", "cam_grad_share", "peak_memory_mib"}


def _metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING_KEYS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same short run in fp32 and in bf16 (channels_last by default)."""
    root = tmp_path_factory.mktemp("precision-runs")
    train_main(RUN + ["--out", str(root / "fp32"), "--precision", "fp32"])
    train_main(RUN + ["--out", str(root / "bf16"), "--precision", "bf16"])
    return root


def test_every_way_of_asking_for_fp32_gives_the_same_run(runs, tmp_path):
    """--no-amp and --precision auto on a machine without fast bf16 (the suite's setting) resolve to fp32 and
    must give the --precision fp32 run bit for bit: results.json, every logged loss, the weights. The bf16 run
    shows that the comparison sees a change of precision."""
    train_main(RUN + ["--out", str(tmp_path / "no-amp"), "--no-amp"])
    train_main(RUN + ["--out", str(tmp_path / "auto")])
    reference = runs / "fp32"
    expected = _without_timing(json.loads((reference / "results.json").read_text()))
    weights = torch.load(reference / "last.pt", weights_only=True)["model"]
    for other in (tmp_path / "no-amp", tmp_path / "auto", runs / "bf16"):
        config = json.loads((other / "config.json").read_text())
        same = other != runs / "bf16"
        assert (config["precision"], config["channels_last"]) == (("fp32", False) if same else ("bf16", True))
        results = _without_timing(json.loads((other / "results.json").read_text()))
        losses = [_without_timing(line) for line in _metrics(other)]
        other_weights = torch.load(other / "last.pt", weights_only=True)["model"]
        assert (results == expected) is same, other
        assert (losses == [_without_timing(line) for line in _metrics(reference)]) is same, other
        assert all(torch.equal(weights[name], other_weights[name]) for name in weights) is same, other


def test_bf16_channels_last_follows_the_fp32_loss_curve(runs):
    """The first epoch's 11 steps, at the tolerance the --compile test uses for bf16 + channels_last + compile."""
    plain, fast = _metrics(runs / "fp32")[:11], _metrics(runs / "bf16")[:11]
    assert [line["step"] for line in plain] == [line["step"] for line in fast] == list(range(11))
    for term in ("loss", "supcon", "simclr", "mix"):
        deviation = max(abs(a[term] - b[term]) / abs(a[term]) for a, b in zip(plain, fast, strict=True))
        assert deviation < LOSS_CURVE_RTOL, (term, deviation)
    assert plain[-1]["loss"] < 0.95 * plain[0]["loss"]  # the curve moves: not two flat lines agreeing


def test_bf16_evaluation_agrees_with_fp32_evaluation(runs, tmp_path):
    """The fp32 run evaluated in fp32 and in bf16 (--precision overrides the run's): AUROC within 0.005."""
    import shutil

    run = shutil.copytree(runs / "fp32", tmp_path / "run")
    auroc = {}
    for precision in ("fp32", "bf16"):
        evaluate_main(["--run", str(run), "--tasks", "osr", "--no-progress", "--precision", precision])
        osr = json.loads((run / "results.json").read_text())["evaluation"]["osr"]
        assert (osr["settings"]["precision"], osr["settings"]["channels_last"]) == (precision, precision == "bf16")
        auroc[precision] = osr["auroc"]
    training = json.loads((run / "results.json").read_text())["auroc"]
    assert auroc["fp32"] == pytest.approx(training, abs=1e-6)  # the run's own precision: training's figure
    assert abs(auroc["bf16"] - auroc["fp32"]) < 0.005, auroc


def test_a_bf16_run_evaluates_in_bf16_after_training_and_in_evaluate(runs, tmp_path, monkeypatch):
    import shutil

    from fastgradmix.training import loop

    seen = []
    real = loop.evaluate_open_set

    def spy(model, data, spec, topk, batch_size, device, precision, *args, **kwargs):
        seen.append(precision)
        return real(model, data, spec, topk, batch_size, device, precision, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_open_set", spy)
    train_main(RUN + ["--out", str(tmp_path / "bf16"), "--precision", "bf16", "--epochs", "1"])
    assert seen == [Precision("bf16", channels_last=True)]

    run = shutil.copytree(runs / "bf16", tmp_path / "run")
    evaluate_main(["--run", str(run), "--tasks", "osr", "--no-progress"])
    results = json.loads((run / "results.json").read_text())
    assert results["evaluation"]["osr"]["settings"]["precision"] == "bf16"
    # the same precision, layout and batches as training's own evaluation: the same figure
    assert results["evaluation"]["osr"]["auroc"] == pytest.approx(results["auroc"], abs=1e-6)


def test_fp16_on_a_cpu_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(RUN + ["--out", str(tmp_path / "fp16"), "--precision", "fp16", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision fp16" in err[0] and "bf16" in err[0]
    assert not (tmp_path / "fp16").exists()

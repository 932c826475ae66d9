"""Export: leave-one-out calibration and the bank file against independent NumPy code, model folder
validation, bad input, and (slow) the AOTInductor round trip of a trained digits model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deploy_helpers import eager_model, exported_model, trained_run

from fastgradmix.common.errors import UserError
from fastgradmix.deploy.calibration import leave_one_out_scores, threshold_for_tpr
from fastgradmix.deploy.model_folder import BANK_FILE, META_FILE, read_bank, read_model_dir, write_bank


def loo_reference(bank: np.ndarray, labels: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """Each entry scored against the bank without itself: a loop over entries and classes."""
    bank = bank.astype(np.float64)
    scores = np.empty(len(bank))
    for i in range(len(bank)):
        similarity = bank @ bank[i]  # (N,)
        not_self = np.arange(len(bank)) != i
        best = -np.inf
        for c in range(num_classes):
            others = similarity[(labels == c) & not_self]
            if len(others):
                best = max(best, np.sort(others)[::-1][:k].sum())
        scores[i] = best
    return scores


def threshold_reference(scores: np.ndarray, tpr: float) -> float:
    """The largest observed score t such that at least tpr of the scores are >= t (brute force)."""
    return max(t for t in scores if np.mean(scores >= t) >= tpr - 1e-12)


# unbalanced classes: one with a single entry (nothing left when it is held out), duplicates in class 0
@pytest.mark.parametrize("k", [1, 3, 10])
def test_leave_one_out_scores_match_a_loop(k):
    generator = torch.Generator().manual_seed(k)
    counts = (12, 5, 1, 8)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=generator)]
    bank = F.normalize(torch.randn(len(labels), 6, generator=generator), dim=1)
    first, second = (labels == 0).nonzero().flatten()[:2]
    bank[second] = bank[first]  # an exact duplicate: leave-one-out must keep the twin's similarity
    scores = leave_one_out_scores(bank, labels, len(counts), k)
    expected = loo_reference(bank.numpy(), labels.numpy(), len(counts), k)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 100, 754])
@pytest.mark.parametrize("tpr", [0.5, 0.9, 0.95, 1.0])
def test_threshold_accepts_the_requested_fraction(n, tpr):
    scores = torch.from_numpy(np.random.default_rng(n).normal(size=n))
    threshold = threshold_for_tpr(scores, tpr)
    assert threshold == threshold_reference(scores.numpy(), tpr)
    assert (scores >= threshold).double().mean() >= tpr - 1e-12


def test_threshold_rejects_a_bad_tpr():
    with pytest.raises(ValueError, match="tpr"):
        threshold_for_tpr(torch.zeros(3), 0.0)


def test_bank_file_has_the_documented_layout(tmp_path):
    features = F.normalize(torch.randn(5, 3), dim=1)
    labels = torch.tensor([2, 0, 1, 1, 0])
    write_bank(tmp_path / BANK_FILE, features, labels, num_classes=3)
    raw = (tmp_path / BANK_FILE).read_bytes()
    # docs/model_format.md: "FGMBANK1", u32 N, u32 D, u32 K, u32 0, N*D float32, N int32, little-endian
    assert raw[:8] == b"FGMBANK1" and struct.unpack("<4I", raw[8:24]) == (5, 3, 3, 0)
    assert len(raw) == 24 + 5 * 3 * 4 + 5 * 4
    np.testing.assert_array_equal(np.frombuffer(raw[24:84], "<f4").reshape(5, 3), features.numpy())
    np.testing.assert_array_equal(np.frombuffer(raw[84:], "<i4"), labels.numpy())
    read_features, read_labels, classes = read_bank(tmp_path / BANK_FILE)
    assert classes == 3 and torch.equal(read_features, features) and torch.equal(read_labels, labels)


def _fake_model_dir(folder, **changes):
    """A model folder with a valid model.json and bank (the program file is never loaded here)."""
    folder.mkdir()
    write_bank(folder / BANK_FILE, F.normalize(torch.randn(4, 3), dim=1), torch.tensor([0, 1, 1, 0]), 2)
    (folder / "model.cpu.pt2").write_bytes(b"not loaded by read_model_dir")
    meta = {"format": "fastgradmix-model", "format_version": 1, "class_names": ["a", "b"],
            "preprocessing": {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.5]},
            "scoring": {"topk": 10, "threshold": 7.5, "tpr": 0.95},
            "bank": {"file": BANK_FILE, "size": 4, "feature_dim": 3}, "programs": {"cpu": "model.cpu.pt2"}}
    meta.update(changes)
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def test_a_valid_model_dir_reads_back(tmp_path):
    model = read_model_dir(_fake_model_dir(tmp_path / "m"))
    assert model.class_names == ["a", "b"] and model.topk == 10 and model.threshold == 7.5
    assert model.preprocessing.channels == 1 and model.bank_features.shape == (4, 3)
    assert model.program_path("cpu").name == "model.cpu.pt2"
    with pytest.raises(UserError, match="has no cuda program"):
        model.program_path("cuda")


@pytest.mark.parametrize("corrupt,expected", [
    (lambda d: d.rename(d.with_name("gone")), "does not exist"),
    (lambda d: (d / META_FILE).unlink(), "model.json is missing"),
    (lambda d: (d / META_FILE).write_text("{not json"), "model.json: not valid JSON"),
    (lambda d: (d / META_FILE).write_text('{"format": "other"}'), "is not a fastgradmix-model file"),
    (lambda d: (d / BANK_FILE).unlink(), "bank.bin is missing"),
    (lambda d: (d / BANK_FILE).write_bytes((d / BANK_FILE).read_bytes()[:-3]), "is corrupt"),
    (lambda d: (d / BANK_FILE).write_bytes(b"NOTABANK" + (d / BANK_FILE).read_bytes()[8:]), "bad magic"),
    (lambda d: (d / "model.cpu.pt2").unlink(), "model.cpu.pt2 is missing"),
])
def test_corrupt_model_dirs_are_one_clear_error(tmp_path, corrupt, expected):
    folder = _fake_model_dir(tmp_path / "m")
    corrupt(folder)
    with pytest.raises(UserError, match=expected):
        read_model_dir(folder).program_path("cpu")


@pytest.mark.parametrize("changes,expected", [
    ({"format_version": 99}, "format version 99"),
    ({"class_names": ["a", "b", "c"]}, "does not match"),
    ({"scoring": {"topk": 0, "threshold": 1.0, "tpr": 0.9}}, "scoring: topk: value must be >= 1, got 0"),
    ({"preprocessing": {"image_size": 16, "channels": 2, "mean": [0.5], "std": [0.5]}},
     "preprocessing: channels: must be one of 1, 3, got 2"),
])
def test_inconsistent_model_json_is_one_clear_error(tmp_path, changes, expected):
    with pytest.raises(UserError, match=expected):
        read_model_dir(_fake_model_dir(tmp_path / "m", **changes))


def test_old_torch_without_aoti_gets_a_clear_error(monkeypatch):
    import torch._inductor

    from fastgradmix.deploy.aoti import aoti_api

    monkeypatch.delattr(torch._inductor, "aoti_compile_and_package")
    with pytest.raises(UserError, match=r"torch >= 2\.6"):
        aoti_api()


def _export_cli(capsys, *args) -> tuple[int, str]:
    """Runs the export CLI in this process; returns its exit code and stderr."""
    from fastgradmix.export import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    return exit_info.value.code, capsys.readouterr().err


def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    (not_a_run / "config.json").write_text("{}")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("keep me")
    cases = [
        (["--run", tmp_path / "missing"], "does not exist"),
        (["--run", not_a_run], "not a finished run folder"),
        (["--run", not_a_run, "--tpr", "1.5"], "--tpr must lie in (0, 1]"),
        (["--run", not_a_run, "--devices", "tpu"], "--devices"),
        (["--run", not_a_run, "--tpr", "high"], "invalid float value"),
    ]
    for args, expected in cases:
        code, stderr = _export_cli(capsys, *args, "--out", tmp_path / "out")
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], stderr
        assert not (tmp_path / "out").exists()
    code, stderr = _export_cli(capsys, "--run", not_a_run, "--out", busy)
    assert code == 2 and "not empty" in stderr and (busy / "something").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return exported_model(tmp_path_factory)


@pytest.mark.slow
def test_exported_program_matches_the_eager_model(run_dir, model_dir):
    from fastgradmix.data.augment import AugmentSpec, eval_view
    from fastgradmix.data.protocols import build_protocol

    program = torch._inductor.aoti_load_package(str(model_dir / "model.cpu.pt2"))
    model = eager_model(run_dir)
    generator = torch.Generator().manual_seed(0)
    data = build_protocol("digits", 0, 16, "")
    real = eval_view(data.test_images[::7], AugmentSpec(16, data.mean, data.std))  # (78, 1, 16, 16)
    inputs = [torch.randn(1, 1, 16, 16, generator=generator), torch.randn(5, 1, 16, 16, generator=generator), real]
    with torch.no_grad():
        for batch in inputs:
            exported, eager = program(batch), model(batch)
            assert exported.shape == eager.shape == (batch.shape[0], 128)
            torch.testing.assert_close(exported, eager, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_bank_is_the_training_features_and_the_threshold_accepts_the_tpr(run_dir, model_dir):
    from fastgradmix.data.augment import AugmentSpec
    from fastgradmix.data.protocols import build_protocol
    from fastgradmix.evaluation.features import extract_features

    model = read_model_dir(model_dir)
    data = build_protocol("digits", 0, 16, "")
    assert model.class_names == data.known_classes
    assert torch.equal(model.bank_labels, data.train_labels)
    spec = AugmentSpec(16, data.mean, data.std)
    eager = extract_features(eager_model(run_dir), data.train_images, spec, 256, torch.device("cpu"), progress=False)
    torch.testing.assert_close(model.bank_features, eager, rtol=0, atol=1e-6)

    # the threshold accepts the TPR of the training images, each scored against the bank without itself
    held_out = loo_reference(model.bank_features.numpy(), model.bank_labels.numpy(), len(model.class_names),
                             model.topk)
    # (a float32 score at the threshold may land a hair below it in float64: compare with a margin)
    accepted = np.mean(held_out >= model.threshold - 1e-5)
    strictly_above = np.mean(held_out > model.threshold + 1e-5)
    assert model.tpr == 0.95
    assert 0.95 <= accepted and strictly_above <= 0.95 + 1 / len(held_out), (accepted, strictly_above)
    meta = json.loads((model_dir / META_FILE).read_text())
    assert strictly_above - 1e-6 <= meta["calibration"]["held_out_accepted"] <= accepted + 1e-6

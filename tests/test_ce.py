"""``--method ce``, the cross-entropy baseline: its loss and scores against NumPy, its step's gradients, the
options around it, and every command-line path (loaders, AMP, compile, resume, --split all, evaluate,
export / predict, torchrun) on tiny digits runs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec, eval_view
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.evaluation.logit_scorer import LogitScorer, max_logit, max_softmax_probability
from fastgradmix.evaluation.scoring import build_scorer
from fastgradmix.models import ClassifierModel, build_model
from fastgradmix.runs.config import Config, merge, validate
from fastgradmix.train import main as train_main
from fastgradmix.training.objectives.cross_entropy import CrossEntropy
from fastgradmix.training.step import TrainStep

CPU = torch.device("cpu")
# a tiny configuration: a few steps per epoch, seconds per run
TINY = ["--method", "ce", "--width", "8", "--image-size", "16", "--batch-size", "64", "--no-progress",
        "--eval-batch-size", "256", "--threads", "1"]


def _numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ------------------------------------------------------------------------------ loss and scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_is_the_mean_cross_entropy_in_fp32(dtype):
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 5, generator=generator)).to(dtype)  # autocast may hand bf16 logits over
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    terms = CrossEntropy(Config(method="ce", aug="none")).clean_terms(logits, labels)
    assert set(terms) == {"loss", "ce", "mix"} and float(terms["mix"]) == 0.0
    assert terms["loss"].dtype == torch.float32
    reference = -_numpy_log_softmax(logits.double().numpy())[np.arange(7), labels.numpy()].mean()
    assert float(terms["loss"]) == pytest.approx(reference, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(float(F.cross_entropy(logits.float(), labels)), rel=1e-6)


def test_msp_and_mls_match_numpy():
    generator = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(50, 6, generator=generator)
    probabilities = np.exp(_numpy_log_softmax(logits.double().numpy()))
    np.testing.assert_allclose(max_softmax_probability(logits).numpy(), probabilities.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(max_logit(logits).numpy(), logits.numpy().max(axis=1), rtol=0)


def _uint8_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("score", ["msp", "mls"])
def test_logit_scorer_predicts_the_arg_max_and_scores_msp_or_mls(score):
    torch.manual_seed(0)
    model = ClassifierModel("resnet18", 3, width=4, num_classes=5).eval()
    spec = AugmentSpec(size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    images = _uint8_images(13)
    scored = LogitScorer(model, spec, batch_size=4, device=CPU, progress=False, score=score).score(images)
    with torch.no_grad():
        logits = model(eval_view(images, spec)).double().numpy()  # (13, 5)
    expected = np.exp(_numpy_log_softmax(logits)).max(axis=1) if score == "msp" else logits.max(axis=1)
    np.testing.assert_allclose(scored.open_scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert scored.predictions.tolist() == logits.argmax(axis=1).tolist()


def test_the_classifiers_embedder_is_its_normalised_pooled_features_sharing_its_weights():
    torch.manual_seed(0)
    model = ClassifierModel("resnet18", 3, width=4, num_classes=3).eval()
    embedder = model.embedder()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        pooled = model.encoder(x).double()
        expected = pooled / pooled.norm(dim=1, keepdim=True)
        torch.testing.assert_close(embedder(x).double(), expected, rtol=1e-5, atol=1e-6)
    assert all(a is b for a, b in zip(embedder.parameters(), model.encoder.parameters(), strict=True))
    assert not any(key.startswith("embedder") for key in model.state_dict())  # never stored in the model


def test_a_logit_score_needs_a_classifier():
    model = build_model("resnet18", 3, width=4)
    with pytest.raises(UserError, match="--method ce"):
        build_scorer(model, None, AugmentSpec(16, (0.5,) * 3, (0.2,) * 3), 10, 8, CPU, score="msp")


# ------------------------------------------------------------------------------ the step


def test_the_step_descends_the_cross_entropy_of_the_first_view():
    """SGD with lr 0 leaves the gradients readable: they are those of F.cross_entropy(model(v1), labels); the
    second view plays no part."""
    torch.manual_seed(0)
    cfg = Config(method="ce", aug="none", width=4, image_size=16, batch_size=6)
    model = ClassifierModel("resnet18", 3, width=4, num_classes=3)
    reference = copy.deepcopy(model)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), cfg, CPU)
    generator = torch.Generator().manual_seed(3)
    view1, view2 = torch.randn(6, 3, 16, 16, generator=generator), torch.randn(6, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    losses = step(view1, view2, labels, torch.Generator().manual_seed(0))
    expected = F.cross_entropy(reference(view1), labels)
    expected.backward()
    assert set(losses) == {"loss", "ce", "mix"}
    assert float(losses["loss"]) == pytest.approx(float(expected.detach()), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------ options


def test_method_ce_trains_without_a_mixed_view_and_scores_msp_by_default():
    cfg = merge({"method": "ce"})
    assert cfg.aug == "none" and cfg.score == "auto"
    validate(cfg)
    with pytest.raises(UserError, match="--aug none"):
        validate(merge({"method": "ce", "aug": "gradmix"}))
    with pytest.raises(UserError, match="--method ce"):
        validate(merge({"score": "msp"}))
    assert merge({"method": "ce"}, saved={"method": "ce", "aug": "none"}).aug == "none"


# ------------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ce") / "run"
    train_main([*TINY, "--epochs", "4", "--loader", "device", "--out", str(out)])
    return out


def test_a_tiny_ce_run_beats_chance_on_digits(ce_run):
    results = json.loads((ce_run / "results.json").read_text())
    assert results["method"] == "ce" and results["aug"] == "none" and results["score"] == "msp"
    assert results["closed_acc"] > 0.5  # six known digits: chance is 1/6
    assert results["auroc"] > 0.6
    assert set(torch.load(ce_run / "last.pt", weights_only=True)["model"]) >= {"classifier.weight", "classifier.bias"}


def _evaluation(run) -> dict:
    return json.loads((run / "results.json").read_text())["evaluation"]


@pytest.mark.parametrize("score", ["msp", "mls", "sum", "normalized"])
def test_evaluate_scores_a_ce_run_with_every_score(ce_run, score):
    evaluate_main(["--run", str(ce_run), "--tasks", "osr,closed", "--score", score, "--no-progress"])
    evaluation = _evaluation(ce_run)
    assert evaluation["osr"]["settings"]["score"] == score
    assert 0.5 < evaluation["osr"]["auroc"] <= 1.0
    if score == "msp":  # the run's own score: training's evaluation, repeated
        results = json.loads((ce_run / "results.json").read_text())
        assert evaluation["osr"]["auroc"] == pytest.approx(results["auroc"], abs=1e-9)
        assert evaluation["closed"]["closed_acc"] == pytest.approx(results["closed_acc"], abs=1e-9)
    if score == "mls":  # the same classifier: the same arg max
        assert evaluation["closed"]["closed_acc"] == pytest.approx(
            json.loads((ce_run / "results.json").read_text())["closed_acc"], abs=1e-9)


def test_evaluate_runs_every_task_on_a_ce_run(ce_run):
    evaluate_main(["--run", str(ce_run), "--tasks", "osr,closed,ood,corruption,linear,diversity", "--ood-out",
                   "noise:uniform", "--corruptions", "gaussian_noise,fog", "--severities", "1,5", "--max-images",
                   "40", "--max-bank", "120", "--no-progress"])
    evaluation = _evaluation(ce_run)
    assert evaluation["ood"]["noise:uniform"]["settings"]["score"] == "msp"
    assert set(evaluation["corruption"]["drop"]) == {"gaussian_noise", "fog"}
    assert 0 <= evaluation["linear"]["top1"] <= 1 and evaluation["diversity"]["twonn_encoder"] > 0
    assert (ce_run / "report.md").is_file()


def test_a_logit_score_of_a_contrastive_run_is_one_line(tmp_path):
    run = tmp_path / "supcon"
    train_main(["--width", "4", "--image-size", "16", "--batch-size", "64", "--epochs", "1", "--aug", "none",
                "--train-subset", "128", "--no-progress", "--out", str(run)])
    result = subprocess.run([sys.executable, "-m", "fastgradmix.evaluate", "--run", str(run), "--tasks", "osr",
                             "--score", "msp", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--method ce" in result.stderr


@pytest.mark.parametrize("extra", [["--loader", "torch", "--workers", "0"], ["--loader", "device", "--amp"]])
def test_ce_trains_with_each_loader_and_amp(tmp_path, extra):
    out = tmp_path / "run"
    train_main([*TINY, "--epochs", "1", "--train-subset", "192", *extra, "--out", str(out)])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(np.isfinite(line["ce"]) for line in lines)


def test_ce_resumes_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = [*TINY, "--epochs", "2", "--train-subset", "192", "--loader", "device"]
    train_main([*common, "--out", str(straight)])
    train_main([*common, "--out", str(resumed), "--stop-after", "1"])
    train_main(["--resume", "--out", str(resumed), "--no-progress"])
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_ce_sweeps_every_split(tmp_path):
    out = tmp_path / "sweep"
    train_main([*TINY, "--split", "all", "--epochs", "1", "--train-subset", "128", "--loader", "device", "--out",
                str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "ce" and len(summary["splits"]) == 5


@pytest.mark.slow
def test_ce_compiles(tmp_path):
    out = tmp_path / "run"
    train_main([*TINY, "--epochs", "1", "--train-subset", "128", "--loader", "device", "--compile", "--out",
                str(out)])
    assert 0 <= json.loads((out / "results.json").read_text())["closed_acc"] <= 1


@pytest.mark.slow
def test_ce_under_torchrun_equals_its_single_process_evaluation(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "fastgradmix.train", *TINY, "--epochs", "1", "--loader", "device", "--out", str(run)]
    result = subprocess.run(command, cwd=tmp_path, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run / "results.json").read_text())
    evaluate_main(["--run", str(run), "--tasks", "osr", "--no-progress"])
    assert _evaluation(run)["osr"]["auroc"] == pytest.approx(trained["auroc"], abs=1e-6)


@pytest.mark.slow
def test_export_of_a_ce_run_scores_its_features_by_top_k_and_predict_reads_it(ce_run, tmp_path, capsys):
    from fastgradmix.data.protocols import build_protocol
    from fastgradmix.deploy.exporter import export
    from fastgradmix.deploy.model_folder import read_model_dir
    from fastgradmix.evaluation.features import extract_features
    from fastgradmix.predict import main as predict_main
    from fastgradmix.runs.folder import load_run
    from fastgradmix.runs.rebuild import build_run_model

    model_dir = tmp_path / "model"
    export(ce_run, model_dir, progress=False)
    folder = read_model_dir(model_dir)
    data = build_protocol("digits", 0, 16, "")
    run = load_run(ce_run)
    model = build_run_model(run.cfg, data.channels, run.checkpoint, num_classes=data.num_known).eval()
    spec = AugmentSpec(16, data.mean, data.std)
    bank = extract_features(model.embedder(), data.train_images, spec, 256, CPU, progress=False)
    pooled = extract_features(model.encoder, data.train_images, spec, 256, CPU, progress=False)
    torch.testing.assert_close(folder.bank_features, bank, rtol=0, atol=1e-6)
    torch.testing.assert_close(bank, F.normalize(pooled, dim=1), rtol=0, atol=1e-6)
    assert json.loads((model_dir / "model.json").read_text())["source"]["method"] == "ce"

    from PIL import Image
    image = tmp_path / "digit.png"
    Image.fromarray(data.test_images[0, 0].numpy()).save(image)
    predict_main(["--model", str(model_dir), "--json", str(image)])  # every image scored: returns
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["nearest_class"] in data.known_classes

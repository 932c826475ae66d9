"""Every --method x --aug trains; the objectives of the new methods and the Mixup/CutMix slot against written-out
losses; MoCo's place in the step (key encoder before the keys, enqueue after the update) and in the checkpoint
(exact resume); --save-every; the CAM-layer ablation on ResNet-18/34/50."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from host_reads import ForbidHostReads

from fastgradmix.common.errors import UserError
from fastgradmix.gradmix.augment import gradmix_view
from fastgradmix.models import build_model
from fastgradmix.runs.config import AUGMENTATIONS, METHODS, Config, validate
from fastgradmix.train import main as train_main
from fastgradmix.training.mixed_views.pixel import mixed_view
from fastgradmix.training.step import TrainStep, build_optimizer

CPU = torch.device("cpu")
LABELS = torch.tensor([0, 1, 0, 2, 1, 2])
TERMS = {"supcon+simclr": {"loss", "supcon", "simclr", "mix"}, "supcon": {"loss", "supcon", "mix"},
         "simclr": {"loss", "simclr", "mix"}, "moco": {"loss", "moco", "mix"}}


def _config(**overrides) -> Config:
    values = dict(arch="resnet18", width=4, image_size=16, cam_layers="conv4_2", temperature=0.5, batch_size=6,
                  moco_queue=12, moco_temperature=0.3, gradmix_backend="reference")
    values.update(overrides)
    return Config(**values)


def _views(n=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.randn(n, 3, 16, 16, generator=generator)


CONTRASTIVE = tuple(m for m in METHODS if m != "ce")  # ce (a classifier, no mixed view): tests/test_ce.py


@pytest.mark.parametrize("method,aug", list(itertools.product(CONTRASTIVE, AUGMENTATIONS)))
def test_every_method_and_augmentation_trains(method, aug):
    torch.manual_seed(0)
    cfg = _config(method=method, aug=aug)
    model = build_model("resnet18", 3, width=4)
    step = TrainStep(model, build_optimizer(model, 1e-2, 0.0), cfg, CPU)
    before = [p.detach().clone() for p in model.parameters()]
    view1, view2 = _views()
    for seed in range(3):
        losses = step(view1, view2, LABELS, torch.Generator().manual_seed(seed))
    assert set(losses) == TERMS[method]
    assert all(torch.isfinite(v) for v in losses.values())
    assert (float(losses["mix"]) == 0.0) == (aug == "none")
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    fields = step.read_log_fields()
    assert (fields["augment_share"] > 0) == (aug != "none")
    if method == "moco":  # three steps of 6 keys in a queue of 12: the pointer went round once
        assert int(step.moco.queue_ptr) == 18 % 12


# ------------------------------------------------------------------------------ the objectives, written out


def _log_softmax_positive(anchor, candidates, tau):
    """-log softmax of candidates[0] among all candidates, for one anchor (D,) and candidates (M, D)."""
    logits = candidates @ anchor / tau
    return -(logits[0] - torch.logsumexp(logits, 0))


def _written_out_contrastive(z, ids, tau):
    """Mean over anchors of -mean over positives (same id, k != i) of log softmax over all k != i."""
    losses = []
    for i in range(z.shape[0]):
        others = [k for k in range(z.shape[0]) if k != i]
        logits = z[others] @ z[i] / tau
        log_prob = logits - torch.logsumexp(logits, 0)
        positive = torch.tensor([bool(ids[k] == ids[i]) for k in others])
        losses.append(-log_prob[positive].mean())
    return torch.stack(losses).mean()


def _written_out_clean(method, z1, z2, labels, cfg, keys=None, queue=None):
    if method == "moco":
        terms = [_log_softmax_positive(z1[i], torch.cat([keys[i:i + 1], queue]), cfg.moco_temperature)
                 for i in range(z1.shape[0])]
        return cfg.lam * torch.stack(terms).mean()
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    supcon = _written_out_contrastive(z, torch.cat([labels, labels]), cfg.temperature)
    simclr = _written_out_contrastive(z, torch.arange(n).repeat(2), cfg.temperature)
    return {"supcon+simclr": cfg.theta * supcon + cfg.lam * simclr, "supcon": cfg.theta * supcon,
            "simclr": cfg.lam * simclr}[method]


def _written_out_mix(method, z1, z2, z_mix, weights, cfg, keys=None, queue=None):
    terms = []
    n = z1.shape[0]
    for i in range(n):
        if method == "moco":  # positive k_i, negatives the queue
            terms.append(_log_softmax_positive(z_mix[i], torch.cat([keys[i:i + 1], queue]), cfg.moco_temperature))
        else:  # positive z2_i, negatives z1_j and z2_j, j != i
            others = [j for j in range(n) if j != i]
            candidates = torch.cat([z2[i:i + 1], z1[others], z2[others]])
            terms.append(_log_softmax_positive(z_mix[i], candidates, cfg.temperature))
    return (weights * torch.stack(terms)).mean()


@pytest.mark.parametrize("method,aug", [(m, a) for m in CONTRASTIVE for a in ("mixup", "cutmix")]
                         + [("moco", "gradmix")])
def test_step_gradients_equal_the_written_out_objective(method, aug, monkeypatch):
    """SGD with lr 0 keeps the weights and leaves the step's gradients readable; a copy of the model made before
    the step recomputes L_con + lambda mean(w_i l_mix(i)) with the mixed view the step drew."""
    torch.manual_seed(0)
    cfg = _config(method=method, aug=aug, width=8, lam=1.3, theta=0.7)
    model = build_model("resnet18", 3, width=8)
    reference = copy.deepcopy(model)
    key_model = copy.deepcopy(model)  # MoCo's key encoder starts as a copy; m q + (1 - m) q = q
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), cfg, CPU)
    queue = step.moco.queue.clone() if method == "moco" else None
    recorded = {}

    def record(function):
        def wrapper(*args, **kwargs):
            recorded["mixed"] = function(*args, **kwargs)
            recorded["args"] = args
            return recorded["mixed"]
        return wrapper

    monkeypatch.setattr("fastgradmix.training.mixed_views.pixel.mixed_view", record(mixed_view))
    monkeypatch.setattr("fastgradmix.gradmix.mixer.gradmix_view", record(gradmix_view))
    view1, view2 = _views()
    losses = step(view1, view2, LABELS, torch.Generator().manual_seed(5))
    mixed = recorded["mixed"]
    if aug in ("mixup", "cutmix"):  # the step's view is the mixing module's view of v1 with the step's generator
        again = mixed_view(aug, view1, cfg.mix_alpha, torch.Generator().manual_seed(5))
        assert torch.equal(again.images, mixed.images) and torch.equal(again.weights, mixed.weights)

    n = view1.shape[0]
    keys = None
    if method == "moco":
        with torch.no_grad():
            keys = F.normalize(key_model(view2), dim=1)
        acts = {}
        hook = reference.cam_module("conv4_2").register_forward_hook(lambda m, i, o: acts.update(a=o))
        z1, z2 = reference(view1), None
        hook.remove()
    else:
        z = reference(torch.cat([view1, view2]))
        z1, z2 = z[:n], z[n:]
    clean = _written_out_clean(method, z1, z2, LABELS, cfg, keys, queue)
    if aug == "gradmix":  # the CAM is LayerCAM of d(lambda L_moco)/dA of the queries' conv4_2 output
        grad = torch.autograd.grad(clean, acts["a"], retain_graph=True)[0]
        cam = F.relu((F.relu(grad) * acts["a"]).sum(1))
        cam = cam / (cam.flatten(1).max(1).values.view(n, 1, 1) + 1e-7)
        cam = F.interpolate(cam[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
        assert torch.allclose(cam, mixed.maps, atol=1e-4)
    z_mix = reference(mixed.images)
    total = clean + cfg.lam * _written_out_mix(method, z1, z2, z_mix, mixed.weights, cfg, keys, queue)
    assert float(losses["loss"]) == pytest.approx(float(total.detach()), rel=1e-5)
    total.backward()
    for (name, p_step), p_ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p_step.grad, p_ref.grad, atol=1e-6, rtol=1e-4), name
    if method == "moco":  # enqueued after the update: this step's keys in slots 0..5, the rest untouched
        assert torch.allclose(step.moco.queue[:n], keys, atol=1e-6)
        assert torch.equal(step.moco.queue[n:], queue[n:]) and int(step.moco.queue_ptr) == n


def test_moco_step_moves_the_key_encoder_by_the_momentum():
    """After a step with update q0 -> q1, the next step's key encoder is m k + (1 - m) q1 with k = q0."""
    torch.manual_seed(0)
    cfg = _config(method="moco", aug="none", moco_momentum=0.9)
    model = build_model("resnet18", 3, width=4)
    step = TrainStep(model, build_optimizer(model, 1e-2, 0.0), cfg, CPU)
    q0 = [p.detach().clone() for p in model.parameters()]
    view1, view2 = _views()
    step(view1, view2, LABELS, torch.Generator().manual_seed(0))
    q1 = [p.detach().clone() for p in model.parameters()]
    step(view1, view2, LABELS, torch.Generator().manual_seed(1))
    for k, a, b in zip(step.moco.key_encoder.parameters(), q0, q1, strict=True):
        assert torch.allclose(k, 0.9 * (0.9 * a + 0.1 * a) + 0.1 * b, atol=1e-6)


@pytest.mark.parametrize("method", ["moco", "supcon+simclr"])
def test_step_state_dict_resumes_exactly(method):
    """TrainStep.state_dict holds exactly "optimizer", "scaler" (and "moco"); a fresh step that loads it (and the
    model's weights) takes the same next step as the one it was saved from; a missing entry is a KeyError."""
    torch.manual_seed(0)
    cfg = _config(method=method, aug="gradmix")
    steps = []
    for _ in range(2):
        model = build_model("resnet18", 3, width=4)
        steps.append(TrainStep(model, build_optimizer(model, 1e-2, 0.0), cfg, CPU))
    saved, resumed = steps
    view1, view2 = _views()
    saved(view1, view2, LABELS, torch.Generator().manual_seed(0))
    state = copy.deepcopy(saved.state_dict())
    assert set(state) == {"optimizer", "scaler"} | ({"moco"} if method == "moco" else set())
    resumed.model.load_state_dict(saved.model.state_dict())
    resumed.load_state_dict(state)
    for step in steps:
        step(view1, view2, LABELS, torch.Generator().manual_seed(1))
    for a, b in zip(saved.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if method == "moco":
        assert torch.equal(saved.moco.queue, resumed.moco.queue)
        with pytest.raises(KeyError):
            resumed.load_state_dict({k: v for k, v in state.items() if k != "moco"})


@pytest.mark.parametrize("method,aug", [("moco", "gradmix"), ("moco", "cutmix"), ("simclr", "mixup"),
                                        ("supcon", "gradmix")])
def test_new_steps_read_nothing_back(method, aug):
    """The whole step, fused Adam and MoCo's enqueue included, under the host-read guard."""
    torch.manual_seed(0)
    cfg = _config(method=method, aug=aug, moco_key_splits=2)
    model = build_model("resnet18", 3, width=4)
    step = TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, CPU)
    view1, view2 = _views()
    step(view1, view2, LABELS, torch.Generator().manual_seed(0))  # Adam's state is created here
    with ForbidHostReads():
        losses = step(view1, view2, LABELS, torch.Generator().manual_seed(1))
    assert torch.isfinite(losses["loss"])


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("cam_layers", ["conv4_2", "conv5_2", "conv3_2+conv4_2", "conv4_2+conv5_2",
                                        "conv3_2+conv4_2+conv5_2"])
def test_cam_layer_ablation_on_every_backbone(arch, cam_layers, monkeypatch):
    """The paper's layer ablation: one GradMix step per backbone and layer set; the CAM hooks capture exactly
    the named blocks (their shapes) and the map is their LayerCAMs' sum, so its maximum is at most the count."""
    torch.manual_seed(0)
    cfg = _config(arch=arch, cam_layers=cam_layers)
    model = build_model(arch, 3, width=4)
    step = TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, CPU)
    seen = {}

    def record(images, acts, grads, *args, **kwargs):
        seen["shapes"] = [tuple(a.shape) for a in acts]
        seen["view"] = gradmix_view(images, acts, grads, *args, **kwargs)
        return seen["view"]

    monkeypatch.setattr("fastgradmix.gradmix.mixer.gradmix_view", record)
    view1, view2 = _views()
    losses = step(view1, view2, LABELS, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"]) and float(losses["mix"]) > 0
    expansion = 4 if arch == "resnet50" else 1
    expected = [(6, 4 * 2 ** (int(name[4]) - 2) * expansion, 16 // 2 ** (int(name[4]) - 2),
                 16 // 2 ** (int(name[4]) - 2)) for name in cam_layers.split("+")]
    assert seen["shapes"] == expected
    assert float(seen["view"].maps.max()) <= len(expected) + 1e-5


@pytest.mark.parametrize("overrides,message", [
    (dict(mix_alpha=0.0), "--mix-alpha"),
    (dict(moco_momentum=1.5), "--moco-momentum"),
    (dict(method="moco", moco_queue=100, batch_size=128), "--moco-queue 100"),
    (dict(moco_key_splits=0), "--moco-key-splits"),
    (dict(moco_temperature=0.0), "--moco-temperature"),
    (dict(save_every=-1), "--save-every"),
])
def test_bad_options_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(Config(**overrides))


def test_the_queue_size_only_matters_for_moco():
    validate(Config(method="simclr", moco_queue=100, batch_size=128))
    validate(Config(method="moco", moco_queue=128, batch_size=128))


# -------------------------------------------------------------------------------------- through the CLI

TINY = ["--width", "4", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "512"]


def test_moco_resume_continues_exactly(tmp_path):
    """The key encoder, the queue and its pointer are in last.pt: a run stopped after epoch 1 and resumed ends
    where the uninterrupted run does (model, MoCo state, results)."""
    args = TINY + ["--method", "moco", "--aug", "gradmix", "--epochs", "2", "--moco-queue", "200",
                   "--moco-key-splits", "2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_main(args + ["--out", str(straight)])
    train_main(args + ["--out", str(resumed), "--stop-after", "1"])
    halfway = torch.load(resumed / "last.pt", weights_only=True)
    assert halfway["epoch"] == 1 and int(halfway["moco"]["queue_ptr"]) == (11 * 64) % 200
    train_main(["--resume", "--out", str(resumed), "--no-progress"])
    a, b = (torch.load(path / "last.pt", weights_only=True) for path in (straight, resumed))
    for part in ("model", "moco"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert int(a["moco"]["queue_ptr"]) == (22 * 64) % 200
    results = [json.loads((path / "results.json").read_text()) for path in (straight, resumed)]
    assert results[0]["method"] == "moco" and results[0]["auroc"] == pytest.approx(results[1]["auroc"])


def test_save_every_keeps_model_snapshots_and_overwrite_drops_stale_ones(tmp_path):
    out = tmp_path / "run"
    train_main(TINY + ["--aug", "mixup", "--epochs", "3", "--save-every", "2", "--out", str(out)])
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_002.pt"]
    snapshot = torch.load(out / "epoch_002.pt", weights_only=True)
    assert snapshot["epoch"] == 2 and snapshot["config"]["aug"] == "mixup" and "optimizer" not in snapshot
    train_main(TINY + ["--aug", "mixup", "--epochs", "1", "--save-every", "1", "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_001.pt"]


@pytest.mark.slow
def test_compiled_moco_cutmix_step_matches_eager():
    """--compile as train.py applies it: no CAM layer (CutMix), so the model is one region, and MoCo's key encoder
    another. Same loss and gradients as eager over two steps (the first compiles). About a minute on a CPU."""
    from fastgradmix.training.compile import compile_regions

    torch.manual_seed(0)
    cfg = _config(method="moco", aug="cutmix")
    eager_model = build_model("resnet18", 3, width=4)
    compiled_model = copy.deepcopy(eager_model)
    steps = {name: TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), cfg, CPU)
             for name, model in (("eager", eager_model), ("compiled", compiled_model))}
    assert steps["compiled"].cam_modules == []
    compile_regions(compiled_model, [])
    compile_regions(steps["compiled"].moco.key_encoder, [])
    view1, view2 = _views()
    for seed in range(2):
        out = {name: step(view1, view2, LABELS, torch.Generator().manual_seed(seed)) for name, step in steps.items()}
        assert float(out["eager"]["loss"]) == pytest.approx(float(out["compiled"]["loss"]), rel=1e-5)
        for a, b in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5 * float(a.grad.abs().max()))
    assert torch.allclose(steps["eager"].moco.queue, steps["compiled"].moco.queue, atol=1e-5)

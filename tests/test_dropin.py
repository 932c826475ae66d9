"""``fastgradmix.GradMix``, the drop-in API: the README's example runs as written (torchvision ResNet-18,
a user-written SimCLR loss); ``mix`` equals the trainer's augmentation for the same seed, model and batch;
on a model that is not this project's, every output is checked against a written-out reference (hooks of
the test's own, brute-force box search, per-image resize-and-paste); nothing is read back to the host."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from host_reads import ForbidHostReads

import fastgradmix
from fastgradmix.gradmix import mixer as mixer_module
from fastgradmix.gradmix import reference
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.objectives import build_objective
from fastgradmix.training.step import TrainStep

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Drop-in: GradMix in your own training loop"


def readme_code_blocks() -> list[str]:
    """The ```python blocks of the README's drop-in section, in order."""
    text = (REPO / "README.md").read_text()
    assert text.count(SECTION + "\n") == 1, "the README lost its drop-in section"
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_example_trains_torchvision_resnet18(capsys):
    """The README's block, exec'd verbatim: 5 steps of a torchvision ResNet-18 with GradMix."""
    namespace = {"__name__": "readme_dropin"}
    exec(compile(readme_code_blocks()[0], "README.md (drop-in)", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"step {i}" for i in range(5)]
    history = namespace["history"]
    assert len(history) == 5 and np.isfinite(history).all()
    model, mixer = namespace["model"], namespace["mixer"]
    assert isinstance(model, torchvision.models.ResNet) and mixer.layers == ["layer3.1", "layer4.1"]
    assert all(0 < mix < 10 for _, mix in history)  # the mixed view's loss entered every step


def test_readme_lightly_example():
    pytest.importorskip("lightly")
    namespace = {"__name__": "readme_dropin"}
    first, second = readme_code_blocks()[:2]
    exec(compile(first, "README.md (drop-in)", "exec"), namespace)
    exec(compile(second, "README.md (drop-in, lightly)", "exec"), namespace)
    assert np.isfinite(namespace["mix"].item())


# ------------------------------------------------------------------ the same as the trainer's augmentation

@pytest.mark.parametrize("aug,cam,cam_grad", [("gradmix", "layercam", "exact"), ("gradcam-mix", "gradcam", "exact"),
                                              ("gradmix", "layercam", "detached")])
def test_mix_equals_the_trainers_augmentation(aug, cam, cam_grad):
    """TrainStep and GradMix on copies of one model, same batch, same generator seed, same --cam-grad:
    the same mixed images, weights, boxes, partners and maps, bit for bit."""
    cfg = Config(arch="resnet18", width=8, image_size=16, cam_layers="conv4_2+conv5_2", aug=aug,
                 cam_grad=cam_grad, gamma_min=0.2, gamma_max=0.6, gradmix_backend="reference")
    torch.manual_seed(0)
    trainer_model = build_model("resnet18", 3, width=8)
    user_model = copy.deepcopy(trainer_model)  # before any hook is placed
    view1, view2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    step = TrainStep(trainer_model, torch.optim.Adam(trainer_model.parameters(), 1e-3), cfg, torch.device("cpu"))
    made = []
    make = step.mixing.make
    step.mixing.make = lambda images, generator, indices=None: made.append(make(images, generator, indices)) or made[-1]
    step(view1, view2, labels, torch.Generator().manual_seed(5))
    trainer_view = made[0]

    # the user's side: module names (not the project's CAM names), the user computes the same clean loss
    names = {module: name for name, module in user_model.named_modules()}
    layers = [names[user_model.cam_module(cam_name)] for cam_name in cfg.cam_layer_list()]
    assert layers == ["encoder.layer3.1", "encoder.layer4.1"]
    mixer = fastgradmix.GradMix(user_model, layers=layers, gamma=(0.2, 0.6), cam=cam, cam_grad=cam_grad,
                                backend="reference")
    trainer_names = {module: name for name, module in trainer_model.named_modules()}
    assert [trainer_names[module] for module in step.cam_modules] == layers  # the same layers, on the copy
    assert mixer.modules == [user_model.get_submodule(name) for name in layers]
    objective = build_objective(cfg, user_model)
    with mixer.capture():
        features = user_model(objective.clean_views(view1, view2))
    loss = objective.clean_terms(features, labels)["loss"]
    if cam_grad == "exact":
        mixed = mixer.mix(view1, loss, generator=torch.Generator().manual_seed(5))
    else:  # the user's backward records G at the layers
        loss.backward()
        mixed = mixer.mix(view1, generator=torch.Generator().manual_seed(5))

    for field in ("images", "weights", "maps", "top", "left", "box_h", "box_w", "partner"):
        assert torch.equal(getattr(mixed, field), getattr(trainer_view, field)), field


# ------------------------------------------------------------------ a model that is not this project's

def _torchvision_batch():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=16)
    images = torch.rand(5, 3, 64, 64)
    return model, images


def _loss(features: torch.Tensor) -> torch.Tensor:
    """Any scalar of the features (a different weight per image, so images differ in their CAMs)."""
    return (features.square().sum(dim=1) * torch.linspace(0.5, 1.5, len(features))).mean()


def test_mix_against_written_out_reference_on_torchvision_resnet():
    model, images = _torchvision_batch()
    mixer = fastgradmix.GradMix(model, layers=["layer2.1", "layer3.0"], gamma=(0.2, 0.5), seed=3)
    doubled = torch.cat([images, images.flip(-1)])  # a 2N clean batch; the images are its first N rows
    with mixer.capture():
        features = model(doubled)
    loss = _loss(features)
    mixed = mixer.mix(images, loss)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad down to the layers only
    loss.backward()  # mix kept the graph for the user's backward

    # G by hooks of our own and autograd.grad of the same loss on a fresh forward
    kept = []
    handles = [model.get_submodule(name).register_forward_hook(lambda _m, _i, out: kept.append(out))
               for name in ("layer2.1", "layer3.0")]
    try:
        loss_again = _loss(model(doubled))
    finally:
        for handle in handles:
            handle.remove()
    grads = torch.autograd.grad(loss_again, kept)
    n, _, height, width = images.shape
    expected_maps = reference.layercam([a[:n].detach() for a in kept], [g[:n] for g in grads], (height, width))
    torch.testing.assert_close(mixed.maps, expected_maps, rtol=1e-5, atol=1e-6)

    # boxes: sides from gamma, each placed where the map's window sum is largest (all positions, float64)
    maps = mixed.maps.double().numpy()
    partner = mixed.partner.tolist()
    assert sorted(partner) == list(range(n)) and all(partner[i] != i for i in range(n))
    for i in range(n):
        top, left, box_h, box_w = (int(t[i]) for t in (mixed.top, mixed.left, mixed.box_h, mixed.box_w))
        assert box_h == box_w and round(0.2 * height) <= box_h <= round(0.5 * height)
        sums = [maps[i, y:y + box_h, x:x + box_w].sum() for y in range(height - box_h + 1)
                for x in range(width - box_w + 1)]
        assert maps[i, top:top + box_h, left:left + box_w].sum() >= max(sums) - 1e-9 * max(1.0, max(sums))
        assert mixed.weights[i].item() == pytest.approx(box_h * box_w / (height * width), rel=1e-6)
        pasted = F.interpolate(images[partner[i]:partner[i] + 1], size=(box_h, box_w), mode="bilinear",
                               align_corners=False)[0]
        torch.testing.assert_close(mixed.images[i, :, top:top + box_h, left:left + box_w], pasted)
        outside = torch.ones(height, width, dtype=torch.bool)
        outside[top:top + box_h, left:left + box_w] = False
        assert torch.equal(mixed.images[i][:, outside], images[i][:, outside])


def test_mix_reads_nothing_back_to_the_host():
    model, images = _torchvision_batch()
    mixer = fastgradmix.GradMix(model, layers=["layer3.1"], seed=0)
    with mixer.capture():
        loss = _loss(model(images))
    with ForbidHostReads():  # fails on .item(), bool(tensor), boolean masks, nonzero...
        mixed = mixer.mix(images, loss)
    assert mixed.images.shape == images.shape


def test_seed_makes_draws_repeatable_and_generator_overrides_it():
    model, images = _torchvision_batch()
    results = []
    for seed in (7, 7, 8):
        mixer = fastgradmix.GradMix(model, layers=["layer3.1"], seed=seed)
        with mixer.capture():
            loss = _loss(model(images))
        results.append(mixer.mix(images, loss))
        mixer.remove()
    assert torch.equal(results[0].images, results[1].images)
    assert not (torch.equal(results[0].box_h, results[2].box_h) and torch.equal(results[0].partner, results[2].partner))


def test_options_pass_through_to_gradmix_view(monkeypatch):
    """A keyword option of gradmix_view (its published-code variants, ``recipe``) reaches it unchanged, and
    the view is that variant's: the box centred on the hottest CAM pixel is filled with noise, not a partner."""
    from fastgradmix.gradmix.augment import GradMixRecipe

    received = {}
    real_view = mixer_module.gradmix_view

    def recording_view(*args, **kwargs):
        received.update(kwargs)
        return real_view(*args, **kwargs)

    monkeypatch.setattr(mixer_module, "gradmix_view", recording_view)
    recipe = GradMixRecipe(box_position="hottest", paste="noise")
    model, images = _torchvision_batch()
    mixer = fastgradmix.GradMix(model, layers=["layer3.1"], recipe=recipe, seed=0)
    with mixer.capture():
        loss = _loss(model(images))
    mixed = mixer.mix(images, loss)
    assert received == {"recipe": recipe}
    plain = fastgradmix.GradMix(model, layers=["layer3.1"], seed=0)
    with plain.capture():
        loss = _loss(model(images))
    assert not torch.equal(mixed.images, plain.mix(images, loss).images)


@pytest.mark.parametrize("kwargs,message", [
    (dict(layers=["layer9"]), "'layer9' is not a module of ResNet"),
    (dict(layers="layer4.1"), "non-empty list"),
    (dict(layers=[]), "non-empty list"),
    (dict(layers=["layer4.1"], gamma=(0.6, 0.2)), "0 < min <= max <= 1"),
    (dict(layers=["layer4.1"], cam="eigencam"), "cam must be one of"),
    (dict(layers=["layer4.1"], backend="cuda"), "backend must be one of"),
    (dict(layers=["layer4.1"], cam_grad="approximate"), "cam_grad must be one of"),
    (dict(layers=["layer4.1"], batch_norm_everything=True), "unknown option"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    model, _ = _torchvision_batch()
    with pytest.raises(ValueError, match=message):
        fastgradmix.GradMix(model, **kwargs)


def test_mix_without_a_captured_forward_with_gradients_fails_clearly():
    model, images = _torchvision_batch()
    mixer = fastgradmix.GradMix(model, layers=["layer3.1"])
    loss = _loss(model(images))
    with pytest.raises(RuntimeError, match="no captured forward"):
        mixer.mix(images, loss)
    with torch.no_grad(), mixer.capture():
        loss = _loss(model(images))
    with pytest.raises(RuntimeError, match="no gradient"):
        mixer.mix(images, loss)
    with mixer.capture():
        loss = _loss(model(images[:2]))
    with pytest.raises(ValueError, match="5 images but the captured forward held 2"):
        mixer.mix(images, loss)
    with mixer.capture():
        loss = _loss(model(images))
    with pytest.raises(ValueError, match="pass the loss"):
        mixer.mix(images)


def test_detached_mode_needs_the_users_backward_and_no_loss():
    model, images = _torchvision_batch()
    mixer = fastgradmix.GradMix(model, layers=["layer3.1"], cam_grad="detached")
    with mixer.capture():
        loss = _loss(model(images))
    with pytest.raises(ValueError, match="pass no loss"):
        mixer.mix(images, loss)
    with pytest.raises(RuntimeError, match="no gradient was recorded"):
        mixer.mix(images)
    loss.backward()
    assert mixer.mix(images).images.shape == images.shape


def test_import_fastgradmix_stays_light():
    code = "import sys, fastgradmix; assert 'torch' not in sys.modules; print(fastgradmix.GradMix.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "GradMix"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mix_uses_the_kernels_and_matches_the_reference():
    model, images = _torchvision_batch()
    model, images = model.cuda(), images.cuda()
    views = {}
    for backend in ("auto", "reference"):
        mixer = fastgradmix.GradMix(model, layers=["layer2.1", "layer3.1"], backend=backend)
        with mixer.capture():
            loss = _loss(model(images))
        if backend == "auto":
            assert mixer._ops_for(images.device).layercam.__module__ == "fastgradmix.kernels.layercam"
            with ForbidHostReads():
                views[backend] = mixer.mix(images, loss, generator=torch.Generator("cuda").manual_seed(0))
        else:
            views[backend] = mixer.mix(images, loss, generator=torch.Generator("cuda").manual_seed(0))
        mixer.remove()
    torch.testing.assert_close(views["auto"].maps, views["reference"].maps, rtol=1e-4, atol=1e-5)
    for field in ("box_h", "box_w", "partner"):
        assert torch.equal(getattr(views["auto"], field), getattr(views["reference"], field)), field

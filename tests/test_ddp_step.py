"""The training step under DDP: two gloo processes against one process on the concatenated global batch.

The reference is written from the building blocks (model, losses, gradmix_view, MoCo), not TrainStep: one
process sees the global batch (rank 0's images, then rank 1's), takes G = dL_con/dA of the global loss,
and makes each rank's part of the mixed view with that rank's generator, as the ranks do (partners are
drawn within a rank's images). Two SGD steps (SGD, not Adam: Adam's first step is scale-free and would
hide a wrong gradient scale); every parameter's gradient of both steps and the final weights must agree,
and DDP must all-reduce exactly once per step (a comm hook counts the reductions).

The evaluation features, embedded in shares by the ranks and gathered, must equal one process's, in order.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from gloo_group import run_gloo_workers
from torch import nn

from fastgradmix.data.augment import AugmentSpec
from fastgradmix.evaluation.features import extract_features
from fastgradmix.gradmix.augment import gradmix_view
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.runs.config import Config
from fastgradmix.training.objectives.losses import gradmix_objective, mix_loss_per_sample
from fastgradmix.training.objectives.moco import MoCo, infonce_per_sample, moco_objective

WORLD = 2
LOCAL_N = 4  # images per rank
STEPS = 2
LR = 0.5
CASES = {  # name: (method, cam_grad)
    "gradmix-exact": ("supcon+simclr", "exact"),
    "gradmix-detached": ("supcon+simclr", "detached"),
    "moco-gradmix": ("moco", "exact"),
}


class TinyCamModel(nn.Module):
    """No BatchNorm (per-rank batch statistics differ from the global batch's by design); one CAM layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))

    def forward(self, x):  # (N, 1, 12, 12) -> (N, 5)
        h = self.block(torch.relu(self.stem(x)))  # (N, 6, 12, 12)
        return F.normalize(self.head(h.mean(dim=(2, 3))), dim=1)

    def cam_module(self, name):
        return self.block


def _config(method: str, cam_grad: str) -> Config:
    return Config(method=method, aug="gradmix", cam_grad=cam_grad, gradmix_backend="reference", feature_dim=5,
                  temperature=0.2, theta=0.7, lam=1.3, moco_queue=16, moco_momentum=0.9, moco_temperature=0.3,
                  gamma_min=0.25, gamma_max=0.5, seed=3)


def _global_batches():
    """STEPS global batches: view 1, view 2 (WORLD * LOCAL_N, 1, 12, 12), labels (WORLD * LOCAL_N,)."""
    generator = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL_N
    return [(torch.randn(n, 1, 12, 12, generator=generator), torch.randn(n, 1, 12, 12, generator=generator),
             torch.randint(0, 3, (n,), generator=generator)) for _ in range(STEPS)]


SPEC = AugmentSpec(size=12, mean=(0.5,), std=(0.25,))
FEATURE_SETS = (7, 1)  # images: shares of 4 and 3 rows; one image, rank 1 past the end


def _eval_images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    return torch.randint(0, 256, (count, 1, 12, 12), dtype=torch.uint8, generator=generator)  # (count, 1, 12, 12)


def _rank_generator(rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + rank)


def _ddp_worker(rank, result_dir):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from fastgradmix.distributed.launch import wrap_model
    from fastgradmix.training.step import TrainStep

    for name, (method, cam_grad) in CASES.items():
        torch.manual_seed(0)
        model = TinyCamModel()
        ddp = wrap_model(model, torch.device("cpu"))
        reductions = [0]

        def counting_hook(state, bucket, reductions=reductions):
            reductions[0] += 1
            return allreduce_hook(None, bucket)

        ddp.register_comm_hook(None, counting_hook)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        step = TrainStep(ddp, optimizer, _config(method, cam_grad), torch.device("cpu"))
        generator = _rank_generator(rank)
        local = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
        grads, losses = [], []
        for view1, view2, labels in _global_batches():
            terms = step(view1[local], view2[local], labels[local], generator)
            losses.append(terms["loss"])
            grads.append({key: None if p.grad is None else p.grad.clone() for key, p in model.named_parameters()})
        result = {"grads": grads, "losses": torch.stack(losses), "weights": model.state_dict(),
                  "reductions": reductions[0], "is_ddp": ddp is not model}
        if step.moco is not None:
            result["queue"] = step.moco.queue.clone()
        torch.save(result, os.path.join(result_dir, f"{name}-rank{rank}.pt"))
    from fastgradmix.evaluation.features import extract_features_sharded

    torch.manual_seed(0)
    model = TinyCamModel()
    features = {count: extract_features_sharded(model, _eval_images(count), SPEC, 2, torch.device("cpu"),
                                                 progress=False) for count in FEATURE_SETS}
    torch.save(features, os.path.join(result_dir, f"features-rank{rank}.pt"))


def _reference(method: str, cam_grad: str) -> dict:
    """The same STEPS steps in one process on the global batch, from the building blocks."""
    cfg = _config(method, cam_grad)
    torch.manual_seed(0)
    model = TinyCamModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    moco = None
    if method == "moco":
        moco = MoCo(model, cfg.feature_dim, cfg.moco_queue, cfg.moco_momentum, generator=torch.Generator().manual_seed(
            cfg.seed))
    captured = {}

    def keep_first_output(module, inputs, output):  # the clean forward's CAM activations
        captured.setdefault("act", output)

    model.block.register_forward_hook(keep_first_output)
    ops = resolve_ops("reference", torch.device("cpu"))
    generators = [_rank_generator(rank) for rank in range(WORLD)]
    grads, losses = [], []
    for view1, view2, labels in _global_batches():
        optimizer.zero_grad(set_to_none=True)
        captured.clear()
        n = view1.shape[0]
        if moco is not None:
            moco.update_key_encoder(model)
            keys = moco.encode_keys(view2)
            z1 = model(view1)
            clean = moco_objective(z1, keys, moco.queue, lam=cfg.lam, temperature=cfg.moco_temperature)["loss"]
        else:
            features = model(torch.cat([view1, view2]))
            z1, z2 = features[:n], features[n:]
            clean = gradmix_objective(z1, z2, labels, theta=cfg.theta, lam=cfg.lam,
                                      temperature=cfg.temperature)["loss"]
        activation = captured["act"]
        (gradient,) = torch.autograd.grad(clean, [activation], retain_graph=True)
        parts = [gradmix_view(view1[r * LOCAL_N:(r + 1) * LOCAL_N],
                              [activation[r * LOCAL_N:(r + 1) * LOCAL_N].detach()],
                              [gradient[r * LOCAL_N:(r + 1) * LOCAL_N].detach()], "layercam",
                              (cfg.gamma_min, cfg.gamma_max), generators[r], ops) for r in range(WORLD)]
        mixed = torch.cat([part.images for part in parts])
        weights = torch.cat([part.weights for part in parts])
        z_mix = model(mixed)
        if moco is not None:
            per_sample = infonce_per_sample(z_mix, keys, moco.queue, cfg.moco_temperature)
        elif cam_grad == "detached":  # the mix term sees the clean features as constants
            per_sample = mix_loss_per_sample(z_mix, z1.detach(), z2.detach(), cfg.temperature)
        else:
            per_sample = mix_loss_per_sample(z_mix, z1, z2, cfg.temperature)
        total = clean + cfg.lam * (weights * per_sample).mean()
        total.backward()
        optimizer.step()
        if moco is not None:
            moco.enqueue(keys)
        losses.append(total.detach())
        grads.append({key: p.grad.clone() for key, p in model.named_parameters()})
    result = {"grads": grads, "losses": torch.stack(losses), "weights": model.state_dict()}
    if moco is not None:
        result["queue"] = moco.queue.clone()
    return result


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    result_dir = tmp_path_factory.mktemp("ddp_step")
    run_gloo_workers(_ddp_worker, (str(result_dir),), WORLD)
    return {(name, rank): torch.load(result_dir / f"{name}-rank{rank}.pt", weights_only=True)
            for name in [*CASES, "features"] for rank in range(WORLD)}


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_step_equals_the_single_process_step_on_the_global_batch(ddp_results, case):
    expected = _reference(*CASES[case])
    ranks = [ddp_results[(case, rank)] for rank in range(WORLD)]
    assert all(result["is_ddp"] for result in ranks)
    for step in range(STEPS):
        for name, reference_grad in expected["grads"][step].items():
            for rank, result in enumerate(ranks):
                grad = result["grads"][step][name]
                assert grad is not None, f"{name} got no gradient on rank {rank}"
                assert torch.allclose(grad, reference_grad, rtol=1e-4, atol=1e-6), (case, step, name, rank)
    for name, weight in expected["weights"].items():
        for result in ranks:
            assert torch.allclose(result["weights"][name], weight, rtol=1e-4, atol=1e-6), (case, name)
    # each rank's loss is its share: the mean over the ranks is the global batch's loss
    mean_loss = (ranks[0]["losses"] + ranks[1]["losses"]) / WORLD
    assert torch.allclose(mean_loss, expected["losses"], rtol=1e-5, atol=1e-6)
    # one all-reduce per step (the tiny model fits one DDP bucket): the CAM gradient pass reduced nothing
    assert [result["reductions"] for result in ranks] == [STEPS] * WORLD
    if "queue" in expected:  # every rank enqueued the whole global batch's keys, in rank order
        for result in ranks:
            assert torch.allclose(result["queue"], expected["queue"], rtol=1e-5, atol=1e-6)


def test_sharded_evaluation_features_equal_one_process_in_order(ddp_results):
    torch.manual_seed(0)
    model = TinyCamModel()
    for count in FEATURE_SETS:
        expected = extract_features(model, _eval_images(count), SPEC, 2, torch.device("cpu"), progress=False)
        for rank in range(WORLD):
            features = ddp_results[("features", rank)][count]
            assert features.shape == expected.shape
            assert torch.allclose(features, expected, rtol=1e-5, atol=1e-6), (count, rank)

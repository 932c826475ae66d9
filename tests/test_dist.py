"""Distributed losses: two gloo processes on CPU against one process on the concatenated batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from gloo_group import run_gloo_workers
from torch import nn

from fastgradmix.distributed import collectives as dist
from fastgradmix.training.objectives.losses import gradmix_objective

WORLD = 2
LOCAL_N = 5


class TinyEncoder(nn.Module):
    """No batch norm: per-rank batch statistics would differ from the global batch's by design."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


def _global_batch():
    generator = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL_N
    views = [torch.randn(n, 12, generator=generator) for _ in range(3)]  # view 1, view 2, mixed view
    labels = torch.randint(0, 3, (n,), generator=generator)
    weights = torch.rand(n, generator=generator)
    return (*views, labels, weights)


def _objective(model, view1, view2, mixed, labels, weights, negatives_only):
    z1, z2, z_mix = model(view1), model(view2), model(mixed)
    return gradmix_objective(z1, z2, labels, z_mix=z_mix, mix_weights=weights, theta=0.7, lam=1.3,
                             temperature=0.1, negatives_only=negatives_only)


def _worker(rank, result_path, negatives_only):
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(TinyEncoder())
    local = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
    batch = [t[local] for t in _global_batch()]
    terms = _objective(model, *batch, negatives_only)
    terms["loss"].backward()  # DDP averages the gradients over the ranks
    values = torch.stack([terms[k].detach() for k in ("loss", "supcon", "simclr", "mix")])
    torch_dist.all_reduce(values)
    if rank == 0:
        torch.save({"values": values / WORLD, "grads": {name: p.grad for name, p in
                                                         model.module.named_parameters()},
                    "rank_helpers": (dist.rank(), dist.world_size())}, result_path)


@pytest.mark.parametrize("negatives_only", [False, True])
def test_distributed_loss_and_gradients_equal_single_process(tmp_path, negatives_only):
    result_path = tmp_path / "rank0.pt"
    run_gloo_workers(_worker, (str(result_path), negatives_only), WORLD)
    distributed = torch.load(result_path, weights_only=True)
    assert distributed["rank_helpers"] == (0, WORLD)

    torch.manual_seed(0)
    model = TinyEncoder()
    terms = _objective(model, *_global_batch(), negatives_only)
    terms["loss"].backward()
    expected = torch.stack([terms[k].detach() for k in ("loss", "supcon", "simclr", "mix")])
    assert torch.allclose(distributed["values"], expected, atol=1e-5, rtol=1e-5)
    for name, parameter in model.named_parameters():
        assert torch.allclose(distributed["grads"][name], parameter.grad, atol=1e-5, rtol=1e-4), name


def test_helpers_without_a_process_group():
    assert (dist.rank(), dist.world_size(), dist.is_main_process()) == (0, 1, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather_with_grad(x) is x and dist.gather(x) is x
    assert torch.equal(dist.all_reduce_sum(torch.tensor(4)), torch.tensor(4))

"""MoCo v2: queue ring buffer and key-encoder momentum against hand-computed cases, InfoNCE against a
NumPy loop, checkpoint round trip, no host reads, and a 2-process gloo enqueue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from gloo_group import run_gloo_workers
from host_reads import ForbidHostReads
from torch import nn

from fastgradmix.gradmix.capture import CamCapture
from fastgradmix.models import build_model
from fastgradmix.runs.checkpoint import load_checkpoint, save_checkpoint
from fastgradmix.training.objectives.moco import MoCo, infonce_per_sample, moco_objective


class Normalised(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


def _tiny_linear() -> nn.Module:
    """Linear(2 -> 2) + BatchNorm1d with hand-picked values."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -0.5]))
        model[1].weight.copy_(torch.tensor([1.0, 1.0]))
        model[1].bias.copy_(torch.tensor([0.0, 0.0]))
    return model


def test_queue_wraps_around_hand_computed():
    # queue of 6 entries, batches of 4: the second enqueue fills slots 4, 5 and wraps to 0, 1
    moco = MoCo(Normalised(nn.Linear(2, 2)), feature_dim=2, queue_size=6)
    initial = torch.tensor([[1.0, 0.0]] * 6)
    moco.queue.copy_(initial)
    first = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-5.0, 0.0], [6.0, 8.0]])  # unit: (.6,.8) (0,1) (-1,0) (.6,.8)
    second = torch.tensor([[0.0, -1.0], [8.0, -6.0], [-3.0, -4.0], [1.0, 1.0]])
    moco.enqueue(first)
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(moco.queue, expected) and int(moco.queue_ptr) == 4
    moco.enqueue(second)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[-0.6, -0.8], [r, r], [-1.0, 0.0], [0.6, 0.8], [0.0, -1.0], [0.8, -0.6]])
    assert torch.allclose(moco.queue, expected) and int(moco.queue_ptr) == 2


def test_enqueue_rejects_more_keys_than_slots():
    moco = MoCo(Normalised(nn.Linear(2, 2)), feature_dim=2, queue_size=3)
    with pytest.raises(ValueError, match="exceed the queue size"):
        moco.enqueue(torch.randn(4, 2))


@pytest.mark.parametrize("bad", [dict(queue_size=0), dict(momentum=1.5), dict(key_splits=0)])
def test_bad_options_raise(bad):
    with pytest.raises(ValueError):
        MoCo(Normalised(nn.Linear(2, 2)), feature_dim=2, **bad)


def test_key_encoder_momentum_hand_computed():
    query = _tiny_linear()
    moco = MoCo(query, feature_dim=2, queue_size=4, momentum=0.9)
    # the optimizer moved the query to new values; BN saw some batches
    with torch.no_grad():
        query[0].weight.copy_(torch.tensor([[11.0, 12.0], [13.0, 14.0]]))
        query[0].bias.copy_(torch.tensor([10.5, 9.5]))
        query[1].running_mean.copy_(torch.tensor([0.25, -0.75]))
        query[1].num_batches_tracked.fill_(7)
    moco.update_key_encoder(query)
    key = moco.key_encoder
    # 0.9 * old + 0.1 * new, by hand: 0.9 * 1 + 0.1 * 11 = 2, ...
    assert torch.allclose(key[0].weight, torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    assert torch.allclose(key[0].bias, torch.tensor([1.5, 0.5]))
    # buffers are copied, not averaged
    assert torch.equal(key[1].running_mean, torch.tensor([0.25, -0.75]))
    assert int(key[1].num_batches_tracked) == 7
    # a second step from the averaged values: 0.9 * 2 + 0.1 * 11 = 2.9
    moco.update_key_encoder(query)
    assert torch.allclose(key[0].weight, torch.tensor([[2.9, 3.9], [4.9, 5.9]]))
    # the query itself is untouched and the key encoder takes no gradient
    assert torch.equal(query[0].weight, torch.tensor([[11.0, 12.0], [13.0, 14.0]]))
    assert not any(p.requires_grad for p in key.parameters())


def test_default_momentum_is_0999():
    query = _tiny_linear()
    moco = MoCo(query, feature_dim=2)
    with torch.no_grad():
        query[0].weight.add_(10.0)  # 1 -> 11
    moco.update_key_encoder(query)
    assert moco.queue_size == 8196
    # 0.999 * 1 + 0.001 * 11 = 1.01
    assert torch.allclose(moco.key_encoder[0].weight, torch.tensor([[1.01, 2.01], [3.01, 4.01]]), atol=1e-6)


def _numpy_infonce(q, k, queue, temperature):
    q, k, queue = (np.asarray(a, dtype=np.float64) for a in (q, k, queue))
    losses = []
    for i in range(len(q)):
        positive = math.exp(q[i] @ k[i] / temperature)
        negatives = sum(math.exp(q[i] @ queue[j] / temperature) for j in range(len(queue)))
        losses.append(-math.log(positive / (positive + negatives)))
    return np.array(losses)


def _unit(generator, *shape):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("temperature", [0.2, 0.07])
def test_infonce_matches_numpy_loop(temperature):
    generator = torch.Generator().manual_seed(1)
    q, k, queue = _unit(generator, 5, 8), _unit(generator, 5, 8), _unit(generator, 11, 8)
    loss = infonce_per_sample(q, k, queue, temperature)
    np.testing.assert_allclose(loss.numpy(), _numpy_infonce(q, k, queue, temperature), rtol=1e-10)
    # fp32 inputs under autocast still compute in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss32 = infonce_per_sample(q.float(), k.float(), queue.float(), temperature)
    assert loss32.dtype == torch.float32
    np.testing.assert_allclose(loss32.numpy(), _numpy_infonce(q, k, queue, temperature), rtol=1e-5)


def test_objective_with_mixed_queries_matches_numpy_loop():
    generator = torch.Generator().manual_seed(2)
    q, q_mix = _unit(generator, 6, 4), _unit(generator, 6, 4)
    k, queue = _unit(generator, 6, 4), _unit(generator, 9, 4)
    weights = torch.rand(6, generator=generator, dtype=torch.float64)
    terms = moco_objective(q, k, queue, mixed_queries=q_mix, mix_weights=weights, lam=1.3, temperature=0.2)
    moco = _numpy_infonce(q, k, queue, 0.2).mean()
    mix = (weights.numpy() * _numpy_infonce(q_mix, k, queue, 0.2)).mean()  # positive: the clean key
    assert terms["moco"].item() == pytest.approx(moco, rel=1e-10)
    assert terms["mix"].item() == pytest.approx(mix, rel=1e-10)
    assert terms["loss"].item() == pytest.approx(1.3 * (moco + mix), rel=1e-10)
    plain = moco_objective(q, k, queue)
    assert plain["mix"].item() == 0.0 and plain["loss"].item() == pytest.approx(moco, rel=1e-10)


def test_gradient_flows_to_queries_only():
    generator = torch.Generator().manual_seed(3)
    q = _unit(generator, 4, 5).requires_grad_()
    k = _unit(generator, 4, 5).requires_grad_()
    queue = _unit(generator, 7, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda q_: infonce_per_sample(q_, k, queue, 0.5), (q,))
    infonce_per_sample(q, k, queue, 0.5).sum().backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_key_splits_restore_the_input_order():
    # without BatchNorm the chunked, shuffled key forward must equal the plain one row for row
    torch.manual_seed(0)
    query = Normalised(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    plain = MoCo(query, feature_dim=3, queue_size=16)
    split = MoCo(query, feature_dim=3, queue_size=16, key_splits=3)
    images = torch.randn(10, 6)
    keys = split.encode_keys(images, torch.Generator().manual_seed(0))
    assert torch.allclose(keys, plain.encode_keys(images), atol=1e-6)
    assert torch.allclose(keys.norm(dim=1), torch.ones(10))


def test_key_encoder_does_not_fire_cam_hooks():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=4)
    capture = CamCapture(model, ["conv5_2"])
    moco = MoCo(model, feature_dim=128, queue_size=32)
    capture.arm()
    moco.encode_keys(torch.randn(2, 3, 16, 16))
    assert capture.activations == [None]  # only the query model's own forward fills it
    model(torch.randn(2, 3, 16, 16))
    assert capture.activations[0] is not None


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    query = _tiny_linear()
    moco = MoCo(query, feature_dim=2, queue_size=5, momentum=0.5, generator=torch.Generator().manual_seed(0))
    moco.enqueue(torch.randn(3, 2))
    with torch.no_grad():
        query[0].weight.add_(1.0)
    moco.update_key_encoder(query)
    save_checkpoint(tmp_path / "last.pt", {"moco": moco.state_dict()})
    restored = MoCo(_tiny_linear(), feature_dim=2, queue_size=5, momentum=0.5)
    restored.load_state_dict(load_checkpoint(tmp_path / "last.pt")["moco"])
    assert set(moco.state_dict()) >= {"queue", "queue_ptr", "key_encoder.0.weight", "key_encoder.1.running_mean"}
    for name, value in moco.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    keys = torch.randn(3, 2)
    moco.enqueue(keys)
    restored.enqueue(keys)  # continues at the saved pointer: slots 3, 4, 0
    assert torch.equal(restored.queue, moco.queue) and int(restored.queue_ptr) == 1


def test_a_moco_step_reads_nothing_back_to_the_host():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=4, feature_dim=16)
    moco = MoCo(model, feature_dim=16, queue_size=12, key_splits=2)
    view1, view2, mixed = (torch.randn(4, 3, 16, 16) for _ in range(3))
    generator = torch.Generator().manual_seed(0)
    queue_before = moco.queue.clone()
    with ForbidHostReads():
        moco.update_key_encoder(model)
        keys = moco.encode_keys(view2, generator)
        terms = moco_objective(model(view1), keys, moco.queue, mixed_queries=model(mixed),
                               mix_weights=torch.rand(4), lam=1.2)
        terms["loss"].backward()
        moco.enqueue(keys)
    assert torch.isfinite(terms["loss"])
    assert all(p.grad is not None for p in model.parameters())
    assert torch.equal(moco.queue[:4], keys) and torch.equal(moco.queue[4:], queue_before[4:])


WORLD = 2


def _enqueue_worker(rank, result_path, local_keys):
    moco = MoCo(Normalised(nn.Linear(3, 3)), feature_dim=3, queue_size=7,
                generator=torch.Generator().manual_seed(0))
    for step_keys in local_keys[rank]:
        moco.enqueue(step_keys)
    queues = [torch.empty_like(moco.queue) for _ in range(WORLD)]
    torch_dist.all_gather(queues, moco.queue)
    if rank == 0:
        torch.save({"queues": queues, "ptr": moco.queue_ptr}, result_path)


def test_distributed_enqueue_equals_single_process_global_batch(tmp_path):
    generator = torch.Generator().manual_seed(4)
    steps = [F.normalize(torch.randn(WORLD * 2, 3, generator=generator), dim=1) for _ in range(3)]
    local_keys = [[step[rank * 2:(rank + 1) * 2] for step in steps] for rank in range(WORLD)]
    result_path = tmp_path / "rank0.pt"
    # fork, not spawn: the workers only touch tiny tensors, and skipping a fresh torch import per
    # process saves most of the test's time
    run_gloo_workers(_enqueue_worker, (str(result_path), local_keys), WORLD, start_method="fork")
    result = torch.load(result_path, weights_only=True)

    single = MoCo(Normalised(nn.Linear(3, 3)), feature_dim=3, queue_size=7, generator=torch.Generator().manual_seed(0))
    for step in steps:
        single.enqueue(step)
    assert torch.equal(result["queues"][0], result["queues"][1])  # every rank holds the same queue
    assert torch.allclose(result["queues"][0], single.queue)
    assert int(result["ptr"]) == int(single.queue_ptr) == 12 % 7

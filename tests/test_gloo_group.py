"""The gloo test runner itself: a rank that fails before finishing its body fails the test, with its reason."""

import os
import signal

import pytest
import torch
import torch.distributed as torch_dist
from gloo_group import run_gloo_workers


def _sum_ranks(rank, result_path):
    value = torch.tensor([rank + 1.0])
    torch_dist.all_reduce(value)
    if rank == 0:
        torch.save(value, result_path)


def _rank1_raises(rank):
    if rank == 1:
        raise ValueError("rank one's body failed")
    torch_dist.barrier()  # rank 0 would wait here for ever: the runner must stop it


def _rank0_aborts(rank):
    if rank == 0:
        os.kill(os.getpid(), signal.SIGABRT)


def test_finished_bodies_pass_and_their_collectives_ran(tmp_path):
    run_gloo_workers(_sum_ranks, (str(tmp_path / "sum.pt"),), start_method="fork")
    assert torch.load(tmp_path / "sum.pt").item() == 3.0


def test_a_rank_that_raises_fails_with_its_traceback():
    with pytest.raises(AssertionError, match="(?s)rank 1 raised:.*rank one's body failed"):
        run_gloo_workers(_rank1_raises, start_method="fork")


def test_a_rank_killed_before_finishing_fails():
    with pytest.raises(AssertionError, match=f"rank 0 exited with code -{int(signal.SIGABRT)}"):
        run_gloo_workers(_rank0_aborts, start_method="fork")

"""``torchrun --nproc_per_node=2 -m fastgradmix.train`` on CPU (gloo) on the bundled digits protocol.

A run writes one run folder from rank 0 only, resumes with more epochs under torchrun, its checkpoint
resumes in a single process, its evaluation equals one process's evaluation of the checkpoint, and bad
input stops both ranks before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgradmix.train import main

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--threads", "1", "--loader", "device", "--log-every", "5"]
RUN_FILES = {"config.json", "metrics.jsonl", "last.pt", "results.json"}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "fastgradmix.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return result


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _single_process_scores(run: Path) -> dict:
    """The checkpoint evaluated in this (single) process: the reference for the ranks' sharded evaluation."""
    from fastgradmix.data.augment import AugmentSpec
    from fastgradmix.data.protocols import build_protocol
    from fastgradmix.evaluation.scoring import evaluate_open_set
    from fastgradmix.models import build_model

    cfg = json.loads((run / "config.json").read_text())
    data = build_protocol("digits", 0, cfg["image_size"], cfg["data_root"], progress=False)
    spec = AugmentSpec(size=cfg["image_size"], mean=data.mean, std=data.std, flip=data.flip, color=data.color)
    model = build_model(cfg["arch"], data.channels, cfg["stem"], cfg["width"], cfg["feature_dim"])
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    return evaluate_open_set(model, data, spec, cfg["topk"], cfg["eval_batch_size"], torch.device("cpu"),
                             progress=False)


@pytest.mark.slow
def test_two_processes_train_write_from_rank0_and_resume_with_more_epochs(tmp_path):
    run = tmp_path / "run"
    first = _torchrun(*TINY, "--epochs", "1", "--out", str(run), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # rank 0 alone writes (no temporary leftovers, nothing outside the run folder) and prints
    assert set(os.listdir(run)) == RUN_FILES
    assert set(os.listdir(tmp_path)) == {"run"}
    assert first.stdout.count("results: ") == 1 and first.stdout.count("input pipeline:") == 1
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert not any(key.startswith("module.") for key in checkpoint["model"])  # the bare model's state
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 1 and results["n_train"] == 754
    steps_per_epoch = 754 // 64  # the global batch: the same steps as one process
    assert [line["step"] for line in _metrics(run)] == [4, 9, steps_per_epoch - 1]
    # the ranks' sharded evaluation = one process evaluating the checkpoint (AUROC up to score ties)
    reference = _single_process_scores(run)
    assert results["closed_acc"] == pytest.approx(reference["closed_acc"], abs=1e-9)
    assert results["auroc"] == pytest.approx(reference["auroc"], abs=1e-4)

    resumed = _torchrun("--resume", "--epochs", "2", "--out", str(run), "--no-progress", "--threads", "1",
                        cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert set(os.listdir(run)) == RUN_FILES
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    lines = _metrics(run)
    assert [line["epoch"] for line in lines] == [0] * 3 + [1] * 3  # epoch 0 kept, epoch 1 appended
    assert [line["step"] for line in lines] == [4, 9, 10, 15, 20, 21]
    assert all(line["loss"] == line["loss"] for line in lines)  # finite, averaged over the ranks
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_two_process_checkpoint_resumes_exactly_under_torchrun_and_in_one_process(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    started = _torchrun(*TINY, "--epochs", "2", "--stop-after", "1", "--out", str(run), cwd=tmp_path)
    assert started.returncode == 0, started.stderr[-3000:]
    assert set(os.listdir(run)) == RUN_FILES - {"results.json"}
    assert "continue with --resume" in started.stderr and started.stderr.count("stopped after epoch 1") == 1
    single = tmp_path / "single"
    shutil.copytree(run, single)
    before = torch.load(run / "last.pt", weights_only=True)["model"]

    # the same number of processes: the resumed run equals an uninterrupted one
    assert _torchrun(*TINY, "--epochs", "2", "--out", str(straight), cwd=tmp_path).returncode == 0
    resumed = _torchrun("--resume", "--out", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert json.loads((run / "results.json").read_text())["auroc"] == pytest.approx(
        json.loads((straight / "results.json").read_text())["auroc"])

    # one process continues the two processes' checkpoint
    main(["--resume", "--out", str(single), "--no-progress"])
    after = torch.load(single / "last.pt", weights_only=True)
    assert after["epoch"] == 2
    assert any(not torch.equal(before[name], after["model"][name]) for name in before)  # it trained on
    assert [line["epoch"] for line in _metrics(single)] == [0] * 3 + [1] * 3
    assert json.loads((single / "results.json").read_text())["epochs"] == 2


def test_a_global_batch_holds_the_same_images_for_any_number_of_processes():
    """Why a resume under another process count is valid: step s of an epoch trains on the same images."""
    from fastgradmix.data.loaders.sharding import epoch_batches

    one = epoch_batches(754, 64, seed=5, epoch=3)  # (11, 64)
    for world in (2, 4):
        shards = [epoch_batches(754, 64 // world, 5, 3, rank, world) for rank in range(world)]
        for step in range(one.shape[0]):
            assert sorted(np.concatenate([shard[step] for shard in shards]).tolist()) == sorted(one[step].tolist())


def test_bad_input_stops_both_ranks_with_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"an earlier run")
    existing = _torchrun(*TINY, "--epochs", "1", "--out", str(run), cwd=tmp_path)
    assert existing.returncode != 0
    assert existing.stderr.count("already holds a run") == 1, existing.stderr[-3000:]  # rank 0's line only
    # torchrun's agent reports the failed processes with its own traceback; the ranks' code prints none
    assert "fastgradmix/" not in existing.stderr
    assert os.listdir(run) == ["last.pt"] and (run / "last.pt").read_bytes() == b"an earlier run"

    odd = _torchrun(*TINY, "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "odd"), cwd=tmp_path)
    assert odd.returncode != 0
    assert odd.stderr.count("--batch-size 63 must be divisible by the 2 processes") == 1, odd.stderr[-3000:]
    assert not (tmp_path / "odd").exists()


@pytest.mark.parametrize("dying", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_a_killed_rank_is_named_in_one_line_by_the_other(tmp_path, dying):
    """kill -9 of one rank (here: itself, at step 3): the other rank ends with one line naming it, not gloo's
    traceback; the run folder keeps what was written (no checkpoint yet: the first epoch did not end)."""
    run = tmp_path / "run"
    script = Path(__file__).with_name("torchrun_dying_rank.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               *TINY, "--epochs", "1", "--log-every", "1", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FGM_TEST_DYING_RANK": str(dying)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("fastgradmix.train: error: ")]
    assert len(ours) == 1, result.stderr[-3000:]
    survivor = 1 - dying
    assert ours[0].startswith(f"fastgradmix.train: error: rank {survivor} of 2: lost rank {dying} (pid "), ours[0]
    assert ", which ended; this rank stops too" in ours[0]
    # no rank printed a traceback (torchrun's agent still reports the killed process with its own)
    assert "fastgradmix/" not in result.stderr and "pair.cc" not in result.stderr, result.stderr[-3000:]
    assert {"config.json", "metrics.jsonl"} <= set(os.listdir(run)) and not (run / "last.pt").exists()

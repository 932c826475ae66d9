"""The run-folder lock (runs/lock.py): one writer per run folder, the holder named by its process id.

Two trainings started together on one --out: exactly one runs (the existing-folder check had a start-up
race); a training or an evaluation on a folder another process holds stops with one line naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastgradmix.common.errors import UserError
from fastgradmix.runs import lock

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--threads", "1", "--loader", "torch", "--workers", "0"]

_HOLD_IN_CHILD = textwrap.dedent("""
    import sys, time
    from fastgradmix.runs import lock
    held = lock.acquire(sys.argv[1], "the test's holder")
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    held.release()
""")


def _cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_second_process_cannot_take_a_held_lock_and_is_told_the_holders_pid(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_IN_CHILD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"{folder} is in use by process {holder.pid} \(the test's holder\)"):
            lock.acquire(folder, "test")
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert not (folder / lock.LOCK_FILE).exists()  # released: the file is gone, the folder is free again
    lock.acquire(folder, "test").release()


def test_a_lock_file_left_by_a_killed_process_locks_nothing(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_IN_CHILD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL: no release, the lock file stays
    holder.wait(timeout=60)
    assert (folder / lock.LOCK_FILE).exists()
    held = lock.acquire(folder, "after the kill")
    assert (folder / lock.LOCK_FILE).read_text() == f"{os.getpid()} after the kill\n"
    held.release()


def test_folders_the_lock_created_are_removed_when_left_empty(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    lock.acquire(folder, "test").release()
    assert list(tmp_path.iterdir()) == []  # a run that stopped on bad input leaves nothing behind
    held = lock.acquire(folder, "test")
    (folder / "config.json").write_text("{}")
    held.release()
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # a folder that holds something stays


def test_an_existing_folder_is_not_created_or_removed_and_a_missing_one_can_be_refused(tmp_path):
    lock.acquire(tmp_path, "test").release()
    assert tmp_path.is_dir()
    with pytest.raises(UserError, match="no such folder"):
        lock.acquire(tmp_path / "missing", "test", create=False)


def test_a_training_on_a_held_folder_stops_before_writing_and_names_the_holder(tmp_path):
    folder = tmp_path / "run"
    with lock.locked(folder, "the test"):
        result = _cli("fastgradmix.train", *TINY, "--epochs", "1", "--out", str(folder), cwd=tmp_path)
        assert [p.name for p in folder.iterdir()] == [lock.LOCK_FILE]
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fastgradmix.train: error: {folder} is in use by process {os.getpid()} (the test); wait for it to end "
        "or stop it, or choose another folder"]


def test_two_trainings_started_together_on_one_folder_exactly_one_runs(tmp_path):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "fastgradmix.train", *TINY, "--epochs", "2", "--log-every", "1",
               "--out", str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in both]
    codes = sorted(process.returncode for process in both)
    assert codes == [0, 2], [err[-2000:] for _, err in outputs]
    winner, loser = (0, 1) if both[0].returncode == 0 else (1, 0)
    lines = outputs[loser][1].strip().splitlines()
    assert len(lines) == 1, lines
    # normally the loser meets the winner's lock; if the winner had already finished, it meets its run
    assert (f"is in use by process {both[winner].pid} (fastgradmix.train)" in lines[0]
            or "already holds a run" in lines[0]), lines[0]
    # the folder holds one run: its metrics are one run's steps, in order, each once
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(len(steps))) and len(steps) == 2 * (754 // 64)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "last.pt", "metrics.jsonl", "results.json"]


def test_an_evaluation_stops_on_a_run_folder_another_process_holds(tmp_path):
    folder = tmp_path / "run"
    trained = _cli("fastgradmix.train", *TINY, "--epochs", "1", "--out", str(folder), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    before = (folder / "results.json").read_bytes()
    with lock.locked(folder, "a training"):
        result = _cli("fastgradmix.evaluate", "--run", str(folder), "--tasks", "closed", "--no-progress",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fastgradmix.evaluate: error: {folder} is in use by process {os.getpid()} (a training); wait for it to "
        "end or stop it, or choose another folder"]
    assert (folder / "results.json").read_bytes() == before

"""A full disk (or any refused write) while saving: one line naming the file, the temporary file removed, the
previous file intact; the training CLI end to end.

Two disks: a small tmpfs mounted for the test (needs root and mount rights; skipped otherwise) and, always, a
simulated one (the atomic writer's handle refuses bytes past a budget with ENOSPC, as a full disk does).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from fastgradmix.common import files
from fastgradmix.common.errors import UserError
from fastgradmix.runs.checkpoint import save_checkpoint

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--threads", "1", "--loader", "torch", "--workers", "0"]
CHECKPOINT_BYTES = 2_355_207  # last.pt of TINY (measured); the disks below hold one, not two


class _BudgetHandle:
    """A file handle that writes until the shared budget is spent, then fails like a full disk."""

    def __init__(self, handle, budget: list[int]):
        self._handle, self._budget = handle, budget

    def write(self, data) -> int:
        size = len(memoryview(data))
        if size > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture
def simulated_disk(monkeypatch):
    """set_budget(n): the atomic writer may write n more bytes in all, then ENOSPC."""
    budget = [1 << 60]
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _BudgetHandle(real_fdopen(fd, mode), budget))

    def set_budget(n: int) -> None:
        budget[0] = n

    return set_budget


@pytest.fixture
def tmpfs_disk(tmp_path):
    """A tmpfs of 3600 KiB at tmp_path/disk, unmounted afterwards (skipped where mount is not permitted)."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3600k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _save_twice_on_a_disk_for_one(folder: Path) -> None:
    """A first checkpoint fits; the second does not (the first is still there while it is written)."""
    target = folder / "last.pt"
    save_checkpoint(target, {"weights": torch.arange(300_000, dtype=torch.float32)})  # 1.2 MB
    first = target.read_bytes()
    with pytest.raises(UserError) as raised:
        save_checkpoint(target, {"weights": torch.zeros(700_000)})  # 2.8 MB
    assert str(raised.value) == f"cannot write {target} (No space left on device); the previous version is intact"
    assert target.read_bytes() == first
    assert _listing(folder) == ["last.pt"]  # the temporary file is gone


def test_checkpoint_on_a_full_tmpfs(tmpfs_disk):
    _save_twice_on_a_disk_for_one(tmpfs_disk)


def test_checkpoint_on_a_simulated_full_disk(tmp_path, simulated_disk):
    simulated_disk(3_600_000)
    _save_twice_on_a_disk_for_one(tmp_path)


def test_torch_write_failures_without_an_os_error_are_one_line_and_bugs_are_not(tmp_path):
    def torch_like_failure(handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(UserError, match=r"cannot write .*x\.pt \(the write failed \(.*unexpected pos"):
        files.atomic_write(tmp_path / "x.pt", torch_like_failure)

    def bug(handle):
        raise RuntimeError("a bug, not a write failure")

    with pytest.raises(RuntimeError, match="a bug"):
        files.atomic_write(tmp_path / "x.pt", bug)
    assert _listing(tmp_path) == []


def test_json_is_written_standard_or_not_at_all(tmp_path):
    target = tmp_path / "results.json"
    files.write_json(target, {"auroc": 0.5})
    with pytest.raises(UserError, match=r"splits\[1\]\.auroc is not a finite number"):
        files.write_json(target, {"splits": [{"auroc": 0.5}, {"auroc": float("inf")}]})
    assert target.read_text() == '{\n  "auroc": 0.5\n}\n'
    assert _listing(tmp_path) == ["results.json"]


def test_a_refused_log_line_leaves_the_earlier_lines_whole(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    files.append_line(log, '{"step": 0}')
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))  # a partial line reaches the file before the disk fills
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(UserError, match="No space left on device"):
        files.append_line(log, '{"step": 1}')
    assert log.read_text() == '{"step": 0}\n'


def _train(out: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgradmix.train", *TINY, "--epochs", "3", "--out", str(out)],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _check_stopped_run(out: Path, message: str) -> None:
    expected = (f"cannot write {out / 'last.pt'} (No space left on device); the previous version is intact; once "
                f"it can be written, continue with --resume --out {out}")
    assert message == expected
    assert _listing(out) == ["config.json", "last.pt", "metrics.jsonl"]  # no temporary file, no lock
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1  # the first epoch's checkpoint


def test_training_on_a_full_tmpfs_stops_with_one_line_and_keeps_the_last_checkpoint(tmpfs_disk):
    out = tmpfs_disk / "run"
    result = _train(out, tmpfs_disk)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    _check_stopped_run(out, lines[0].removeprefix("fastgradmix.train: error: "))


def test_training_on_a_simulated_full_disk_stops_with_one_line(tmp_path, simulated_disk, capsys):
    from fastgradmix.train import main

    out = tmp_path / "run"
    simulated_disk(int(1.5 * CHECKPOINT_BYTES))  # config.json and one checkpoint
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--epochs", "3", "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    _check_stopped_run(out, lines[0].removeprefix("fastgradmix.train: error: "))

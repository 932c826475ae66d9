"""The training run's folder: deciding where it lives, and its files as an epoch ends or a run resumes.

last.pt holds everything an exact resume needs (model, the step's optimizer/scaler/objective state, epoch,
training time, config); epoch_XXX.pt (--save-every) the model only. metrics.jsonl gets one line per
logged window; on resume the lines of the interrupted epoch are dropped, since it is replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from fastgradmix import __version__
from fastgradmix.common.errors import UserError
from fastgradmix.common.files import write_text
from fastgradmix.common.schema import Field, check, parse_json_text
from fastgradmix.distributed.collectives import is_main_process
from fastgradmix.distributed.launch import agreed
from fastgradmix.runs import lock
from fastgradmix.runs.checkpoint import load_checkpoint, save_checkpoint
from fastgradmix.runs.config import Config
from fastgradmix.runs.folder import CHECKPOINT_FILE


@contextmanager
def locked_folder(folder: Path, owner: str) -> Iterator[None]:
    """The run folder's lock (runs/lock.py) for the block, taken before anything in it is read or written.
    Under torchrun only rank 0 writes, so only rank 0 locks; the ranks agree on the outcome, so a folder in
    use stops every rank with rank 0's one line."""
    held = agreed(lambda: lock.acquire(folder, owner) if is_main_process() else None)
    try:
        yield
    finally:
        if held is not None:
            held.release()


def prepare_run_dir(cfg: Config) -> tuple[Path, dict | None]:
    """Decides where the run lives and loads its checkpoint when resuming; writes nothing."""
    run_dir = Path(cfg.run_dir_name())
    checkpoint = None
    if cfg.resume:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    elif (run_dir / CHECKPOINT_FILE).exists() or (run_dir / "results.json").exists():
        if not cfg.overwrite:
            raise UserError(f"{run_dir} already holds a run: pass --resume to continue it, --overwrite to "
                            "replace it, or --out to choose another folder")
    return run_dir, checkpoint


def restore(checkpoint: dict, model: nn.Module, step_fn, run_dir: Path) -> tuple[int, float]:
    """Loads the model and the step's state from last.pt; returns (epochs done, training seconds so far)."""
    try:
        model.load_state_dict(checkpoint["model"])
        step_fn.load_state_dict(checkpoint)
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {run_dir / CHECKPOINT_FILE} does not fit this configuration "
                        f"({str(err).splitlines()[0]})") from None
    return checkpoint["epoch"], checkpoint["train_wall_s"]


def save(run_dir: Path, cfg: Config, model: nn.Module, step_fn, epochs_done: int, train_wall_s: float) -> None:
    """last.pt after an epoch (the mirror of ``restore``), and epoch_XXX.pt every --save-every epochs."""
    state = {"model": model.state_dict(), **step_fn.state_dict(), "epoch": epochs_done,
             "train_wall_s": train_wall_s, "config": cfg.to_dict(), "version": __version__}
    try:
        save_checkpoint(run_dir / CHECKPOINT_FILE, state)
        if cfg.save_every and epochs_done % cfg.save_every == 0:  # the model only: for evaluations over epochs
            save_checkpoint(run_dir / f"epoch_{epochs_done:03d}.pt", {
                "model": state["model"], "epoch": epochs_done, "config": state["config"], "version": __version__})
    except UserError as err:  # a full disk, say: the atomic writer kept the previous checkpoint
        raise UserError(f"{err}; once it can be written, continue with --resume --out {run_dir}") from None


_METRICS_LINE = {"step": Field("int", low=0)}  # all a resume reads back from metrics.jsonl


def truncate_metrics(path: Path, keep_below_step: int) -> None:
    """On resume, drop log lines of the epoch that was interrupted; it is replayed from its start."""
    if not path.exists():
        return
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror})") from None
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = check(parse_json_text(line, where), _METRICS_LINE, where)
        except UserError as err:
            raise UserError(f"{err}; fix or delete that line, then resume again") from None
        if record["step"] < keep_below_step:
            kept.append(line.decode() + "\n")
    write_text(path, "".join(kept))


def remove_later_snapshots(run_dir: Path, start_epoch: int) -> None:
    """epoch_XXX.pt files past the starting epoch belong to a run that --overwrite replaces (or to the part of
    an interrupted one that is replayed): keeping them would mix two runs in the curves over epochs."""
    for path in run_dir.glob("epoch_*.pt"):
        number = path.stem[len("epoch_"):]
        if number.isdigit() and int(number) > start_epoch:
            path.unlink()

"""Reading a run folder back: its config.json and last.pt, as evaluate, export and --resume need them.

A run folder (written by ``fastgradmix.train``) holds config.json (every option, resolved), last.pt
(model, optimizer and step state after the last finished epoch), metrics.jsonl, results.json and, with
--save-every, epoch_XXX.pt snapshots. A ``--split all`` folder holds one run folder per split, split<k>/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import read_json_file
from fastgradmix.runs.checkpoint import load_checkpoint
from fastgradmix.runs.config import Config, merge, validate
from fastgradmix.runs.config_schema import check_config

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "last.pt"
_SPLIT_FOLDER = re.compile(r"split\d+")


@dataclass
class Run:
    """A finished run: where it is, its configuration and its last checkpoint."""

    path: Path
    cfg: Config
    checkpoint: dict
    label: str = ""  # "" for a single run, "split<k>" inside a sweep folder


def read_saved_config(path: Path) -> dict:
    """The config.json of a run folder, strictly parsed and checked against the option table (for --resume,
    which merges it with the explicit options); a damaged file is one UserError line naming it and the key."""
    config_path = path / CONFIG_FILE
    return check_config(read_json_file(config_path), str(config_path))


def load_run(path: Path, label: str = "") -> Run:
    """A finished run folder's config and checkpoint, or one UserError line."""
    if not path.is_dir():
        raise UserError(f"run folder {path} does not exist; train one with python -m fastgradmix.train")
    config_path, checkpoint_path = path / CONFIG_FILE, path / CHECKPOINT_FILE
    if not config_path.is_file() or not checkpoint_path.is_file():
        raise UserError(f"{path} is not a finished run folder (config.json and last.pt are needed); "
                        "train one with python -m fastgradmix.train")
    cfg = merge({}, read_saved_config(path))
    try:
        validate(cfg)  # the rules that tie options together (each key alone was checked on reading)
    except UserError as err:
        raise UserError(f"{config_path}: {err}") from None
    checkpoint = load_checkpoint(checkpoint_path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{checkpoint_path} holds no model weights; is this a fastgradmix checkpoint?")
    return Run(path, cfg, checkpoint, label)


def locate_runs(path: Path) -> list[Path]:
    """The run folder itself, or the split<k>/ runs of a sweep folder, in split order."""
    if not path.is_dir():
        raise UserError(f"--run {path}: no such folder")
    if (path / CONFIG_FILE).exists() or (path / CHECKPOINT_FILE).exists():
        return [path]
    splits = sorted((p for p in path.iterdir() if p.is_dir() and _SPLIT_FOLDER.fullmatch(p.name)),
                    key=lambda p: int(p.name[len("split"):]))
    if not splits:
        raise UserError(f"--run {path}: holds no run (config.json + last.pt) and no split<k>/ runs of a sweep")
    return splits

"""python -m fastgradmix.train: train a GradMix open-set recognizer on a protocol, then evaluate it.

The options are the fields of ``runs.config.Config`` (``--help`` lists them); the run itself is
``training.loop.train``; ``--split all`` runs every class split in turn (``training.sweep``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastgradmix.common.cli import run_cli
from fastgradmix.common.errors import UserError
from fastgradmix.common.tensorboard import require_tensorboard
from fastgradmix.distributed import collectives
from fastgradmix.distributed.launch import AgreedError, agreed, process_group
from fastgradmix.runs.config import Config, merge, parse_args, validate
from fastgradmix.runs.folder import read_saved_config
from fastgradmix.training.loop import PROG, train, training_device
from fastgradmix.training.sweep import run_all_splits


def load_config(argv: list[str] | None) -> tuple[Config, dict]:
    """The run's configuration and the options given explicitly; --resume starts from the saved config.json."""
    cfg, explicit = parse_args(argv, PROG)
    if cfg.resume and cfg.split != "all":  # a sweep resumes each of its splits itself
        run_dir = Path(cfg.run_dir_name())
        if not (run_dir / "config.json").is_file():
            raise UserError(f"--resume: {run_dir / 'config.json'} not found; start a new run without --resume")
        cfg = merge(explicit, read_saved_config(run_dir))
        cfg.resume = True
    validate(cfg)
    if cfg.tensorboard:  # before anything is written: the package is an optional extra
        require_tensorboard()
    return cfg, explicit


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        cfg, explicit = load_config(argv)
        with process_group(training_device(cfg.device)):  # torch.distributed when launched by torchrun
            try:
                agreed(lambda: validate(cfg))  # again, now that the number of processes is known
                if cfg.split == "all":  # every split in turn, then the mean +- std table
                    run_all_splits(cfg, explicit, train)
                else:
                    train(cfg)
            except AgreedError:
                if not collectives.is_main_process():  # rank 0 prints the one line; the others end quietly
                    sys.exit(AgreedError.exit_code)
                raise

    run_cli(run, PROG)


if __name__ == "__main__":
    main()

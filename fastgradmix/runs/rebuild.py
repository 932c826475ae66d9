"""Rebuilding what a run trained on from its config: its data (protocol, split, classes, training subset)
and its model (with the checkpoint's weights). Training, evaluation and export all go through here, so
the bank an exported model scores against is exactly the one training evaluated with."""

from __future__ import annotations

from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.protocols import build_protocol
from fastgradmix.data.published import published_normalisation, published_test_subset
from fastgradmix.models import ClassifierModel, ContrastiveModel, build_model
from fastgradmix.runs.config import Config


def load_run_data(cfg: Config, data_root: str = "", progress: bool = True, download: bool = False) -> OpenSetData:
    """The run's data as training built it; ``data_root`` overrides the run's (a moved dataset folder)."""
    try:
        split = int(cfg.split)
    except (TypeError, ValueError):
        raise UserError(f"the run's split is {cfg.split!r}; use the run folder of one split (split<k>/)") from None
    data = build_protocol(cfg.protocol, split, cfg.image_size, data_root or cfg.data_root, download=download,
                          skip_bad_images=cfg.skip_bad_images, known_classes=cfg.known_classes or None,
                          unknown_classes=cfg.unknown_classes or None, progress=progress)
    if cfg.normalisation == "published":  # the published code's constants (data/published.py)
        data = published_normalisation(data)
    return data.subset_train(cfg.train_subset, cfg.seed)  # --train-subset N: the same images (0 = all)


def evaluation_subset(data: OpenSetData, test_subsample: str) -> OpenSetData:
    """The bank and test images an evaluation scores: all (``none``), or the published code's first N per
    class (``published``, data/published.py)."""
    if test_subsample == "published":
        return published_test_subset(data)
    if test_subsample != "none":
        raise UserError(f"unknown test subsample {test_subsample!r}: choose none or published")
    return data


def build_run_model(cfg: Config, channels: int, checkpoint: dict | None = None, where: Path | None = None,
                    channels_last: bool | None = None, num_classes: int = 0) -> ContrastiveModel | ClassifierModel:
    """The run's model, with ``checkpoint["model"]``'s weights when given (``where`` names that file in the
    error). ``channels_last`` defaults to the run's memory format; an exported program wants NCHW.
    ``num_classes``: the known classes, which sizes the classifier of ``--method ce`` (required there)."""
    memory_last = cfg.channels_last if channels_last is None else channels_last
    if cfg.method == "ce" and num_classes < 2:
        raise ValueError(f"--method ce needs the number of known classes (>= 2) to build its classifier, got "
                         f"{num_classes}")
    try:
        model = build_model(cfg.arch, channels, cfg.stem, cfg.width, cfg.feature_dim, memory_last,
                            num_classes=num_classes if cfg.method == "ce" else 0)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError, ValueError) as err:
        if checkpoint is None:  # a bad architecture option
            raise UserError(str(err)) from None
        raise UserError(f"the weights in {where} do not fit the model its config.json describes "
                        f"({str(err).strip().splitlines()[0]})") from None
    return model

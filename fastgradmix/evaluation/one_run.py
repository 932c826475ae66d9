"""Evaluating one run: its data and model rebuilt from the run folder, its bank embedded once, then each
planned task in turn (osr, closed, ood, corruption, linear, diversity), always in that order so the
random draws and the results do not depend on how the tasks were asked for.

Nothing is written here: ``evaluate_run`` returns the results per task, the notes of the tasks skipped and
the arrays the figures draw.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
from torch import nn

from fastgradmix import __version__
from fastgradmix.common.errors import UserError
from fastgradmix.common.precision import Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.openset import OpenSetData
from fastgradmix.evaluation.bank_scorer import BankScorer, Scored
from fastgradmix.evaluation.corruption_task import corruption_task, released_corruption_task
from fastgradmix.evaluation.corruptions import table_for_side
from fastgradmix.evaluation.corruptions.weather import frost_source
from fastgradmix.evaluation.diversity_task import cam_map_sizes, diversity_task, grid_rows, score_cam_maps
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.linear_task import checkpoints_over_epochs, linear_task, snapshot_loader
from fastgradmix.evaluation.options import EvalConfig
from fastgradmix.evaluation.osr_tasks import cap_rows, closed_task, ood_task, osr_task
from fastgradmix.evaluation.out_sets import load_out_sets
from fastgradmix.evaluation.plan import Plan, plan
from fastgradmix.evaluation.scoring import Scorer, build_scorer
from fastgradmix.runs.config import resolved_score
from fastgradmix.runs.folder import Run
from fastgradmix.runs.precision import run_precision
from fastgradmix.runs.rebuild import build_run_model, evaluation_subset, load_run_data


@dataclass(frozen=True)
class RunEvaluation:
    """What evaluating one run gives: nothing of it is written yet."""

    results: dict  # per task, as under results.json's "evaluation"
    skipped: dict[str, str]  # task (or "ood NAME") -> why it was not evaluated
    series: dict  # per task, what its figures draw


@dataclass(frozen=True)
class RunSetup:
    """What the tasks of one run share."""

    run: Run
    options: EvalConfig
    device: torch.device
    data: OpenSetData  # its bank capped to --max-bank
    known_images: torch.Tensor  # (N, C, H, W) uint8: the known test images, capped to --max-images
    known_labels: torch.Tensor  # (N,)
    model: nn.Module
    precision: Precision  # the model's: the run's, or --precision
    spec: AugmentSpec
    scorer: Scorer  # the run's --score: Algorithm 1 (BankScorer) or a classifier's MSP / MLS (LogitScorer)
    settings: dict  # the "settings" of every task's results

    @property
    def batch_size(self) -> int:
        return self.options.batch_size or self.run.cfg.eval_batch_size


def load_model(run: Run, data: OpenSetData, device: torch.device, precision: Precision,
               checkpoint: dict | None = None, name: str = "last.pt") -> nn.Module:
    """The run's model from its last.pt, or from another ``checkpoint`` of the run (file ``name``), in the
    memory layout of ``precision``."""
    state = run.checkpoint if checkpoint is None else checkpoint
    return build_run_model(run.cfg, data.channels, state, run.path / name,
                           channels_last=precision.channels_last, num_classes=data.num_known).to(device).eval()


def evaluate_run(run: Run, options: EvalConfig, device: torch.device) -> RunEvaluation:
    """Every task of ``options`` that applies to ``run`` (see plan.py)."""
    data, todo, known_images, known_labels, out_sets = _prepare(run, options)
    setup = _set_up(run, options, device, data, known_images, known_labels)
    results: dict = {}
    series: dict = {}
    known_scored = setup.scorer.score(known_images, desc="known test features")
    if "osr" in todo.tasks:
        results["osr"], series["osr"] = _osr(setup, known_scored)
    closed = {**closed_task(known_scored, known_labels), "settings": setup.settings}
    if "closed" in todo.tasks:
        results["closed"] = closed
    if "ood" in todo.tasks:
        results["ood"], series["ood"] = _ood(setup, known_scored, out_sets)
    if "corruption" in todo.tasks:
        results["corruption"] = _corruption(setup, closed["closed_acc"])
    if "linear" in todo.tasks:
        results["linear"] = {**_linear(setup), "settings": setup.settings}
        series["linear"] = results["linear"]["curve"]
    if "diversity" in todo.tasks:
        diversity, series["diversity"] = _diversity(setup)
        results["diversity"] = {**diversity, "settings": setup.settings}
    return RunEvaluation(results, todo.skipped, series)


def _prepare(run: Run, options: EvalConfig) -> tuple[OpenSetData, Plan, torch.Tensor, torch.Tensor, dict]:
    """The run's data (bank capped), its plan, its known test images (capped) and its out-sets, all read
    before the long part starts so that missing data fails early."""
    cfg = run.cfg
    data = load_run_data(cfg, options.data_root, options.progress)
    data = evaluation_subset(data, options.test_subsample or cfg.test_subsample)  # published: first N per class
    todo = plan(cfg, data, options)
    if options.max_bank:
        data = data.subset_train(options.max_bank, options.seed)
    is_known = data.test_labels >= 0
    known_images, known_labels = cap_rows(data.test_images[is_known], data.test_labels[is_known],
                                          options.max_images, options.seed)
    # a default pairing whose data is absent is a note; an out-set asked for explicitly, an error
    optional = options.from_all and not options.ood_out
    out_sets, notes = load_out_sets(todo.out_sets, cfg, data, known_images.shape[0], options.max_images,
                                    options.seed, options.data_root, options.progress, optional)
    todo = todo.with_out_sets(out_sets, notes)
    if "corruption" in todo.tasks and options.corruption_data and data.test_images.shape[1:] != (3, 32, 32):
        raise UserError("--corruption-data: released CIFAR-10-C images are 3x32x32, the run's are "
                        f"{'x'.join(map(str, data.test_images.shape[1:]))}")
    return data, todo, known_images, known_labels, out_sets


def _set_up(run: Run, options: EvalConfig, device: torch.device, data: OpenSetData, known_images: torch.Tensor,
            known_labels: torch.Tensor) -> RunSetup:
    """The model from last.pt and the scorer (embedding the bank) at the run's settings."""
    cfg = run.cfg
    topk = cfg.topk if options.topk is None else options.topk
    precision = run_precision(cfg, device, options.precision)
    model = load_model(run, data, device, precision)
    spec = AugmentSpec(size=cfg.image_size, mean=data.mean, std=data.std, flip=data.flip, color=data.color)
    score = resolved_score(cfg.method, cfg.score if options.score == "auto" else options.score)
    scorer = build_scorer(model, data, spec, topk, options.batch_size or cfg.eval_batch_size, device,
                          precision, options.progress, score)
    settings = {"topk": topk, "score": score, "test_subsample": options.test_subsample or cfg.test_subsample,
                "max_images": options.max_images,
                "max_bank": options.max_bank, "seed": options.seed, "checkpoint_epoch": run.checkpoint.get("epoch"),
                "evaluated_at": datetime.datetime.now().isoformat(timespec="seconds"), "fastgradmix": __version__,
                "torch": torch.__version__, "precision": precision.name, "channels_last": precision.channels_last}
    return RunSetup(run, options, device, data, known_images, known_labels, model, precision, spec, scorer,
                    settings)


def _osr(setup: RunSetup, known_scored: Scored) -> tuple[dict, tuple]:
    """Known vs unknown test classes, the unknown test images capped to --max-images too."""
    data, options = setup.data, setup.options
    unknown_images, unknown_labels = cap_rows(data.test_images[data.test_labels < 0],
                                              data.test_labels[data.test_labels < 0], options.max_images, options.seed)
    unknown_scored = setup.scorer.score(unknown_images, desc="unknown test features")
    scored = Scored(torch.cat([known_scored.predictions, unknown_scored.predictions]),
                    torch.cat([known_scored.open_scores, unknown_scored.open_scores]))
    result = {**osr_task(scored, torch.cat([setup.known_labels, unknown_labels]), data), "settings": setup.settings}
    return result, (known_scored.open_scores.numpy(), unknown_scored.open_scores.numpy())


def _ood(setup: RunSetup, known_scored: Scored, out_sets: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """The known test images against each out-set."""
    results, series = {}, {}
    for name, images in out_sets.items():
        out_scores = setup.scorer.score(images, desc=f"{name} features").open_scores
        results[name] = {**ood_task(known_scored.open_scores, out_scores), "settings": setup.settings}
        series[name] = (known_scored.open_scores.numpy(), out_scores.numpy())
    return results, series


def _corruption(setup: RunSetup, clean_acc: float) -> dict:
    """The accuracy drop under the generated corruptions, or on the released CIFAR-10-C arrays."""
    options, scorer = setup.options, setup.scorer
    names, severities = list(options.corruptions), list(options.severities)
    if options.corruption_data:
        result = released_corruption_task(scorer, options.corruption_data, setup.data.known_classes, clean_acc,
                                          names, severities, options.max_images, options.seed, options.progress)
        return {**result, "source": f"released CIFAR-10-C ({options.corruption_data})", "table": "cifar10-c",
                "settings": setup.settings}
    table = None if options.corruption_table == "auto" else options.corruption_table
    images, labels = setup.known_images, setup.known_labels
    result = corruption_task(scorer, images, labels, clean_acc, names, severities, options.seed, table,
                             options.progress, options.glass_swap)
    table = table or table_for_side(max(images.shape[-2:]))
    return {**result, "source": f"generated (seed {options.seed})", "table": table, "glass_swap": options.glass_swap,
            "frost": frost_source(), "settings": setup.settings}


def _linear(setup: RunSetup) -> dict:
    """The linear probe at last.pt and at each epoch_XXX.pt before it (features cached beside each file)."""
    run, options, cfg = setup.run, setup.options, setup.run.cfg
    checkpoints = []
    for epoch, path in checkpoints_over_epochs(run.path, run.checkpoint.get("epoch", 0)):
        if path.name == "last.pt":
            checkpoints.append((epoch, path, lambda: setup.model))
        else:
            checkpoints.append((epoch, path, snapshot_loader(path, lambda state, name=path.name: load_model(
                run, setup.data, setup.device, setup.precision, state, name))))
    # everything else the cached features depend on (the checkpoint file itself is part of the key)
    extra = {"protocol": cfg.protocol, "split": cfg.split, "image_size": cfg.image_size,
             "max_images": options.max_images, "max_bank": options.max_bank, "seed": options.seed,
             "data_root": str(options.data_root or cfg.data_root), "precision": setup.precision.name}
    data = setup.data
    return linear_task(checkpoints, data.train_images, data.train_labels, setup.known_images, setup.known_labels,
                       data.num_known, setup.spec, options.linear_features, setup.batch_size, setup.device,
                       setup.precision, options.progress, extra)


def _topk_scorer(setup: RunSetup) -> BankScorer:
    """The run's scorer when it is Algorithm 1's; under --score msp / mls a bank of the classifier's
    normalised pooled features (the diversity task's CAM is that of the top-k score, whatever --score)."""
    if isinstance(setup.scorer, BankScorer):
        return setup.scorer
    return BankScorer(setup.model.embedder(), setup.data, setup.spec, setup.settings["topk"], setup.batch_size,
                      setup.device, setup.precision, setup.options.progress)


def _diversity(setup: RunSetup) -> tuple[dict, dict]:
    """TwoNN of the known test features (or per class of the training features), S_M(tau) of the known test
    images' LayerCAM maps (raw or normalised), and the (normalised) maps of the grid's images."""
    cfg, data, options, progress = setup.run.cfg, setup.data, setup.options, setup.options.progress
    layers = cfg.cam_layer_list()
    scorer = _topk_scorer(setup)
    per_class = options.id_features == "train-per-class"
    id_images = data.train_images if per_class else setup.known_images  # the bank's images (--max-bank)
    encoder = extract_features(setup.model.encoder, id_images, setup.spec, setup.batch_size, setup.device,
                               setup.precision, desc="encoder features", progress=progress)
    head = scorer.bank if per_class else scorer.features(setup.known_images, "head features")

    def cam(images: torch.Tensor, desc: str, kind: str) -> torch.Tensor:
        return score_cam_maps(scorer.model, images, setup.spec, layers, scorer.bank, scorer.bank_labels,
                              data.num_known, scorer.topk, setup.batch_size, setup.device, setup.precision,
                              progress, desc, kind)

    if options.area_maps == "raw":
        map_size = cam_map_sizes(scorer.model, layers, data.channels, cfg.image_size, setup.device)
    else:
        map_size = f"{cfg.image_size}x{cfg.image_size} (upsampled)"
    result = diversity_task(encoder, head, cam(setup.known_images, "CAM maps", options.area_maps), layers,
                            options.area_thresholds, options.area_maps,
                            id_labels=data.train_labels if per_class else None, class_names=data.known_classes,
                            map_size=map_size)
    rows = grid_rows(data.test_labels, options.cam_grid)
    labels = data.test_labels[rows].tolist()
    grid = {"images": data.test_images[rows], "maps": cam(data.test_images[rows], "CAM grid", "normalized"),
            "captions": [data.known_classes[label] if label >= 0 else "unknown" for label in labels]}
    return result, {"thresholds": result["thresholds"], "area": result["activated_area"], "grid": grid}

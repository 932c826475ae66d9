"""The training run: config -> data -> model -> epochs of steps -> checkpoint -> open-set evaluation.

Read top to bottom, ``train`` is the whole run. Outputs go to the run folder: config.json, metrics.jsonl,
last.pt (written atomically after every epoch; --resume continues from it exactly), results.json.

Under ``torchrun --nproc_per_node=K -m fastgradmix.train`` (distributed/launch.py) --batch-size stays the
global batch: each of the K ranks trains on batch_size / K images of it with DDP, the losses gather the
global batch, logged losses are averaged over the ranks, and rank 0 alone prints and writes the run folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from fastgradmix.common.device import resolve_device
from fastgradmix.common.errors import UserError
from fastgradmix.common.files import append_line, json_text, write_json
from fastgradmix.common.precision import fast_bf16_here
from fastgradmix.data.augment import AugmentSpec, view_spec
from fastgradmix.data.loaders.pipeline import InputPipeline, build_input_pipeline
from fastgradmix.data.loaders.sharding import GRADMIX_STREAM, seeded_generator
from fastgradmix.data.openset import OpenSetData
from fastgradmix.distributed import collectives
from fastgradmix.distributed.launch import AgreedError, agreed, main_print, rank_device, rank_zero_first, wrap_model
from fastgradmix.evaluation.scoring import evaluate_open_set
from fastgradmix.runs.config import Config, resolved_score
from fastgradmix.runs.precision import resolve_run_config, run_precision
from fastgradmix.runs.rebuild import build_run_model, evaluation_subset, load_run_data
from fastgradmix.training import run_files
from fastgradmix.training.compile import compile_regions
from fastgradmix.training.eta import RunEta, run_eta
from fastgradmix.training.results import print_table, results_record
from fastgradmix.training.schedule import learning_rate
from fastgradmix.training.step import TrainStep, build_optimizer
from fastgradmix.training.step_log import non_finite_message, out_of_memory_message, read_losses
from fastgradmix.training.tensorboard_log import TrainingTensorBoard

PROG = "fastgradmix.train"


def training_device(name: str) -> torch.device:
    """--device resolved; under torchrun each rank takes cuda:LOCAL_RANK."""
    return rank_device(resolve_device(name))


@dataclass
class Session:
    """Everything a run trains with, built and validated (on every rank) before anything is written."""

    cfg: Config
    device: torch.device
    run_dir: Path
    checkpoint: dict | None
    data: OpenSetData
    spec: AugmentSpec
    inputs: InputPipeline
    model: torch.nn.Module  # the bare model: checkpoints, evaluation
    step_fn: TrainStep  # runs the model itself, or its DistributedDataParallel wrapper under torchrun
    show_progress: bool
    tensorboard: TrainingTensorBoard | None = None  # --tensorboard, rank 0 only


def train(cfg: Config) -> dict:
    # the run folder is locked for the run's life, before its "already holds a run?" check (runs/lock.py)
    with run_files.locked_folder(Path(cfg.run_dir_name()), PROG):
        return _train_locked(cfg)


def _train_locked(cfg: Config) -> dict:
    session = _set_up(cfg)
    # a global batch has the same size whatever the world size, so steps per epoch (and the step numbers of
    # metrics.jsonl) are too: a run resumes with any number of processes that divides the batch
    start_epoch, train_wall_s = 0, 0.0
    if session.checkpoint is not None:  # every rank loads the same file into the bare model: no ``module.``
        start_epoch, train_wall_s = agreed(lambda: run_files.restore(session.checkpoint, session.model,
                                                                     session.step_fn, session.run_dir))
    _prepare_folder(session, start_epoch)
    end_epoch = cfg.epochs if cfg.stop_after == 0 else min(cfg.epochs, start_epoch + cfg.stop_after)
    train_wall_s = _train_epochs(session, start_epoch, end_epoch, train_wall_s)
    if end_epoch < cfg.epochs:
        main_print(f"{PROG}: stopped after epoch {end_epoch} of {cfg.epochs}; continue with "
                   f"--resume --out {session.run_dir}", file=sys.stderr)
        return {}
    return _evaluate(session, train_wall_s)


def _set_up(cfg: Config) -> Session:
    device = training_device(cfg.device)
    # --precision auto (or the --amp alias) becomes what this device runs: fp32, bf16 or fp16 and the layout
    cfg = agreed(lambda: resolve_run_config(cfg, device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes are fixed: pick the fastest conv algorithms once
    # under torchrun: this process's rank, and its part of the global batch (validate: divisible)
    rank, world = collectives.rank(), collectives.world_size()
    show_progress = cfg.progress and collectives.is_main_process()
    # every failure of the setup below is agreed between the ranks (distributed/launch.agreed): all stop
    # together with one message before rank 0 writes anything; in a single process these calls just run
    run_dir, checkpoint = agreed(lambda: run_files.prepare_run_dir(cfg))

    # data: the protocol's images as uint8 tensors; the input pipeline (--loader: DALI, torchvision
    # DataLoader workers, or the dataset kept on the device) makes two augmented views of each image.
    # Rank 0 reads first: a download or the decoded-image cache is written once.
    data = rank_zero_first(lambda: _load_data(cfg, show_progress))
    main_print(data.describe())  # classes, openness, image counts
    spec = view_spec(cfg.views, cfg.image_size, data.mean, data.std, data.flip, data.color, cfg.rotate_degrees)
    inputs = agreed(lambda: build_input_pipeline(
        cfg.loader, data, spec, cfg.batch_size // world, cfg.seed, device, workers=cfg.workers, rank=rank,
        world_size=world,
        amp_dtype=(torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16) if cfg.amp else None,
        channels_last=cfg.channels_last))
    main_print(inputs.describe())

    model = agreed(lambda: _build_model(cfg, data.channels, data.num_known, device))
    train_model = wrap_model(model, device)  # DDP: rank 0's initial weights are broadcast to every rank
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)  # fused: one kernel, no host reads
    step_fn = agreed(lambda: TrainStep(train_model, optimizer, cfg, device, num_images=data.train_images.shape[0]))
    if cfg.compile:  # in regions split at the CAM layers, so the CAM hooks still see real tensors
        compile_regions(model, step_fn.cam_modules)
        for module in step_fn.uncaptured_modules():  # e.g. MoCo's key encoder: no CAM hooks, one region
            compile_regions(module, [])
    main_print(f"precision: {run_precision(cfg, device).describe()}")
    if cfg.amp and device.type == "cpu" and not fast_bf16_here(device):
        main_print(f"{PROG}: note: this CPU has no native bf16 (avx512_bf16, amx_bf16): bf16 autocast is likely "
                   "slower than --precision fp32 here", file=sys.stderr)
    return Session(cfg, device, run_dir, checkpoint, data, spec, inputs, model, step_fn, show_progress)


def _load_data(cfg: Config, progress: bool) -> OpenSetData:
    data = load_run_data(cfg, progress=progress, download=cfg.download)
    n_train = data.train_images.shape[0]
    if n_train < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training images of "
                        f"{cfg.protocol}; choose a smaller batch")
    return data


def _build_model(cfg: Config, channels: int, num_classes: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_run_model(cfg, channels, num_classes=num_classes).to(device)  # num_classes: --method ce
    try:
        for name in cfg.cam_layer_list():
            model.cam_module(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return model


def _prepare_folder(session: Session, start_epoch: int) -> None:
    """The run folder is written only now that everything has been validated, by rank 0 only."""
    if collectives.is_main_process():
        run_dir = session.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", session.cfg.to_dict())
        run_files.truncate_metrics(run_dir / "metrics.jsonl", start_epoch * session.inputs.train.steps_per_epoch)
        run_files.remove_later_snapshots(run_dir, start_epoch)
        if session.cfg.tensorboard:
            session.tensorboard = TrainingTensorBoard(run_dir, session.spec.mean, session.spec.std)
    collectives.barrier()  # no rank starts training in a run folder rank 0 has not prepared


def _train_epochs(session: Session, start_epoch: int, end_epoch: int, train_wall_s: float) -> float:
    cfg, loader = session.cfg, session.inputs.train
    steps_per_epoch = loader.steps_per_epoch
    progress = tqdm(total=steps_per_epoch * cfg.epochs, initial=start_epoch * steps_per_epoch, desc="train",
                    unit="step", disable=not session.show_progress, dynamic_ncols=True)
    session.model.train()
    eta = run_eta(cfg, session.data, session.spec, session.model, session.device, steps_per_epoch, end_epoch)
    for epoch in range(start_epoch, end_epoch):
        epoch_start = time.perf_counter()
        _train_epoch(session, epoch, progress, eta)
        train_wall_s += time.perf_counter() - epoch_start
        if collectives.is_main_process():  # rank 0's weights, optimizer state and BatchNorm statistics
            run_files.save(session.run_dir, cfg, session.model, session.step_fn, epoch + 1, train_wall_s)
            if session.tensorboard is not None:
                session.tensorboard.log_views(session.step_fn.last_mixed_view, (epoch + 1) * steps_per_epoch - 1)
        collectives.barrier()  # an epoch ends on every rank once its checkpoint is on disk
    progress.close()
    return train_wall_s


def _train_epoch(session: Session, epoch: int, progress: tqdm, eta: RunEta) -> None:
    cfg, loader, step_fn = session.cfg, session.inputs.train, session.step_fn
    steps_per_epoch = loader.steps_per_epoch
    optimizer = step_fn.optimizer
    # GradMix's draws (partners, boxes), a stream per rank like the augmentations
    mix_generator = seeded_generator(cfg.seed, epoch, GRADMIX_STREAM, session.device, collectives.rank())
    pending, window_start, window_images = [], time.perf_counter(), 0
    step_fn.begin_epoch(epoch)
    for index, (view1, view2, labels, rows) in enumerate(loader.epoch(epoch)):
        step = epoch * steps_per_epoch + index
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg.lr_schedule, cfg.lr, step, steps_per_epoch, cfg.epochs)
        try:
            losses = step_fn(view1, view2, labels, mix_generator, rows)  # rows: the batch's dataset indices
        except torch.cuda.OutOfMemoryError:
            raise UserError(out_of_memory_message(cfg, step)) from None
        pending.append(losses)
        window_images += cfg.batch_size  # the global batch: images/s of all ranks together
        progress.update(1)
        if len(pending) == cfg.log_every or index == steps_per_epoch - 1:
            record = _log_window(session, pending, epoch, step, window_images / (time.perf_counter() - window_start))
            progress.set_postfix(epoch=epoch, loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")
            if collectives.is_main_process():
                line = eta.after_window(step + 1, len(pending), time.perf_counter() - window_start)
                if line:
                    progress.write(line)
            pending, window_start, window_images = [], time.perf_counter(), 0
    step_fn.end_epoch()  # --cam-schedule epoch: the ranks merge the boxes they found (before the checkpoint)


def _log_window(session: Session, pending: list[dict[str, torch.Tensor]], epoch: int, step: int,
                images_per_s: float) -> dict:
    """The only read-backs of the loop: the losses of the last log_every steps (averaged over the ranks: the
    global batch's losses) and the step timing (rank 0's); one metrics.jsonl line."""
    means, bad_offset, bad_terms = read_losses(pending)
    if bad_offset is not None:  # the same averaged values on every rank: all stop together
        raise AgreedError(non_finite_message(session.cfg, step - len(pending) + 1 + bad_offset, epoch,
                                             session.run_dir, bad_terms))
    record = {"epoch": epoch, "step": step, **means, "lr": session.step_fn.optimizer.param_groups[0]["lr"],
              "images_per_s": images_per_s, **session.step_fn.read_log_fields()}
    if collectives.is_main_process():
        metrics = session.run_dir / "metrics.jsonl"
        append_line(metrics, json_text(record, metrics, indent=None))
        if session.tensorboard is not None:
            session.tensorboard.log_window(record, list(means))
    return record


def _evaluate(session: Session, train_wall_s: float) -> dict:
    """Every rank evaluates rank 0's model (the checkpoint's), each embedding a share of the images."""
    cfg = session.cfg
    collectives.broadcast_buffers(session.model)
    open_scores = {}  # known/unknown open-set scores, for --tensorboard's ROC curve
    data = evaluation_subset(session.data, cfg.test_subsample)  # --test-subsample published: first N per class
    scores = evaluate_open_set(session.model, data, session.spec, cfg.topk, cfg.eval_batch_size, session.device,
                               run_precision(cfg, session.device), session.show_progress,
                               score=resolved_score(cfg.method, cfg.score), views=session.inputs.eval,
                               keep_scores=open_scores)
    images_seen = session.inputs.train.steps_per_epoch * cfg.epochs * cfg.batch_size
    results = results_record(cfg, session.data, scores, train_wall_s, images_seen, session.device)
    results.update(n_known_test=data.n_known_test, n_unknown_test=data.n_unknown_test)  # the images scored
    if collectives.is_main_process():
        write_json(session.run_dir / "results.json", results)
        print_table(results, session.run_dir)
        if session.tensorboard is not None:
            session.tensorboard.log_final(results, open_scores["known"].numpy(), open_scores["unknown"].numpy(),
                                          session.inputs.train.steps_per_epoch * cfg.epochs)
            session.tensorboard.close()
    collectives.barrier()  # train() returns on every rank once results.json exists
    return results

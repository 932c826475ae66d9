"""python -m fastgradmix.train: config -> data -> model -> training loop -> open-set evaluation.

Read top to bottom, this is the whole run. Outputs go to the run folder: config.json, metrics.jsonl,
last.pt (written atomically after every epoch; --resume continues from it exactly), results.json.

Under ``torchrun --nproc_per_node=K -m fastgradmix.train`` (distributed_run.py) --batch-size stays the global
batch: each of the K ranks trains on batch_size / K images of it with DDP, the losses gather the global
batch, logged losses are averaged over the ranks, and rank 0 alone prints and writes the run folder.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fastgradmix import __version__
from fastgradmix.common.errors import UserError, run_cli
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import GRADMIX_STREAM, build_input_pipeline, seeded_generator
from fastgradmix.data.protocols import build_protocol
from fastgradmix.distributed import collectives as dist
from fastgradmix.distributed.launch import (
    AgreedError,
    agreed,
    barrier,
    broadcast_buffers,
    main_print,
    mean_over_ranks,
    process_group,
    rank_device,
    rank_zero_first,
    wrap_model,
)
from fastgradmix.evaluation.tasks import evaluate_open_set
from fastgradmix.models import build_model
from fastgradmix.runs.checkpoint import load_checkpoint, save_checkpoint, write_json
from fastgradmix.runs.config import Config, merge, parse_args, validate
from fastgradmix.training.compile import compile_regions
from fastgradmix.training.step import TrainStep, build_optimizer
from fastgradmix.training.sweep import run_all_splits

PROG = "fastgradmix.train"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu (or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return rank_device(torch.device(name))  # under torchrun: cuda:LOCAL_RANK


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over the whole run, evaluated per step."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def prepare_run_dir(cfg: Config) -> tuple[Path, dict | None]:
    """Decides where the run lives and loads its checkpoint when resuming; writes nothing."""
    run_dir = Path(cfg.run_dir_name())
    checkpoint = None
    if cfg.resume:
        checkpoint = load_checkpoint(run_dir / "last.pt")
    elif (run_dir / "last.pt").exists() or (run_dir / "results.json").exists():
        if not cfg.overwrite:
            raise UserError(f"{run_dir} already holds a run: pass --resume to continue it, --overwrite to "
                            "replace it, or --out to choose another folder")
    return run_dir, checkpoint


def load_config(argv: list[str] | None) -> tuple[Config, dict]:
    cfg, explicit = parse_args(argv, PROG)
    if cfg.resume and cfg.split != "all":  # a sweep resumes each of its splits itself
        saved_path = Path(cfg.run_dir_name()) / "config.json"
        if not saved_path.is_file():
            raise UserError(f"--resume: {saved_path} not found; start a new run without --resume")
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"--resume: cannot read {saved_path} ({err})") from None
        cfg = merge(explicit, saved)
        cfg.resume = True
    validate(cfg)
    return cfg, explicit


def train(cfg: Config) -> dict:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes are fixed: pick the fastest conv algorithms once
    # under torchrun: this process's rank, and its part of the global batch (validate: divisible)
    rank, world, is_main = dist.rank(), dist.world_size(), dist.is_main_process()
    rank_batch = cfg.batch_size // world
    show_progress = cfg.progress and is_main
    # every failure of the setup below is agreed between the ranks (distributed_run.agreed): all stop together
    # with one message before rank 0 writes anything; in a single process these calls just run the step
    run_dir, checkpoint = agreed(lambda: prepare_run_dir(cfg))

    # data: the protocol's images as uint8 tensors; the input pipeline (--loader: DALI, torchvision
    # DataLoader workers, or the dataset kept on the device) makes two augmented views of each image.
    # Rank 0 reads first: a download or the decoded-image cache is written once.
    data = rank_zero_first(lambda: _load_data(cfg, show_progress))
    main_print(data.describe())  # classes, openness, image counts
    n_train = data.train_images.shape[0]
    spec = AugmentSpec(size=cfg.image_size, mean=data.mean, std=data.std,
                       flip=data.flip, color=data.color)
    inputs = agreed(lambda: build_input_pipeline(
        cfg.loader, data, spec, rank_batch, cfg.seed, device, workers=cfg.workers, rank=rank, world_size=world,
        amp_dtype=(torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16) if cfg.amp else None,
        channels_last=cfg.channels_last))
    loader = inputs.train  # evaluation below takes its un-augmented views from the same pipeline
    main_print(inputs.describe())

    # model and optimiser; ``model`` is the bare model (checkpoints, evaluation), ``train_model`` what the step
    # runs: the model itself, or its DistributedDataParallel wrapper under torchrun
    model = agreed(lambda: _build_model(cfg, data.channels, device))
    train_model = wrap_model(model, device)  # DDP: rank 0's initial weights are broadcast to every rank
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)  # fused: one kernel, no host reads
    step_fn = agreed(lambda: TrainStep(train_model, optimizer, cfg, device))
    if cfg.compile:  # in regions split at the CAM layers, so the CAM hooks still see real tensors
        compile_regions(model, step_fn.cam_modules)
        if step_fn.moco is not None:  # MoCo's key encoder: no CAM hooks, one region
            compile_regions(step_fn.moco.key_encoder, [])
    if cfg.amp and device.type == "cpu":
        main_print(f"{PROG}: note: --amp on CPU runs bf16 autocast; it is only faster on CPUs with bf16 support",
                   file=sys.stderr)

    # a global batch has the same size whatever the world size, so steps per epoch (and the step numbers of
    # metrics.jsonl) are too: a run resumes with any number of processes that divides the batch
    steps_per_epoch = loader.steps_per_epoch
    total_steps = steps_per_epoch * cfg.epochs
    start_epoch, train_wall_s = 0, 0.0
    if checkpoint is not None:  # every rank loads the same file into the bare model: no ``module.`` prefix
        agreed(lambda: _restore(checkpoint, model, optimizer, step_fn, run_dir))
        start_epoch, train_wall_s = checkpoint["epoch"], checkpoint["train_wall_s"]

    # the run folder is written only now that everything has been validated, by rank 0 only
    metrics_path = run_dir / "metrics.jsonl"
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
        _truncate_metrics(metrics_path, start_epoch * steps_per_epoch)
        _remove_later_snapshots(run_dir, start_epoch)
    barrier()  # no rank starts training in a run folder rank 0 has not prepared

    end_epoch = cfg.epochs if cfg.stop_after == 0 else min(cfg.epochs, start_epoch + cfg.stop_after)
    progress = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc="train", unit="step",
                    disable=not show_progress, dynamic_ncols=True)
    model.train()
    for epoch in range(start_epoch, end_epoch):
        epoch_start = time.perf_counter()
        # GradMix's draws (partners, boxes), a stream per rank like the augmentations
        mix_generator = seeded_generator(cfg.seed, epoch, GRADMIX_STREAM, device, rank)
        pending, window_start, window_images = [], time.perf_counter(), 0
        for index, (view1, view2, labels) in enumerate(loader.epoch(epoch)):
            step = epoch * steps_per_epoch + index
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(cfg.lr, step, total_steps)
            try:
                losses = step_fn(view1, view2, labels, mix_generator)
            except torch.cuda.OutOfMemoryError:
                raise UserError(_out_of_memory_message(cfg, step)) from None
            pending.append(losses)
            window_images += cfg.batch_size  # the global batch: images/s of all ranks together
            progress.update(1)
            if len(pending) == cfg.log_every or index == steps_per_epoch - 1:
                # the only read-backs of the loop: the losses of the last log_every steps (averaged over the
                # ranks: the global batch's losses), the step timing (rank 0's)
                means, bad_offset = _read_losses(pending)
                if bad_offset is not None:  # the same averaged values on every rank: all stop together
                    raise AgreedError(_non_finite_message(cfg, step - len(pending) + 1 + bad_offset, epoch, run_dir))
                elapsed = time.perf_counter() - window_start
                record = {"epoch": epoch, "step": step, **means, "lr": optimizer.param_groups[0]["lr"],
                          "images_per_s": window_images / elapsed, **step_fn.read_log_fields()}
                if is_main:
                    with metrics_path.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                progress.set_postfix(epoch=epoch, loss=f"{means['loss']:.3f}",
                                     img_s=f"{record['images_per_s']:.0f}")
                pending, window_start, window_images = [], time.perf_counter(), 0
        train_wall_s += time.perf_counter() - epoch_start
        if is_main:  # rank 0's weights, optimizer state and BatchNorm statistics are the run's
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": step_fn.scaler.state_dict(), "epoch": epoch + 1, "train_wall_s": train_wall_s,
                "config": cfg.to_dict(), "version": __version__,
            }
            if step_fn.moco is not None:
                state["moco"] = step_fn.moco.state_dict()
            save_checkpoint(run_dir / "last.pt", state)
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0:  # the model only: for evaluations over epochs
                save_checkpoint(run_dir / f"epoch_{epoch + 1:03d}.pt", {
                    "model": state["model"], "epoch": epoch + 1, "config": state["config"], "version": __version__})
        barrier()  # an epoch ends on every rank once its checkpoint is on disk
    progress.close()
    if end_epoch < cfg.epochs:
        main_print(f"{PROG}: stopped after epoch {end_epoch} of {cfg.epochs}; continue with "
                   f"--resume --out {run_dir}", file=sys.stderr)
        return {}

    # every rank evaluates rank 0's model (the checkpoint's), each embedding a share of the images
    broadcast_buffers(model)
    scores = evaluate_open_set(model, data, spec, cfg.topk, cfg.eval_batch_size, device, cfg.channels_last,
                               show_progress, views=inputs.eval)
    images_seen = total_steps * cfg.batch_size
    results = {
        "protocol": cfg.protocol, "split": cfg.split, "method": cfg.method, "aug": cfg.aug,
        "epochs": cfg.epochs, "seed": cfg.seed, **scores,
        "n_train": n_train, "n_known_test": data.n_known_test, "n_unknown_test": data.n_unknown_test,
        "known_classes": data.known_classes, "unknown_classes": data.unknown_classes,
        "train_wall_s": train_wall_s, "images_per_s": images_seen / max(train_wall_s, 1e-9),
        "device": _device_name(device), "torch": torch.__version__, "fastgradmix": __version__,
        "python": platform.python_version(),
    }
    if is_main:
        write_json(run_dir / "results.json", results)
        _print_table(results, run_dir)
    barrier()  # train() returns on every rank once results.json exists
    return results


def _load_data(cfg: Config, progress: bool):
    data = build_protocol(cfg.protocol, cfg.split, cfg.image_size, cfg.data_root, download=cfg.download,
                          skip_bad_images=cfg.skip_bad_images, known_classes=cfg.known_classes or None,
                          unknown_classes=cfg.unknown_classes or None, progress=progress)
    data = data.subset_train(cfg.train_subset, cfg.seed)  # --train-subset N for quick runs (0 = all)
    n_train = data.train_images.shape[0]
    if n_train < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training images of "
                        f"{cfg.protocol}; choose a smaller batch")
    return data


def _build_model(cfg: Config, channels: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(cfg.arch, channels, cfg.stem, cfg.width, cfg.feature_dim, cfg.channels_last).to(device)
        for name in cfg.cam_layer_list():
            model.cam_module(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return model


def _restore(checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step_fn: TrainStep,
             run_dir: Path) -> None:
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step_fn.scaler.load_state_dict(checkpoint["scaler"])
        if step_fn.moco is not None:  # key encoder, queue and its pointer: the exact MoCo state
            step_fn.moco.load_state_dict(checkpoint["moco"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {run_dir / 'last.pt'} does not fit this configuration "
                        f"({str(err).splitlines()[0]})") from None


def _read_losses(pending: list[dict[str, torch.Tensor]]) -> tuple[dict[str, float], int | None]:
    """Each loss term averaged over the pending steps, and the offset of the first pending step whose
    loss is not finite (None if all are), with a single device-to-host copy."""
    names = list(pending[0])
    per_step = torch.stack([torch.stack([losses[name] for name in names]) for losses in pending])  # (S, T)
    per_step = mean_over_ranks(per_step)  # losses.py scales each rank's value so their mean is the global batch's
    finite = torch.isfinite(per_step[:, names.index("loss")]).to(per_step.dtype)  # (S,) 1 = finite
    values = torch.cat([per_step.mean(dim=0), finite]).tolist()
    flags = values[len(names):]
    bad_offset = flags.index(0.0) if 0.0 in flags else None
    return dict(zip(names, values[:len(names)], strict=True)), bad_offset


def _non_finite_message(cfg: Config, step: int, epoch: int, run_dir: Path) -> str:
    if cfg.amp and cfg.amp_dtype == "fp16":
        cause = "fp16 overflowed in the forward pass (try --amp-dtype bf16) or the learning rate "
    else:
        cause = "the learning rate "
    kept = (f"{run_dir / 'last.pt'} still holds the last good state (after epoch {epoch})" if epoch > 0
            else "no checkpoint was written (the first epoch did not finish)")
    return (f"the loss became non-finite (NaN or inf) at step {step} (epoch {epoch}); likely cause: {cause}"
            f"(--lr {cfg.lr}) is too high, lower it; {kept}")


def _out_of_memory_message(cfg: Config, step: int) -> str:
    advice = "a smaller --batch-size" + ("" if cfg.amp else " or --amp (bf16 activations take half the memory)")
    return (f"CUDA ran out of memory at step {step} with --batch-size {cfg.batch_size}: try {advice}; "
            "checkpoints already written are intact")


def _truncate_metrics(path: Path, keep_below_step: int) -> None:
    """On resume, drop log lines of the epoch that was interrupted; it is replayed from its start."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line)["step"] < keep_below_step]
    path.write_text("".join(line + "\n" for line in kept))


def _remove_later_snapshots(run_dir: Path, start_epoch: int) -> None:
    """epoch_XXX.pt files past the starting epoch belong to a run that --overwrite replaces (or to the part of
    an interrupted one that is replayed): keeping them would mix two runs in the curves over epochs."""
    for path in run_dir.glob("epoch_*.pt"):
        number = path.stem[len("epoch_"):]
        if number.isdigit() and int(number) > start_epoch:
            path.unlink()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _print_table(results: dict, run_dir: Path) -> None:
    rows = [
        ("protocol / split", f"{results['protocol']} / {results['split']}"),
        ("AUROC (known vs unknown)", "n/a (closed set: no unknown test images)" if results["auroc"] is None
         else f"{results['auroc']:.4f}"),
        ("closed-set accuracy", f"{results['closed_acc']:.4f}"),
        ("openness", f"{results['openness']:.4f}"),
        ("train / known test / unknown test", f"{results['n_train']} / {results['n_known_test']} / "
                                              f"{results['n_unknown_test']}"),
        ("training time", f"{results['train_wall_s']:.1f} s ({results['images_per_s']:.0f} images/s)"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"results: {run_dir / 'results.json'}")


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        cfg, explicit = load_config(argv)
        with process_group(resolve_device(cfg.device)):  # torch.distributed when launched by torchrun
            try:
                agreed(lambda: validate(cfg))  # again, now that the number of processes is known
                if cfg.split == "all":  # every split in turn, then the mean +- std table
                    run_all_splits(cfg, explicit, train)
                else:
                    train(cfg)
            except AgreedError:
                if not dist.is_main_process():  # rank 0 prints the one line; the others end quietly
                    sys.exit(AgreedError.exit_code)
                raise

    run_cli(run, PROG)


if __name__ == "__main__":
    main()

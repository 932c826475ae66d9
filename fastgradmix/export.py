"""python -m fastgradmix.export --run runs/NAME --out model_dir/: a trained run -> a deployable model folder.

The folder (format: docs/model_format.md, code: model_format.py) holds the encoder + head compiled
ahead of time with torch.export + AOTInductor (a .pt2 package per device), the class feature bank
(L2-normalised features of every known training image, their labels, the class names), the
preprocessing, and the open-set threshold calibrated by leave-one-out on the training images
(calibration.py). `fastgradmix.predict` and the native `fgm-predict` read it.

Exporting needs torch >= 2.6 (torch._inductor.aoti_compile_and_package); on CPU AOTInductor compiles
C++ with the system compiler, about a minute for a small ResNet.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastgradmix import __version__
from fastgradmix.common.errors import UserError, run_cli
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.protocols import build_protocol
from fastgradmix.deploy.aoti import aoti_api
from fastgradmix.deploy.calibration import accepted_fraction, leave_one_out_scores, threshold_for_tpr
from fastgradmix.deploy.model_folder import BANK_FILE, FORMAT_NAME, FORMAT_VERSION, META_FILE, PROGRAM_FILES, write_bank
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.scoring import class_topk_scores, osr_predict
from fastgradmix.models import ContrastiveModel, build_model
from fastgradmix.runs.checkpoint import load_checkpoint, write_json
from fastgradmix.runs.config import Config, _OneLineParser, merge

PROG = "fastgradmix.export"
# the compiled program must reproduce the eager features this closely (fp32, L2-normalised outputs); on
# CUDA both may run convolutions in TF32 (cuDNN's default), through different kernels
PROGRAM_TOLERANCE = {"cpu": 1e-4, "cuda": 1e-2}


def load_run(run_dir: Path) -> tuple[Config, dict]:
    """A run folder's config and model weights, or one UserError line."""
    config_path, checkpoint_path = run_dir / "config.json", run_dir / "last.pt"
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; train one with python -m fastgradmix.train")
    if not config_path.is_file() or not checkpoint_path.is_file():
        raise UserError(f"{run_dir} is not a finished run folder (config.json and last.pt are needed); "
                        "train one with python -m fastgradmix.train")
    try:
        saved = json.loads(config_path.read_text())
        cfg = merge({}, saved)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"cannot read {config_path} ({err}); is this a fastgradmix run folder?") from None
    checkpoint = load_checkpoint(checkpoint_path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{checkpoint_path} holds no model weights; is this a fastgradmix checkpoint?")
    return cfg, checkpoint


def build_run_data(cfg: Config, data_root: str, progress: bool) -> OpenSetData:
    """The run's data as training built it: its protocol, split, classes and training subset."""
    try:
        split = int(cfg.split)
    except (TypeError, ValueError):
        raise UserError(f"the run's split is {cfg.split!r}; export the run folder of one split") from None
    # the file-backed protocols' options, passed only when the run set them (or, for progress, when
    # this build_protocol takes it)
    extra = {name: getattr(cfg, name) for name in ("skip_bad_images", "known_classes", "unknown_classes")
             if getattr(cfg, name, None)}
    if "progress" in inspect.signature(build_protocol).parameters:
        extra["progress"] = progress
    data = build_protocol(cfg.protocol, split, cfg.image_size, data_root, **extra)
    subset = getattr(cfg, "train_subset", 0)
    if subset:
        data = data.subset_train(subset, cfg.seed)
    return data


def build_trained_model(cfg: Config, checkpoint: dict, channels: int, run_dir: Path) -> ContrastiveModel:
    try:
        model = build_model(cfg.arch, channels, cfg.stem, cfg.width, cfg.feature_dim)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"the weights in {run_dir / 'last.pt'} do not fit the model its config.json describes "
                        f"({str(err).splitlines()[0]})") from None
    return model.eval()


def compile_program(model: ContrastiveModel, channels: int, image_size: int, device: torch.device,
                    package_path: Path) -> float:
    """torch.export with a dynamic batch, then AOTInductor into ``package_path``; returns the max error
    of the compiled program against the eager model on a random batch (a self-check of the export)."""
    compile_fn, load_fn = aoti_api()
    model = model.to(device).eval()
    # an example batch of 2: a batch of 1 would let export specialise the batch dimension to 1
    example = torch.randn(2, channels, image_size, image_size, device=device)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        compile_fn(program, package_path=str(package_path))
        compiled = load_fn(str(package_path))
        check = torch.randn(3, channels, image_size, image_size, device=device)
        error = (compiled(check) - model(check)).abs().max().item()
    return error


def _known_test_report(model: ContrastiveModel, data: OpenSetData, spec: AugmentSpec, bank: torch.Tensor,
                       topk: int, threshold: float, batch_size: int, device: torch.device, progress: bool) -> dict:
    """Acceptance of the known test images and rejection of the unknown ones at the threshold."""
    if data.test_images.shape[0] == 0:
        return {}
    test = extract_features(model, data.test_images, spec, batch_size, device, desc="test features",
                            progress=progress)  # (N_test, D)
    scores = class_topk_scores(test, bank, data.train_labels.to(device), data.num_known, k=topk)  # (N_test, K)
    _, open_score = osr_predict(scores)
    is_known = data.test_labels.to(device) >= 0
    report = {"known_test_images": int(is_known.sum()),
              "known_test_accepted": accepted_fraction(open_score[is_known], threshold)}
    if (~is_known).any():
        report["unknown_test_images"] = int((~is_known).sum())
        report["unknown_test_rejected"] = 1.0 - accepted_fraction(open_score[~is_known], threshold)
    return report


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace it or choose another folder")


def _readable_by_all(folder: Path) -> None:
    """mkdtemp and the atomic writers create private (0700/0600) entries; a model folder is for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _publish(staging: Path, out: Path) -> None:
    """Moves the finished staging folder to ``out``; an existing ``out`` is replaced only at the end."""
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out)


def export(run_dir: Path, out: Path, tpr: float = 0.95, devices: tuple[str, ...] = ("cpu",),
           device: str = "auto", batch_size: int = 0, data_root: str | None = None, overwrite: bool = False,
           progress: bool = True) -> dict:
    """Writes the model folder ``out`` from the run ``run_dir``; returns its model.json content."""
    if not 0 < tpr <= 1:
        raise UserError(f"--tpr must lie in (0, 1] (got {tpr})")
    unknown_devices = sorted(set(devices) - set(PROGRAM_FILES))
    if unknown_devices or not devices:
        raise UserError(f"--devices takes a comma-separated list of {', '.join(PROGRAM_FILES)} "
                        f"(got {','.join(devices) or 'none'})")
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--devices cuda: no CUDA device is visible; export the CUDA program on a GPU machine")
    aoti_api()
    _check_out_dir(out, overwrite)
    work_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                               ("cpu" if device == "auto" else device))
    if work_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")

    cfg, checkpoint = load_run(run_dir)
    data = build_run_data(cfg, data_root or cfg.data_root, progress)
    model = build_trained_model(cfg, checkpoint, data.channels, run_dir).to(work_device)
    spec = AugmentSpec(size=cfg.image_size, mean=data.mean, std=data.std, flip=False, color=False)
    batch_size = batch_size or cfg.eval_batch_size

    # the bank: every known training image, as the evaluation builds it
    bank = extract_features(model, data.train_images, spec, batch_size, work_device, desc="bank features",
                            progress=progress)  # (N_train, D)
    labels = data.train_labels.to(work_device)  # (N_train,)
    held_out = leave_one_out_scores(bank, labels, data.num_known, cfg.topk)  # (N_train,)
    try:
        threshold = threshold_for_tpr(held_out, tpr)
    except ValueError as err:
        raise UserError(f"cannot calibrate the threshold: {err}") from None
    calibration = {"method": "leave-one-out over the training images", "held_out_images": int(held_out.numel()),
                   "held_out_accepted": accepted_fraction(held_out, threshold)}
    calibration.update(_known_test_report(model, data, spec, bank, cfg.topk, threshold, batch_size, work_device,
                                          progress))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))
    try:
        programs, compile_report = {}, {}
        for device_type in devices:
            print(f"{PROG}: compiling the {device_type} program with AOTInductor (about a minute on CPU)...",
                  file=sys.stderr)
            start = time.perf_counter()
            error = compile_program(model, data.channels, cfg.image_size, torch.device(device_type),
                                    staging / PROGRAM_FILES[device_type])
            if not error <= PROGRAM_TOLERANCE[device_type]:
                raise UserError(f"the compiled {device_type} program differs from the eager model by {error:.2e} "
                                f"(> {PROGRAM_TOLERANCE[device_type]}); this torch's AOTInductor miscompiled it")
            programs[device_type] = PROGRAM_FILES[device_type]
            compile_report[device_type] = {"seconds": round(time.perf_counter() - start, 1),
                                           "max_error_vs_eager": error}
        write_bank(staging / BANK_FILE, bank, data.train_labels, data.num_known)
        meta = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "class_names": list(data.known_classes),
            "preprocessing": {"image_size": cfg.image_size, "channels": data.channels,
                              "mean": list(data.mean), "std": list(data.std),
                              "resize": "bilinear, antialiased, align_corners=False (only when the size differs)",
                              "grayscale": "(19595 R + 38470 G + 7471 B + 32768) >> 16 on 8-bit RGB"},
            "scoring": {"topk": cfg.topk, "threshold": threshold, "tpr": tpr,
                        "rule": "known when the top-k class similarity score >= threshold"},
            "bank": {"file": BANK_FILE, "size": int(bank.shape[0]), "feature_dim": int(bank.shape[1])},
            "programs": programs,
            "calibration": calibration,
            "compile": compile_report,
            "source": {"run": str(run_dir), "protocol": cfg.protocol, "split": cfg.split, "arch": cfg.arch,
                       "width": cfg.width, "epochs": cfg.epochs, "unknown_classes": list(data.unknown_classes)},
            "torch": torch.__version__, "fastgradmix": __version__,
        }
        write_json(staging / META_FILE, meta)
        _readable_by_all(staging)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _print_summary(meta, out)
    return meta


def _print_summary(meta: dict, out: Path) -> None:
    cal, scoring = meta["calibration"], meta["scoring"]
    rows = [
        ("classes", " ".join(meta["class_names"])),
        ("bank", f"{meta['bank']['size']} images x {meta['bank']['feature_dim']} features"),
        ("threshold", f"{scoring['threshold']:.6f} (top-{scoring['topk']} score; accepts "
                      f"{cal['held_out_accepted']:.1%} of {cal['held_out_images']} held-out knowns, tpr "
                      f"{scoring['tpr']})"),
    ]
    if "known_test_accepted" in cal:
        rows.append(("known test", f"{cal['known_test_accepted']:.1%} of {cal['known_test_images']} accepted"))
    if "unknown_test_rejected" in cal:
        rows.append(("unknown test", f"{cal['unknown_test_rejected']:.1%} of {cal['unknown_test_images']} "
                                     "rejected"))
    for device_type, report in meta["compile"].items():
        rows.append((f"{device_type} program", f"{meta['programs'][device_type]} (compiled in {report['seconds']} s, "
                                               f"max error vs eager {report['max_error_vs_eager']:.1e})"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"model folder: {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description="Export a trained run as a deployable open-set "
                                     "classifier folder (AOTInductor program + class bank + threshold).")
    parser.add_argument("--run", required=True, help="trained run folder (config.json + last.pt)")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="fraction of held-out known images the threshold accepts (default 0.95)")
    parser.add_argument("--devices", default="cpu",
                        help="comma-separated programs to compile: cpu, cuda (default cpu)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where the bank features are computed (default auto: cuda if present)")
    parser.add_argument("--batch-size", type=int, default=0, help="images per feature batch (default: the run's)")
    parser.add_argument("--data-root", default=None, help="dataset folder, when it moved since training")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return parser


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        args = build_parser().parse_args(argv)
        if args.batch_size < 0:
            raise UserError(f"--batch-size must be >= 0 (got {args.batch_size})")
        devices = tuple(name.strip() for name in args.devices.split(",") if name.strip())
        export(Path(args.run), Path(args.out), tpr=args.tpr, devices=devices, device=args.device,
               batch_size=args.batch_size, data_root=args.data_root, overwrite=args.overwrite,
               progress=args.progress)

    run_cli(run, PROG)


if __name__ == "__main__":
    main()

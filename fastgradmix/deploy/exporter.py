"""Exporting a trained run as a model folder (what ``python -m fastgradmix.export`` does).

The steps: rebuild the run's data and model (runs/rebuild.py, exactly as training evaluated them),
extract the class feature bank from every known training image, calibrate the open-set threshold by
leave-one-out over it (calibration.py) and report it on the test images, compile the program per device
(program.py), then write bank.bin and model.json (model_folder.py) into a staging folder beside the
target and move it into place only when everything succeeded, so a failed export leaves no half folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from fastgradmix import __version__
from fastgradmix.common.device import resolve_device
from fastgradmix.common.errors import UserError
from fastgradmix.common.files import write_json
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.openset import OpenSetData
from fastgradmix.deploy.aoti import aoti_api
from fastgradmix.deploy.calibration import accepted_fraction, leave_one_out_scores, threshold_for_tpr
from fastgradmix.deploy.model_folder import BANK_FILE, FORMAT_NAME, FORMAT_VERSION, META_FILE, PROGRAM_FILES, write_bank
from fastgradmix.deploy.program import compile_checked
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.topk_similarity import class_topk_scores, osr_predict
from fastgradmix.runs.config import LOGIT_SCORES, Config, resolved_score
from fastgradmix.runs.folder import CHECKPOINT_FILE, load_run
from fastgradmix.runs.rebuild import build_run_model, load_run_data

PROG = "fastgradmix.export"  # the name its progress lines carry


def export(run_dir: Path, out: Path, tpr: float = 0.95, devices: tuple[str, ...] = ("cpu",),
           device: str = "auto", batch_size: int = 0, data_root: str | None = None, overwrite: bool = False,
           progress: bool = True) -> dict:
    """Writes the model folder ``out`` from the run ``run_dir``; returns its model.json content."""
    _check_options(tpr, devices)
    aoti_api()
    _check_out_dir(out, overwrite)
    work_device = resolve_device(device)

    run = load_run(run_dir)
    cfg = run.cfg
    data = load_run_data(cfg, data_root or "", progress)
    model = build_run_model(cfg, data.channels, run.checkpoint, run_dir / CHECKPOINT_FILE, channels_last=False,
                            num_classes=data.num_known)
    # the features Algorithm 1 scores; a --method ce run exports its normalised pooled features, scored by
    # top-k similarity like every other run (its MSP / MLS scores have no place in the model folder format)
    model = model.embedder().eval().to(work_device)
    if resolved_score(cfg.method, cfg.score) in LOGIT_SCORES:
        print(f"{PROG}: note: the run scores by --score {resolved_score(cfg.method, cfg.score)}; the model folder "
              "scores its classifier's normalised pooled features by top-k similarity (Algorithm 1)",
              file=sys.stderr)
    spec = AugmentSpec(size=cfg.image_size, mean=data.mean, std=data.std, flip=False, color=False)
    batch_size = batch_size or cfg.eval_batch_size

    # the bank: every known training image, as the evaluation builds it
    bank = extract_features(model, data.train_images, spec, batch_size, work_device, desc="bank features",
                            progress=progress)  # (N_train, D)
    threshold, calibration = _calibrate(bank, data, cfg.topk, tpr, work_device)
    calibration.update(_known_test_report(model, data, spec, bank, cfg.topk, threshold, batch_size, work_device,
                                          progress))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))
    try:
        programs, compile_report = _compile_programs(model, data.channels, cfg.image_size, devices, staging)
        write_bank(staging / BANK_FILE, bank, data.train_labels, data.num_known)
        meta = _model_json(run_dir, cfg, data, bank, tpr, threshold, calibration, programs, compile_report)
        write_json(staging / META_FILE, meta)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _print_summary(meta, out)
    return meta


def _check_options(tpr: float, devices: tuple[str, ...]) -> None:
    if not 0 < tpr <= 1:
        raise UserError(f"--tpr must lie in (0, 1] (got {tpr})")
    unknown_devices = sorted(set(devices) - set(PROGRAM_FILES))
    if unknown_devices or not devices:
        raise UserError(f"--devices takes a comma-separated list of {', '.join(PROGRAM_FILES)} "
                        f"(got {','.join(devices) or 'none'})")
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--devices cuda: no CUDA device is visible; export the CUDA program on a GPU machine")


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace it or choose another folder")


def _calibrate(bank: torch.Tensor, data: OpenSetData, topk: int, tpr: float,
               device: torch.device) -> tuple[float, dict]:
    """The threshold accepting ``tpr`` of the training images scored leave-one-out, and its report."""
    labels = data.train_labels.to(device)  # (N_train,)
    held_out = leave_one_out_scores(bank, labels, data.num_known, topk)  # (N_train,)
    try:
        threshold = threshold_for_tpr(held_out, tpr)
    except ValueError as err:
        raise UserError(f"cannot calibrate the threshold: {err}") from None
    return threshold, {"method": "leave-one-out over the training images", "held_out_images": int(held_out.numel()),
                       "held_out_accepted": accepted_fraction(held_out, threshold)}


def _known_test_report(model: nn.Module, data: OpenSetData, spec: AugmentSpec, bank: torch.Tensor,
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


def _compile_programs(model: nn.Module, channels: int, image_size: int, devices: tuple[str, ...],
                      folder: Path) -> tuple[dict, dict]:
    """One AOTInductor package per device type into ``folder``: (programs, compile report) of model.json."""
    programs, compile_report = {}, {}
    for device_type in devices:
        print(f"{PROG}: compiling the {device_type} program with AOTInductor (about a minute on CPU)...",
              file=sys.stderr)
        compile_report[device_type] = compile_checked(model, channels, image_size, device_type,
                                                      folder / PROGRAM_FILES[device_type])
        programs[device_type] = PROGRAM_FILES[device_type]
    return programs, compile_report


def _model_json(run_dir: Path, cfg: Config, data: OpenSetData, bank: torch.Tensor, tpr: float, threshold: float,
                calibration: dict, programs: dict, compile_report: dict) -> dict:
    """model.json's content (docs/model_format.md)."""
    return {
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
        "source": {"run": str(run_dir), "protocol": cfg.protocol, "split": cfg.split, "method": cfg.method,
                   "arch": cfg.arch,
                   "width": cfg.width, "epochs": cfg.epochs, "unknown_classes": list(data.unknown_classes)},
        "torch": torch.__version__, "fastgradmix": __version__,
    }


def _publish(staging: Path, out: Path) -> None:
    """Moves the finished staging folder to ``out``; an existing ``out`` is replaced only at the end.

    mkdtemp creates the staging folder private (0700); a model folder is for sharing, so it gets the
    permissions mkdir would give it (its files already have open()'s: common/files.py, torch's writer).
    """
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out)


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

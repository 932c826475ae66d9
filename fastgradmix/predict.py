"""python -m fastgradmix.predict --model model_dir/ IMAGES...: a class or "unknown" for each image.

Reads a folder written by `fastgradmix.export`, decodes and preprocesses the images the way the
evaluation does (predict_inputs.py), runs the AOTInductor program in batches, scores each feature by
top-k class similarity against the bank (Algorithm 1, osr.py) and prints one line per image:

    PATH<TAB>CLASS or unknown<TAB>score=S<TAB>threshold=T

or, with --json, one JSON object per line. The native `fgm-predict` (cpp/) prints the same lines.
Problems (a missing file, an image that does not decode or has the wrong channel count, an empty
folder) are one line each on stderr and the other images are still scored; the exit code is 0 when
every image was scored, 1 when some could not be, 2 when none could (or the model folder is bad).
"""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from fastgradmix.common.errors import UserError, run_cli
from fastgradmix.deploy.aoti import aoti_api
from fastgradmix.deploy.image_inputs import list_images, preprocess, read_image
from fastgradmix.deploy.model_folder import DeployedModel, read_model_dir
from fastgradmix.evaluation.scoring import class_topk_scores, osr_predict
from fastgradmix.runs.config import _OneLineParser

PROG = "fastgradmix.predict"
UNKNOWN = "unknown"


@dataclass
class Prediction:
    path: str
    nearest_class: str  # the best-scoring known class, also when the image is called unknown
    score: float  # open-set score: the best class's top-k similarity sum
    threshold: float

    @property
    def known(self) -> bool:
        return self.score >= self.threshold

    @property
    def label(self) -> str:
        return self.nearest_class if self.known else UNKNOWN

    def text(self) -> str:
        return f"{self.path}\t{self.label}\tscore={self.score:.6f}\tthreshold={self.threshold:.6f}"

    def json(self) -> str:
        return json.dumps({"path": self.path, "prediction": self.label, "known": self.known,
                           "nearest_class": self.nearest_class, "score": self.score, "threshold": self.threshold})


class Predictor:
    """A loaded model folder on one device: images (decoded) -> predictions, a batch at a time."""

    def __init__(self, model: DeployedModel, device: torch.device):
        _, load_package = aoti_api()
        self.model, self.device = model, device
        program_path = model.program_path(device.type)
        if not zipfile.is_zipfile(program_path):  # checked here: torch logs noise before failing on these
            raise UserError(f"cannot load the compiled program {program_path} (not a .pt2 zip archive); export "
                            "the model again")
        try:
            if device.type == "cuda" and device.index is not None:  # a chosen GPU (torch >= 2.7 takes the index)
                self.program = load_package(str(program_path), device_index=device.index)
            else:
                self.program = load_package(str(program_path))
        except Exception as err:  # torch raises RuntimeError, zipfile errors, ... for a damaged package
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"cannot load the compiled program {program_path} ({first_line}); export the model "
                            "again") from None
        self.bank = model.bank_features.to(device)  # (N, D)
        self.bank_labels = model.bank_labels.to(device)  # (N,)

    @torch.no_grad()
    def features(self, images: list[np.ndarray]) -> torch.Tensor:
        """Decoded uint8 (H, W, C) images -> L2-normalised features (N, D) float32 on the device."""
        batch = preprocess(images, self.model.preprocessing, self.device)  # (N, C, S, S)
        return self.program(batch)

    @torch.no_grad()
    def predict(self, paths: list[str], images: list[np.ndarray]) -> list[Prediction]:
        features = self.features(images)  # (N, D)
        class_scores = class_topk_scores(features, self.bank, self.bank_labels, len(self.model.class_names),
                                         k=self.model.topk)  # (N, K)
        best_class, best_score = osr_predict(class_scores)
        best_class, best_score = best_class.cpu().tolist(), best_score.cpu().tolist()
        names = self.model.class_names
        return [Prediction(path, names[index], score, self.model.threshold)
                for path, index, score in zip(paths, best_class, best_score, strict=True)]


def resolve_device(name: str, model: DeployedModel) -> torch.device:
    if name == "auto":
        use_cuda = torch.cuda.is_available() and "cuda" in model.programs
        return torch.device("cuda" if use_cuda else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu (or auto)")
    return torch.device(name)


def run_predictions(predictor: Predictor, inputs: list[str], batch_size: int, as_json: bool, out=None,
                    err=None) -> tuple[int, int]:
    """Prints a line per image on ``out`` (default stdout), problems on ``err`` (default stderr); returns
    (scored, problems)."""
    out, err = out or sys.stdout, err or sys.stderr
    scored = problems = 0
    pending_paths: list[str] = []
    pending_images: list[np.ndarray] = []

    def flush() -> None:
        nonlocal scored
        if pending_paths:
            for prediction in predictor.predict(pending_paths, pending_images):
                print(prediction.json() if as_json else prediction.text(), file=out)
            out.flush()
            scored += len(pending_paths)
            pending_paths.clear()
            pending_images.clear()

    for path, problem in list_images(inputs):
        if problem is None:
            try:
                pending_images.append(read_image(path))
                pending_paths.append(path)
            except UserError as error:
                problem = str(error)
        else:
            problem = f"{path}: {problem}"
        if problem is not None:
            print(f"{PROG}: error: {problem}", file=err)
            problems += 1
        if len(pending_paths) == batch_size:
            flush()
    flush()
    return scored, problems


def build_parser() -> _OneLineParser:
    parser = _OneLineParser(prog=PROG, description="Classify images with an exported open-set model: a known "
                            "class or 'unknown', the open-set score and the threshold, one line per image.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG) or folders (searched recursively)")
    parser.add_argument("--model", required=True, help="model folder written by python -m fastgradmix.export")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when visible and the model has a CUDA program")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    return parser


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        args = build_parser().parse_args(argv)
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
        if args.threads < 0:
            raise UserError(f"--threads must be >= 0 (got {args.threads})")
        if args.threads:
            torch.set_num_threads(args.threads)
        model = read_model_dir(args.model)
        predictor = Predictor(model, resolve_device(args.device, model))
        scored, problems = run_predictions(predictor, args.images, args.batch_size, args.json)
        if scored == 0:
            raise UserError(f"no image could be scored ({problems} problem{'s' if problems != 1 else ''} above)")
        if problems:
            sys.exit(1)

    run_cli(run, PROG)


if __name__ == "__main__":
    main()

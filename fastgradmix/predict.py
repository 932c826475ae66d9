"""python -m fastgradmix.predict --model model_dir/ IMAGES...: a class or "unknown" for each image.

Reads a folder written by `fastgradmix.export`, decodes and preprocesses the images the way the
evaluation does (deploy/image_inputs.py), runs the AOTInductor program in batches, scores each feature by
top-k class similarity against the bank (Algorithm 1, deploy/predictor.py) and prints one line per image:

    PATH<TAB>CLASS or unknown<TAB>score=S<TAB>threshold=T

or, with --json, one JSON object per line. The native `fgm-predict` (cpp/) prints the same lines.
Problems (a missing file, an image that does not decode or has the wrong channel count, an empty
folder) are one line each on stderr and the other images are still scored; the exit code is 0 when
every image was scored, 1 when some could not be, 2 when none could (or the model folder is bad).
"""

from __future__ import annotations

import sys

import torch

from fastgradmix.common.cli import OneLineParser, run_cli
from fastgradmix.common.device import resolve_device
from fastgradmix.common.errors import UserError
from fastgradmix.deploy.model_folder import read_model_dir
from fastgradmix.deploy.predictor import PROG, Predictor, run_predictions


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Classify images with an exported open-set model: a known "
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
        device = resolve_device(args.device, cuda_usable="cuda" in model.programs)
        scored, problems = run_predictions(Predictor(model, device), args.images, args.batch_size, args.json)
        if scored == 0:
            raise UserError(f"no image could be scored ({problems} problem{'s' if problems != 1 else ''} above)")
        if problems:
            sys.exit(1)

    run_cli(run, PROG)


if __name__ == "__main__":
    main()

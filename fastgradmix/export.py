"""python -m fastgradmix.export --run runs/NAME --out model_dir/: a trained run -> a deployable model folder.

The folder (format: docs/model_format.md, code: deploy/model_folder.py) holds the encoder + head compiled
ahead of time with torch.export + AOTInductor (a .pt2 package per device), the class feature bank
(L2-normalised features of every known training image, their labels, the class names), the
preprocessing, and the open-set threshold calibrated by leave-one-out on the training images
(deploy/calibration.py). `fastgradmix.predict` and the native `fgm-predict` read it. The work itself is
deploy/exporter.py.

Exporting needs torch >= 2.6 (torch._inductor.aoti_compile_and_package); on CPU AOTInductor compiles
C++ with the system compiler, about a minute for a small ResNet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastgradmix.common.cli import OneLineParser, run_cli
from fastgradmix.common.errors import UserError
from fastgradmix.deploy.exporter import PROG, export


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Export a trained run as a deployable open-set "
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

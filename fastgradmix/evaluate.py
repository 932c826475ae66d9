"""python -m fastgradmix.evaluate --run runs/NAME --tasks osr,closed,ood,corruption,linear,diversity (or all).

The paper's evaluations (sections 4.2-4.4) of a trained run, reusing its config.json and last.pt:
- osr: known vs unknown test classes (AUROC, TNR@TPR95, DTACC, AUIN, AUOUT), closed-set accuracy, openness;
- closed: accuracy of the top-k classifier on the known test images (closed-set protocols too);
- ood: the known test images against out-sets (CIFAR-10 runs: CIFAR-100 and SVHN; any ImageFolder, or
  ODIN-style noise, with --ood-out);
- corruption: accuracy drop under the 15 Hendrycks & Dietterich corruptions x 5 severities (generated, or
  the released CIFAR-10-C files with --corruption-data), with --compare runs/OTHER side by side;
- linear: a linear classifier on the frozen encoder's features, top-1/top-5 on the known test images, and
  its curve over the epoch_XXX.pt checkpoints of --save-every (evaluation/linear_task.py);
- diversity: intrinsic dimension (TwoNN) of the test features, activated area S_M(tau) of the test images'
  LayerCAM maps and a grid of them, with --compare runs/OTHER side by side (evaluation/diversity_task.py).

A sweep folder (``--split all``: runs/NAME/split<k>/) is evaluated split by split, with mean ± std.
Everything is computed first; then plots/*.png, report.md and the "evaluation" key of results.json are
written (each atomically), so a failure leaves the run folder as it was. Bad input: one line, exit 2.

This module is the command line only: evaluation/options.py checks the options into an EvalConfig,
evaluation/orchestrate.py evaluates the folder and writes its outputs, evaluation/summary.py prints the result.
"""

from __future__ import annotations

from pathlib import Path

from fastgradmix.common.cli import run_cli
from fastgradmix.evaluation.options import PROG, EvalConfig, parse_options
from fastgradmix.evaluation.orchestrate import evaluate_folder
from fastgradmix.evaluation.summary import print_summary
from fastgradmix.evaluation.tensorboard_log import figure_times, log_evaluation


def evaluate(options: EvalConfig) -> dict:
    """Evaluates the run folder of ``options``, writes its outputs, prints the summary; returns results.json."""
    figures_before = figure_times(Path(options.run))
    final = evaluate_folder(options)
    print_summary(Path(options.run), final["evaluation"])
    if options.tensorboard:  # after every file of the evaluation is written
        epochs = final.get("epochs")
        log_evaluation(Path(options.run), final["evaluation"], figures_before, epochs if isinstance(epochs, int) else 0)
    return final


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: evaluate(parse_options(argv)), PROG)


if __name__ == "__main__":
    main()

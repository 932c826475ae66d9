"""How to split a small CPU between the input pipeline and the training step, per loader (issue 16).

The step's torch threads (``--threads``, 0 = torch's default: one per core) and the input pipeline's
``--workers`` (DALI threads, or DataLoader processes; the ``device`` loader has none) share the cores.
Each row trains the default digits run (`python -m fastgradmix.train`, its default precision) for a few
epochs in a fresh process and times it whole (start-up and data included, the same for every row); rows
are grouped per loader, the first row of each group (today's default, --workers 2 --threads 0) being its
baseline. The note gives the steady training images/s (metrics.jsonl, the first epoch left out).

    pytest bench/bench_threads.py --benchmark-only      # about 3 minutes on 2 idle cores

FGM_BENCH_THREAD_EPOCHS=E trains E epochs per row (default 6; the run is cut with --stop-after, so its
schedule is the default run's). Rows of a loader that is not installed (DALI) are skipped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest
from benchlib import ON_GPU, record

from fastgradmix.data.loaders.dali import dali_available

EPOCHS = int(os.environ.get("FGM_BENCH_THREAD_EPOCHS", "6"))
# per loader: (workers, threads) splits, today's default first
SPLITS = {
    "torch": [(2, 0), (2, 1), (1, 1), (1, 2), (0, 1), (0, 2)],
    "dali": [(2, 0), (2, 1), (1, 1), (1, 2)],
    "device": [(2, 0), (0, 1)],  # workers unused: only torch's threads
}
ROWS = [(loader, workers, threads) for loader, splits in SPLITS.items() for workers, threads in splits]


@pytest.mark.skipif(ON_GPU, reason="a CPU question")
@pytest.mark.parametrize("loader, workers, threads", ROWS, ids=[f"{name}-w{w}-t{t}" for name, w, t in ROWS])
def test_thread_split(benchmark, tmp_path, loader, workers, threads):
    if loader == "dali" and not dali_available():
        pytest.skip("DALI is not installed")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "fastgradmix.train", "--out", str(out), "--no-progress", "--stop-after",
            str(EPOCHS), "--loader", loader, "--workers", str(workers), "--threads", str(threads), "--device", "cpu"]

    def train():
        subprocess.run(argv, check=True, capture_output=True)

    benchmark.group = f"thread split, digits default run, {EPOCHS} epochs, loader {loader}"
    first = (workers, threads) == SPLITS[loader][0]
    record(benchmark, "baseline" if first else "candidate", f"workers {workers} threads {threads}", 1,
           loader=loader, workers=workers, threads=threads, epochs=EPOCHS)
    benchmark.pedantic(train, rounds=1, warmup_rounds=0, iterations=1)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [line["images_per_s"] for line in lines if line["epoch"] > 0]
    if steady:
        benchmark.extra_info["note"] = f"steady {statistics.median(steady):.0f} training images/s"

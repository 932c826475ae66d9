"""Benchmark collection and the ratio table printed at the end of ``pytest bench/``.

- Files ``bench_*.py`` are collected (the default suite, ``pytest`` with testpaths=tests, never runs them).
- After pytest-benchmark's own table, a short table gives per group the time per call, the speed-up
  over the group's baseline, the bandwidth reached where the bytes moved are known (and its fraction of
  the GPU's peak), and the augmentation's share of a training step. All ratios come from this one run.
  The time is the fastest round's: on a shared machine interference only ever adds time.
  With FGM_BENCH_SUMMARY=path the table is also written there (text) and next to it as JSON.
- FGM_BENCH_THREADS=k sets torch's CPU threads (on a shared machine, 1 avoids the stalls of a thread pool
  whose other thread is descheduled; the count is recorded with the device).
- Without pytest-benchmark installed (a bare GPU machine), a minimal ``benchmark`` fixture with the same
  calls (``benchmark(fn)``, ``benchmark.pedantic(...)``, ``.group``, ``.extra_info``) times the bodies, so
  the table still comes out.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pytest
import torch

if os.environ.get("FGM_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["FGM_BENCH_THREADS"]))

try:
    import pytest_benchmark  # noqa: F401

    HAVE_PYTEST_BENCHMARK = True
except ImportError:
    HAVE_PYTEST_BENCHMARK = False

_FALLBACK_RESULTS: list[dict] = []


def pytest_collect_file(file_path: Path, parent):
    # a file named on the command line is already collected by pytest's python plugin
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


if not HAVE_PYTEST_BENCHMARK:

    class _FallbackBenchmark:
        """Times a body like pytest-benchmark (at least 5 rounds, about a second), keeps the fastest."""

        def __init__(self, name: str):
            self.name = name
            self.group = None
            self.extra_info: dict = {}

        def _keep(self, times: list[float]) -> None:
            _FALLBACK_RESULTS.append({"group": self.group, "name": self.name, "extra_info": self.extra_info,
                                      "min": min(times), "median": statistics.median(times),
                                      "rounds": len(times)})

        def __call__(self, fn, *args, **kwargs):
            times, started = [], time.perf_counter()
            while len(times) < 5 or (time.perf_counter() - started < 1.0 and len(times) < 10_000):
                begin = time.perf_counter()
                result = fn(*args, **kwargs)
                times.append(time.perf_counter() - begin)
            self._keep(times)
            return result

        def pedantic(self, fn, args=(), kwargs=None, rounds=1, warmup_rounds=0, iterations=1):
            for _ in range(warmup_rounds):
                fn(*args, **(kwargs or {}))
            times = []
            for _ in range(rounds):
                begin = time.perf_counter()
                for _ in range(iterations):
                    result = fn(*args, **(kwargs or {}))
                times.append((time.perf_counter() - begin) / iterations)
            self._keep(times)
            return result

    @pytest.fixture
    def benchmark(request):
        return _FallbackBenchmark(request.node.name)


def _rows(config) -> list[dict]:
    """group, name, extra_info and seconds per round (fastest, median) of every benchmark that ran."""
    if not HAVE_PYTEST_BENCHMARK:
        return list(_FALLBACK_RESULTS)
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    return [{"group": bench.group, "name": bench.name, "extra_info": dict(bench.extra_info),
             "min": bench.stats.min, "median": bench.stats.median, "rounds": bench.stats.rounds}
            for bench in session.benchmarks if bench.stats and not bench.has_error]


def _ratio_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    info = rows[0]["extra_info"]
    peak = info.get("peak_bandwidth_bytes_per_s")
    lines = [f"GradMix benchmark ratios -- {info.get('device')}, torch {info.get('torch')}, "
             f"triton {info.get('triton')}, {info.get('date')}; fastest round, per call, one run",
             f"{'group':<42} {'impl':<26} {'ms/call':>10} {'speed-up':>9} {'GB/s':>8} {'% peak':>7}"]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"] or row["name"], []).append(row)
    for group, members in groups.items():
        for row in members:
            calls = row["extra_info"].get("calls_per_round", 1)
            row["per_call"] = row["min"] / calls
        baseline = next((r for r in members if r["extra_info"].get("role") == "baseline"), None)
        context = next((r for r in members if r["extra_info"].get("impl") == "train_step"), None)
        for index, row in enumerate(members):
            extra = row["extra_info"]
            role = extra.get("role", "candidate")
            impl = extra.get("impl", row["name"]) + {"baseline": " (baseline)", "context": " (context)"}.get(role, "")
            speedup = ""
            if baseline is not None and role == "candidate":
                speedup = f"{baseline['per_call'] / row['per_call']:.2f}x"
            rate = fraction = ""
            if extra.get("bytes"):
                bytes_per_s = extra["bytes"] / row["per_call"]
                rate = f"{bytes_per_s / 1e9:.1f}"
                fraction = f"{100 * bytes_per_s / peak:.1f}" if peak else ""
            label = group if index == 0 else ""
            lines.append(f"{label:<42} {impl:<26} {1e3 * row['per_call']:>10.3f} {speedup:>9} {rate:>8} {fraction:>7}")
        if context is not None:
            shares = [f"{r['extra_info']['impl']} {100 * r['per_call'] / context['per_call']:.1f}%"
                      for r in members if r["extra_info"].get("role") == "candidate"]
            lines.append(f"{'':<42} share of one training step: {', '.join(shares)}")
        # bench_step.py: extra_info "ratio_over" names the row this one is divided by; "note" is printed as is
        for row in members:
            extra = row["extra_info"]
            other = next((r for r in members if extra.get("ratio_over") and r["extra_info"].get("impl") ==
                          extra["ratio_over"]), None)
            if other is not None:
                lines.append(f"{'':<42} {extra['impl']} / {extra['ratio_over']}: "
                             f"{row['per_call'] / other['per_call']:.2f}x")
            if extra.get("note"):
                lines.append(f"{'':<42} {extra['impl']}: {extra['note']}")
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = _rows(config)
    lines = _ratio_table(rows)
    if not lines:
        return
    terminalreporter.write_sep("=", "GradMix benchmark ratios")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("FGM_BENCH_SUMMARY")
    if target:
        Path(target).write_text("\n".join(lines) + "\n")
        Path(target).with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))

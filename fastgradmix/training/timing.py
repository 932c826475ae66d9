"""Step timing without host synchronisation, and the process's peak memory.

On CUDA a timed section records a pair of CUDA events on the current stream; nothing waits for them
until ``read()``, which the training loop calls only at log steps (where it reads the losses back
anyway). The events come from a pool that is reused every log window, so timing allocates nothing
per step once the first window is done. On the CPU, where every op has finished when it returns,
``time.perf_counter`` does the same job.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

try:
    import resource
except ImportError:  # Windows
    resource = None


class StepTimer:
    """Accumulates the time spent in named sections (e.g. "step", "augment") between two ``read()`` calls."""

    def __init__(self, device: torch.device):
        self.use_events = device.type == "cuda"
        self._event_pool: list[torch.cuda.Event] = []
        self._events_used = 0
        self._pending: list[tuple[str, object, object]] = []  # (name, start, end): events or perf_counter floats
        self._open: dict[str, object] = {}

    def _mark(self) -> object:
        if not self.use_events:
            return time.perf_counter()
        if self._events_used == len(self._event_pool):
            self._event_pool.append(torch.cuda.Event(enable_timing=True))
        event = self._event_pool[self._events_used]
        self._events_used += 1
        event.record()
        return event

    def start(self, name: str) -> None:
        self._open[name] = self._mark()

    def stop(self, name: str) -> None:
        self._pending.append((name, self._open.pop(name), self._mark()))

    @contextmanager
    def section(self, name: str):
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def read(self) -> tuple[dict[str, float], dict[str, int]]:
        """(total milliseconds per section name, number of times each section ran) since the last read.

        On CUDA this waits for the last recorded event: call it where the host syncs anyway.
        """
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        if self.use_events and self._pending:
            self._pending[-1][2].synchronize()
        for name, start, end in self._pending:
            totals[name] += start.elapsed_time(end) if self.use_events else (end - start) * 1e3
            counts[name] += 1
        self._pending.clear()
        # sections still open (none between steps) keep their start event, so only recycle when none are
        if not self._open:
            self._events_used = 0
        return dict(totals), dict(counts)


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory so far in MiB: tensors allocated on the CUDA device, or the process's peak resident
    set on the CPU (tensors plus everything else the process holds). None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10

"""Shared helpers for benchmarks: one JSON line per figure, best-of-N timing."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

_TICK = os.sysconf("SC_CLK_TCK")


def emit(bench: str, **fields) -> None:
    """Print one figure as a JSON object on its own line."""
    print(json.dumps({"bench": bench, **fields}, sort_keys=False), flush=True)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (this one if None), all its threads."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of process ``pid`` (this one if None), in MB."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def best_time(fn: Callable[[], object], repeat: int = 5, min_time_s: float = 0.0) -> float:
    """Smallest wall time of ``repeat`` calls (after one warm-up call, so JIT time is excluded)."""
    fn()
    best = float("inf")
    t_total = 0.0
    n = 0
    while n < repeat or t_total < min_time_s:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        t_total += dt
        n += 1
    return best


class BenchDeadlineExceeded(RuntimeError):
    """A benchmark reader did not get its bytes in time: fail loudly, never wait forever."""


class Deadline:
    """One deadline for a whole reader loop; ``left()`` is the timeout for its next blocking call.

    Every benchmark that reads from a socket, port or driver sets one, so a stalled sender or a
    lost byte shows as an error naming the reader and how far it got (a ``make bench`` once
    hung for minutes in pyserial's ``socket://`` read).
    """

    def __init__(self, seconds: float, what: str):
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def left(self, progress_note: str = "") -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            note = f" ({progress_note})" if progress_note else ""
            raise BenchDeadlineExceeded(f"{self.what}: no result within {self.seconds:g} s{note}")
        return remaining


def progress(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)

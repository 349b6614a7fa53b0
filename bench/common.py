"""Shared helpers for benchmarks: one JSON line per figure, best-of-N timing."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable


def emit(bench: str, **fields) -> None:
    """Print one figure as a JSON object on its own line."""
    print(json.dumps({"bench": bench, **fields}, sort_keys=False), flush=True)


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


def progress(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)

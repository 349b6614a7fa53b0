"""The board's public sync sequence, defined here because it is part of the board's contract.

Alice's board emits a sync pulse on slot ``i * sync_period`` when bit ``sync_on(sync_key, i)``
is 1. Bob's host learns ``sync_key`` (parameter SYNC_KEY of Alice's board, relayed by the link
engine) and needs the same on/off bits to recover absolute slot numbers by cross-correlation,
without importing the simulator. The bit is the top bit of splitmix64(sync_key XOR i * φ64),
with φ64 = 0x9E3779B97F4A7C15 (see SPEC.md); uint64 arithmetic wraps modulo 2^64.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sync_on_bits(sync_key: int, first_index: int, count: int) -> np.ndarray:
    """On/off bits (uint8 0/1) of sync indices ``first_index .. first_index + count - 1``."""
    if count < 0 or first_index < 0:
        raise ValueError(f"sync indices start at {first_index}, count {count}: both must be >= 0")
    idx = np.arange(first_index, first_index + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(np.uint64(sync_key & 0xFFFFFFFFFFFFFFFF) ^ (idx * _GOLDEN))
    return (mixed >> np.uint64(63)).astype(np.uint8)

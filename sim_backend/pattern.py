"""Alice's per-slot modulation pattern as a counter-based generator.

A real board keeps its pattern in a ring buffer filled by a hardware RNG; the simulated board
instead derives the pattern of slot ``s`` from ``(key, s)`` with a stateless mixer, so any slot
Bob reports can be answered without storing a GHz-rate stream. The same functions are used by
the link physics (what Alice sent) and by the simulated board (what Alice's host is told), so
both agree by construction.

One pattern byte (``uint8``) per slot, laid out as ``firmware_protocol.wire_facts`` defines
(bit 0 value, bit 1 basis, bits 2-3 intensity index; SPEC.md section 3).

Sync: Alice's board also emits a bright timing pulse on slots ``s % sync_period == 0`` whose
``s // sync_period`` index has a set bit in a public pseudo-random sequence (``sync_key``). Bob's
sync detector reports those on channel ``wire_facts.SYNC_CHANNEL``; the on/off sequence makes
the absolute slot number recoverable by cross-correlation.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from firmware_protocol.wire_facts import PATTERN_BASIS_SHIFT, PATTERN_INTENSITY_SHIFT

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(nogil=True, cache=True, inline="always")
def splitmix64(x):
    """One splitmix64 output for counter ``x`` (uint64 in, uint64 out)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(nogil=True, cache=True)
def _pattern_kernel(key, slots, basis_x_threshold, int1_threshold, int2_threshold, out):
    k = np.uint64(key)
    for i in range(slots.size):
        r = splitmix64(k ^ (np.uint64(slots[i]) * _GOLDEN))
        value = np.uint8(r & np.uint64(1))
        u_basis = (r >> np.uint64(8)) & np.uint64(0xFFFFFFFF)
        basis = np.uint8(1) if u_basis < basis_x_threshold else np.uint8(0)
        u_int = r >> np.uint64(40)  # 24 bits
        if u_int < int1_threshold:
            intensity = np.uint8(0)
        elif u_int < int2_threshold:
            intensity = np.uint8(1)
        else:
            intensity = np.uint8(2)
        out[i] = (value | (basis << np.uint8(PATTERN_BASIS_SHIFT))
                  | (intensity << np.uint8(PATTERN_INTENSITY_SHIFT)))


def pattern_thresholds(p_basis_x: float, p_signal: float, p_decoy1: float) -> tuple[int, int, int]:
    """Integer thresholds for ``pattern_at``: P(basis X), P(intensity 0), P(intensity 1)."""
    t_basis = int(round(p_basis_x * 2**32))
    t1 = int(round(p_signal * 2**24))
    t2 = int(round((p_signal + p_decoy1) * 2**24))
    return t_basis, t1, t2


def pattern_at(key: int, slots: np.ndarray, *, p_basis_x: float = 0.5,
               p_signal: float = 1.0, p_decoy1: float = 0.0) -> np.ndarray:
    """Pattern bytes of ``slots`` (uint64/int64 array) for the run keyed by ``key`` (uint64)."""
    slots = np.ascontiguousarray(slots, dtype=np.uint64)
    out = np.empty(slots.size, dtype=np.uint8)
    tb, t1, t2 = pattern_thresholds(p_basis_x, p_signal, p_decoy1)
    _pattern_kernel(np.uint64(key & 0xFFFFFFFFFFFFFFFF), slots, np.uint64(tb), np.uint64(t1),
                    np.uint64(t2), out)
    return out


@nb.njit(nogil=True, cache=True)
def _sync_on_kernel(sync_key, indices, out):
    k = np.uint64(sync_key)
    for i in range(indices.size):
        out[i] = np.uint8(splitmix64(k ^ (np.uint64(indices[i]) * _GOLDEN)) >> np.uint64(63))


def sync_on(sync_key: int, sync_indices: np.ndarray) -> np.ndarray:
    """1 where sync slot number ``index * sync_period`` carries a sync pulse, else 0 (uint8)."""
    idx = np.ascontiguousarray(sync_indices, dtype=np.uint64)
    out = np.empty(idx.size, dtype=np.uint8)
    _sync_on_kernel(np.uint64(sync_key & 0xFFFFFFFFFFFFFFFF), idx, out)
    return out


def sync_slots(sync_key: int, start_slot: int, stop_slot: int, sync_period: int) -> np.ndarray:
    """Absolute slot numbers in ``[start_slot, stop_slot)`` that carry a sync pulse (int64)."""
    first = -(-start_slot // sync_period)
    last = -(-stop_slot // sync_period)
    idx = np.arange(first, last, dtype=np.int64)
    return idx[sync_on(sync_key, idx).astype(bool)] * sync_period

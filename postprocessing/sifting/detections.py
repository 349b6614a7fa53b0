"""Bob's detections, common to every protocol: events (or raw time tags) to one squashed
(basis, bit) per detected slot, with the counts; a protocol's module turns them into its
announcement.
"""

from __future__ import annotations

import numpy as np

from postprocessing.alignment import assign_slots
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting.errors import SiftError
from postprocessing.sifting.kernels import (C_HOLDOFF, C_OTHER, C_OUTSIDE, C_REPEAT, C_SYNC,
                                            N_COUNTS, group_detections, squash_multi)
from postprocessing.sifting.messages import SiftAnnouncement


def _as_events(slots, channels, valid, fill_valid=True):
    """Checked contiguous (slots, channels, valid); a missing ``valid`` becomes all ones, or
    stays None with ``fill_valid=False`` (the kernel then gates the events itself)."""
    slots = np.asarray(slots)
    channels = np.asarray(channels)
    if slots.ndim != 1 or slots.dtype != np.int64:
        raise SiftError(f"slots: expected a 1-D int64 array, got {slots.dtype} {slots.shape}")
    if channels.ndim != 1 or channels.dtype != np.uint8:
        raise SiftError(f"channels: expected a 1-D uint8 array, got {channels.dtype} "
                        f"{channels.shape}")
    if channels.size != slots.size:
        raise SiftError(f"channels: {channels.size} entries for {slots.size} slots")
    if valid is None:
        if not fill_valid:
            return np.ascontiguousarray(slots), np.ascontiguousarray(channels), None
        valid = np.ones(slots.size, np.uint8)
    else:
        valid = np.asarray(valid)
        if valid.shape != slots.shape or valid.dtype not in (np.bool_, np.uint8):
            raise SiftError(f"valid: expected a bool/uint8 mask of {slots.size} entries, got "
                            f"{valid.dtype} {valid.shape}")
        valid = valid.view(np.uint8) if valid.dtype == np.bool_ else valid
    return (np.ascontiguousarray(slots), np.ascontiguousarray(channels),
            np.ascontiguousarray(valid))


def squash_coins(rng: ProtocolRandom, n_multi: int) -> np.ndarray:
    """The squashing coins of one announcement: uint8 0/1 of shape (2, n_multi), row 0 the basis
    coin and row 1 the bit coin of each multi-click slot in slot order. Drawn once, after the
    grouping, by every path (role-split or fused), so equal seeds give equal keys."""
    return rng.integers(0, 2, size=(2, n_multi), dtype=np.uint8)


def squashed_detections(slots, channels, rng, valid, holdoff_slots, clock=None):
    """One squashed (basis, bit) per detected slot, and the counts (shared by BB84 and B92).

    With ``clock`` = (ref_time_ps, ref_slot, inv_period, period_ps, gate_ps), ``slots`` holds
    Bob's int64 time tags (already checked by the caller) and the grouping kernel assigns and
    gates them itself; ``valid`` must then be None.
    """
    if not isinstance(rng, ProtocolRandom):
        raise SiftError(f"rng: expected a ProtocolRandom, got {type(rng).__name__}")
    holdoff_slots = int(holdoff_slots)
    if not 0 <= holdoff_slots <= 10**9:
        raise SiftError(f"holdoff_slots {holdoff_slots} outside 0..1e9")
    slots, channels, valid = _as_events(slots, channels, valid, fill_valid=clock is None)
    n = slots.size
    out_slots = np.empty(n, np.int64)
    out_basis = np.empty(n, np.uint8)
    out_bits = np.empty(n, np.uint8)
    multi_rows = np.empty(n, np.int64)
    multi_masks = np.empty(n, np.uint8)
    counts = np.zeros(N_COUNTS, np.int64)
    source = (slots, valid) if clock is None else (slots, *clock)
    n_rows, n_multi = group_detections(source, channels, np.int64(holdoff_slots), out_slots,
                                        out_basis, out_bits, multi_rows, multi_masks, counts)
    if n_rows < 0:
        raise SiftError(f"slots go backwards at event {n_multi}: events must be sorted by time "
                        f"and assigned by a monotonic clock fit")
    n_same = 0
    if n_multi:
        n_same = int(squash_multi(multi_rows[:n_multi], multi_masks[:n_multi],
                                   squash_coins(rng, n_multi), out_basis, out_bits))
    c = counts.tolist()  # Python ints in one call (this runs once per chunk of events)
    counts_rec = dict(
        n_events=n, n_sync=c[C_SYNC], n_other_channel=c[C_OTHER],
        n_outside_slot=c[C_OUTSIDE], n_holdoff=c[C_HOLDOFF],
        n_repeat_same_detector=c[C_REPEAT], n_double_same_basis=n_same,
        n_double_cross_basis=n_multi - n_same, n_detected_slots=int(n_rows))
    return out_slots[:n_rows], out_basis[:n_rows], out_bits[:n_rows], counts_rec


def built_announcement(announcement: SiftAnnouncement) -> SiftAnnouncement:
    """Mark an announcement built here as valid: the grouping kernel guarantees strictly
    increasing slots (it rejects backward steps and merges equal ones) and 0/1 bases."""
    if announcement.slots.size and announcement.slots[0] < 0:
        raise SiftError(f"slot {int(announcement.slots[0])} is negative: events before the "
                        f"first slot of the run")
    object.__setattr__(announcement, "_valid", True)
    return announcement


def aligned_detections(timestamps_ps, channels, fit, gate_ps, rng, holdoff_slots):
    """``squashed_detections`` of Bob's raw events, slots assigned inside the grouping pass.

    Time tags or a gate that ``assign_slots`` would reject (or convert) go through
    ``assign_slots`` itself, so errors and odd inputs behave exactly as in the two-step path.
    """
    t = timestamps_ps
    if not (isinstance(t, np.ndarray) and t.ndim == 1 and t.dtype == np.int64
            and isinstance(gate_ps, (int, float, np.integer, np.floating))
            and 0.0 <= gate_ps < np.inf):
        slots, valid = assign_slots(t, fit, gate_ps)
        return squashed_detections(slots, channels, rng, valid, holdoff_slots)
    period = float(fit.period_ps)  # the values and inverse that assign_slots computes with
    clock = (np.int64(fit.ref_time_ps), np.int64(fit.ref_slot), 1.0 / period, period,
             float(gate_ps))
    return squashed_detections(t, channels, rng, None, holdoff_slots, clock)

"""Numba kernels shared by every sifting protocol: Bob's grouping of events into detected slots,
squashing of multi-clicks, Alice's pattern lookup, Bob's compaction of kept rows, and the
checks the message codec runs. A protocol's own kernels (Alice's comparison) sit in its module.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.extending import overload

from firmware_protocol.wire_facts import (N_DETECTORS, PATTERN_BASIS_BIT, PATTERN_BASIS_SHIFT,
                                          PATTERN_INTENSITY_MASK, PATTERN_INTENSITY_SHIFT,
                                          PATTERN_RESERVED_BITS, PATTERN_VALUE_BIT, SYNC_CHANNEL)
from postprocessing.alignment import nearest_slot

# Indices into the counts array filled by group_detections.
C_SYNC, C_OTHER, C_OUTSIDE, C_HOLDOFF, C_REPEAT, N_COUNTS = 0, 1, 2, 3, 4, 5


@nb.njit(cache=True, nogil=True)
def strictly_increasing(a):
    """True when int64 array ``a`` is strictly increasing (branch-free scan)."""
    bad = 0
    for i in range(1, a.size):
        bad |= a[i] <= a[i - 1]
    return bad == 0


@nb.njit(cache=True, nogil=True)
def all_bits(a):
    """True when every uint8 of ``a`` is 0 or 1."""
    acc = np.uint8(0)
    for i in range(a.size):
        acc |= a[i]
    return acc <= 1


@nb.njit(cache=True, nogil=True)
def gather_window(window, window_first_slot, slots, out):
    """out[i] = window[slots[i] - window_first_slot] (uint8 pattern bytes); returns the index of
    the first slot outside the window, or -1."""
    n_win = window.size
    for i in range(slots.size):
        j = slots[i] - window_first_slot
        if j < 0 or j >= n_win:
            return i
        out[i] = window[j]
    return -1


def _event_slot(source, i):
    """(slot, within gate) of event i of a slot source, one of
    ``(slots int64, valid uint8 0/1)`` (slots assigned beforehand by ``assign_slots``) or
    ``(timestamps_ps int64, ref_time_ps, ref_slot, inv_period, period_ps, gate_ps)`` (rounded
    here by ``alignment.nearest_slot``). In compiled code the overload below picks the variant
    from the tuple's type, so a kernel is specialised per source with no per-event mode test."""
    if len(source) == 2:
        return source[0][i], source[1][i] != 0
    return nearest_slot(source[0][i], *source[1:])


@overload(_event_slot, inline="always")
def _event_slot_compiled(source, i):
    if len(source) == 2:
        return lambda source, i: (source[0][i], source[1][i] != 0)
    return lambda source, i: nearest_slot(source[0][i], source[1], source[2], source[3],
                                          source[4], source[5])


@nb.njit(cache=True, nogil=True)
def group_detections(source, channels, holdoff_slots, out_slots, out_basis, out_bits,
                      multi_rows, multi_masks, counts):
    """Collapse Bob's events into one row per detected slot.

    source: where each event's slot and gate decision come from (see ``_event_slot``): given
    arrays, or the time tags and clock fit, so that Bob's one-pass path
    (``bob_align_and_announce_*``) runs this very loop with no slots/valid arrays in between.
    Slots must be non-decreasing over valid detector events. channels uint8; out_* sized
    len(channels): out_basis/out_bits uint8 = outcome of the first click of the slot;
    multi_rows int64 / multi_masks uint8 (bit c = detector c clicked) list rows with more than
    one detector. Returns (n_rows, n_multi), or (-1, i) if slot i goes backwards.
    One well-predicted test covers the common event (a detector click in a new slot); the rest
    takes the slow path. The common event's row is written before the test, at the unsigned
    cursor (row n_rows <= event i, so in bounds; a slow-path event leaves it to be overwritten),
    as slot and detector number only (out_basis holds the detector until a vectorised loop
    splits it into basis and bit after the pass), and the holdoff is folded into one bar
    (``last + holdoff_slots``): the fast path is then two stores, a test and a cursor step.
    """
    n_rows = 0
    n_multi = 0
    bar = np.int64(-(2**62)) + holdoff_slots  # no detection yet: any slot >= -2**61 is new
    n_sync = 0
    n_other = 0
    n_outside = 0
    n_holdoff = 0
    n_repeat = 0
    for i in range(channels.size):
        ch = channels[i]
        s, ok = _event_slot(source, i)
        r = np.uint64(n_rows)  # unsigned: no negative-index fix-up
        out_slots[r] = s
        out_basis[r] = ch
        if (ch < N_DETECTORS) & ok & (s > bar):
            n_rows += 1
            bar = s + holdoff_slots
            continue
        last = bar - holdoff_slots
        if ch >= N_DETECTORS:
            if ch == SYNC_CHANNEL:
                n_sync += 1
            else:
                n_other += 1
        elif not ok:
            n_outside += 1
        elif s < last:
            return -1, i
        elif s == last:  # a further event in the last detected slot
            bit = np.uint8(1) << ch
            if n_multi > 0 and multi_rows[n_multi - 1] == n_rows - 1:
                m = multi_masks[n_multi - 1]
                if m & bit:
                    n_repeat += 1
                else:
                    multi_masks[n_multi - 1] = m | bit
            else:
                first = np.uint8(1) << out_basis[n_rows - 1]  # the slot's first detector
                if first == bit:
                    n_repeat += 1
                else:
                    multi_rows[n_multi] = n_rows - 1
                    multi_masks[n_multi] = first | bit
                    n_multi += 1
        else:
            n_holdoff += 1
    for r in range(n_rows):
        ch = out_basis[r]
        out_bits[r] = ch & np.uint8(1)
        out_basis[r] = ch >> np.uint8(1)
    counts[C_SYNC] = n_sync
    counts[C_OTHER] = n_other
    counts[C_OUTSIDE] = n_outside
    counts[C_HOLDOFF] = n_holdoff
    counts[C_REPEAT] = n_repeat
    return n_rows, n_multi


@nb.njit(cache=True, nogil=True, inline="always")
def pattern_fields(p):
    """(value, basis, intensity index) of Alice's pattern byte ``p`` (uint8), decoded by the
    layout of ``firmware_protocol.wire_facts``."""
    return (p & np.uint8(PATTERN_VALUE_BIT),
            (p & np.uint8(PATTERN_BASIS_BIT)) >> np.uint8(PATTERN_BASIS_SHIFT),
            (p & np.uint8(PATTERN_INTENSITY_MASK)) >> np.uint8(PATTERN_INTENSITY_SHIFT))


@nb.njit(cache=True, nogil=True, inline="always")
def layout_flags(seen, pairs):
    """Nonzero when the pattern bytes OR-ed into ``seen`` use bits 4-7, or some byte had both
    intensity bits set (bit 2 of ``pairs``, the OR of ``p & (p >> 1)``): two OR accumulators
    check the layout inside the pass that reads the bytes, at a fraction of a per-byte test."""
    return ((seen & np.uint8(PATTERN_RESERVED_BITS))
            | (pairs & np.uint8(1 << PATTERN_INTENSITY_SHIFT)))


@nb.njit(cache=True, nogil=True)
def squash_multi(rows, masks, coins, out_basis, out_bits):
    """Squash the multi-click rows in place: a same-basis double keeps its basis and takes the
    bit coin; a cross-basis one takes the basis coin and the bit coin (coins uint8 (2, n)).
    Returns the number of same-basis rows."""
    n_same = 0
    for m in range(rows.size):
        mask = masks[m]
        same = (mask & np.uint8(0b0011)) == 0 or (mask & np.uint8(0b1100)) == 0
        n_same += same
        r = rows[m]
        out_basis[r] = np.uint8((mask & np.uint8(0b1100)) != 0) if same else coins[0, m]
        out_bits[r] = coins[1, m]
    return n_same


@nb.njit(cache=True, nogil=True)
def compact_kept(keep, slots, basis, bits, out_slots, out_basis, out_bits):
    """Rows of slots (int64), basis and bits (uint8 0/1) where uint8 ``keep`` is 1, branch-free;
    returns how many were written. Basis and bit travel as one byte through the compaction
    (two stores a row, not three) and are split by a vectorised loop afterwards."""
    k = np.uint64(0)  # unsigned: no negative-index fix-up
    for i in range(keep.size):
        out_slots[k] = slots[i]
        out_basis[k] = basis[i] | (bits[i] << np.uint8(1))
        k += np.uint64(keep[i])
    for r in range(k):
        c = out_basis[r]
        out_bits[r] = c >> np.uint8(1)
        out_basis[r] = c & np.uint8(1)
    return np.int64(k)

"""Slot alignment and sifting of both ends in one pass, for in-process use only.

The protocol is the role-split chain of the protocol modules (``bb84``, ``b92``: Bob announces,
Alice answers, Bob applies the answer): the link engine puts those messages on the peer channel.
When both ends live in one process (tests, benchmarks, a distillation run with both ends local)
the messages need not exist, and the chain ``assign_slots -> bob_announce -> pattern_from_window ->
alice_answer -> bob_apply_answer`` makes five passes, each with its own arrays, where one will do.
``align_and_sift_bb84`` and ``align_and_sift_b92`` make that one pass over the events: slot and
gate, grouping of multi-clicks, holdoff, Alice's pattern byte, the basis comparison (B92: the
conclusive test), and each kept row written once as (slot, code byte); a last vectorised pass over
the kept rows splits the codes into both ends' columns.

Equality with the chain is the contract: same inputs and the same ``rng`` state give the same
``SiftResult`` (bits, basis, intensity, slots of both ends, every count) and leave ``rng`` in the
same state. Squashing coins are drawn exactly as the chain draws them (``detections.squash_coins``,
once, after the grouping), so rows whose outcome depends on a coin (cross-basis multi-clicks in
BB84, every multi-click in B92) are written tentatively and settled after the pass; a rejected
one is left out when the row codes are split into columns. Anything off the common path
(unsorted events, a slot outside the pattern window, a malformed pattern byte, a window starting
below slot 0, an unexpected dtype) is handed to the chain itself, which raises its usual error or
returns its usual result; the fused kernel draws no coins before that decision, so the hand-over
leaves no trace.

Alice's and Bob's records share their ``slots``, ``basis`` and ``intensity`` arrays (public after
sifting and equal at both ends by construction); ``bits`` are separate arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from firmware_protocol.wire_facts import (N_DETECTORS, PATTERN_BASIS_BIT, PATTERN_INTENSITY_MASK,
                                          PATTERN_INTENSITY_SHIFT, PATTERN_MAX_INTENSITY_INDEX,
                                          PATTERN_RESERVED_BITS, SYNC_CHANNEL)
from postprocessing.alignment import ClockFit, assign_slots, nearest_slot
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting.detections import squash_coins
from postprocessing.sifting.inprocess import sift_b92, sift_bb84
from postprocessing.sifting.kernels import pattern_fields
from postprocessing.sifting.patterns import pattern_from_window
from postprocessing.sifting.records import AliceSifted, BobSifted, SiftCounts, SiftResult

# Counters filled by the pass, in this order.
_C_SYNC, _C_OTHER, _C_OUTSIDE, _C_HOLDOFF, _C_REPEAT, _C_FURTHER, _C_MULTI, _C_KEPT = range(8)
_N_COUNTS = 8
_BB84, _B92 = 0, 1


_BAD_PATTERN_BYTE = np.array(
    [(p & PATTERN_RESERVED_BITS) != 0
     or (p & PATTERN_INTENSITY_MASK) >> PATTERN_INTENSITY_SHIFT > PATTERN_MAX_INTENSITY_INDEX
     for p in range(256)], np.uint8)
"""1 for a pattern byte the chain rejects (bits 4-7 used, or intensity index 3)."""

_PATTERN_BITS = PATTERN_RESERVED_BITS ^ 0xFF
"""The bits of a row code that hold Alice's pattern byte (Bob's detector sits above them)."""


@nb.njit(cache=True, nogil=True, inline="always")
def _cross_basis(mask):
    return (mask & np.uint8(0b0011)) != 0 and (mask & np.uint8(0b1100)) != 0


@nb.njit(cache=True, nogil=True)
def _further_click(protocol, s, ch, k, kept, out_code, multi_slot, multi_pos, multi_masks,
                   counts):
    """A further click of detector ch in the current slot s, whose row is out[k - kept].
    Returns the new (k, kept). Kept out of the hot loop, which does not carry the slot's
    multi-click entry: it is recovered here from what the loop wrote."""
    cur = k - kept
    bit = np.uint8(1) << ch
    n_multi = counts[_C_MULTI]
    is_multi = n_multi > 0 and multi_slot[n_multi - 1] == s
    if is_multi:
        m = n_multi - 1
        mask = multi_masks[m]
    else:
        m = n_multi
        mask = np.uint8(1) << (out_code[cur] >> np.uint8(4))  # the slot's first click
    if mask & bit:
        counts[_C_REPEAT] += 1
        return k, kept
    counts[_C_FURTHER] += 1
    mask |= bit
    if not is_multi:
        multi_slot[m] = s
        counts[_C_MULTI] = n_multi + 1
    multi_masks[m] = mask
    # the outcome now depends on a coin unless (BB84) both clicks share a basis, in which case
    # the basis, hence the keep decision, stands: a coin-dependent row is written tentatively
    if protocol == _B92 or _cross_basis(mask):
        k = cur + np.uint64(1)
        kept = np.uint64(1)
    multi_pos[m] = np.int64(cur) if kept else -1
    return k, kept


@nb.njit(cache=True, nogil=True)
def _fused_pass(protocol, timestamps_ps, channels, ref_time_ps, ref_slot, period_ps, gate_ps,
                holdoff_slots, window, window_first_slot, out_slots, out_code, multi_slot,
                multi_pos, multi_masks, counts):
    """One pass over Bob's events (int64 ps, uint8 channels) against Alice's pattern window
    (uint8, non-empty). Kept rows are written compacted into out_slots (int64) and out_code
    (uint8: Alice's pattern byte in bits 0-3, Bob's detector in bits 4-5), both sized
    len(events); a multi-click slot is listed in multi_* (its slot, its output row or -1, its
    detector mask) for settling once the coins are drawn. Returns 0, or 1 when the input may
    leave the common path (the caller then runs the role-split chain); counts gets _C_*.

    Every row is written at the output cursor k, which advances only when the row is kept, so
    the common event costs no unpredictable branch, and the loop carries little state so that it
    stays in registers. The window and pattern-layout checks cover every row, a superset of what
    the chain checks for B92 (conclusive rows only): a false alarm costs a run of the chain,
    never a different result. The window starts at slot >= 0 (the caller sees to it), so a row
    inside it has a non-negative slot.
    """
    inv = 1.0 / period_ps
    n_win = np.uint64(window.size)
    k = np.uint64(0)  # output cursor (unsigned: no negative-index fix-up on each store)
    kept = np.uint64(0)  # 1 when the current slot's row is out[k - 1], 0 when it is out[k]
    suspect = np.uint8(0)  # a row's slot is outside the window or its pattern byte is bad
    bar = np.int64(-(2**62)) + holdoff_slots  # a detection at a slot > bar starts a new row
    for i in range(timestamps_ps.size):
        ch = channels[i]
        s, ok = nearest_slot(timestamps_ps[i], ref_time_ps, ref_slot, inv, period_ps, gate_ps)
        if (ch < N_DETECTORS) & ok & (s > bar):  # one branch, not three
            j = np.uint64(s - window_first_slot)
            inside = j < n_win
            p = window[j if inside else np.uint64(0)]
            suspect |= _BAD_PATTERN_BYTE[p] | np.uint8(not inside)
            out_slots[k] = s
            out_code[k] = p | (ch << np.uint8(4))
            if protocol == _BB84:
                # a detector channel keeps its basis in the pattern byte's basis bit
                kept = np.uint64(((p ^ ch) & np.uint8(PATTERN_BASIS_BIT)) == 0)
            else:
                kept = np.uint64(ch & np.uint8(1))  # V or A: conclusive
            k += kept
            bar = s + holdoff_slots
            continue
        if ch >= N_DETECTORS:
            counts[_C_SYNC if ch == SYNC_CHANNEL else _C_OTHER] += 1
        elif not ok:
            counts[_C_OUTSIDE] += 1
        elif s == bar - holdoff_slots:
            k, kept = _further_click(protocol, s, ch, k, kept, out_code, multi_slot, multi_pos,
                                     multi_masks, counts)
        elif s < bar - holdoff_slots:
            return 1  # unsorted: the chain reports where
        else:
            counts[_C_HOLDOFF] += 1
    counts[_C_KEPT] = k
    return np.int64(suspect != 0)


@nb.njit(cache=True, nogil=True)
def _settle_multi(protocol, coins, multi_pos, multi_masks, n_multi, out_code, removed):
    """Apply the squashing coins (uint8 (2, n_multi): basis coin, bit coin) to the multi-click
    rows, exactly as the chain does: the squashed outcome replaces Bob's detector in the row
    code, and the output rows of tentative rows that the coins reject are listed, ascending, in
    ``removed``. Returns (rows removed, same-basis multi-clicks)."""
    n_same = 0
    n_removed = 0
    for m in range(n_multi):
        mask = multi_masks[m]
        cross = _cross_basis(mask)
        n_same += not cross
        basis = coins[0, m] if cross else np.uint8((mask & np.uint8(0b1100)) != 0)
        bit = coins[1, m]
        pos = multi_pos[m]
        if pos < 0:
            continue  # same-basis BB84 row whose basis Alice does not share
        code = out_code[pos]
        if protocol == _BB84:
            keep = basis == pattern_fields(code)[1]
        else:
            keep = bit == 1
        squashed = ((basis << np.uint8(1)) | bit) << np.uint8(4)
        out_code[pos] = (code & np.uint8(_PATTERN_BITS)) | squashed
        if not keep:
            removed[n_removed] = pos
            n_removed += 1
    return n_removed, n_same


@nb.njit(cache=True, nogil=True, inline="always")
def _decode_run(protocol, code, alice_bits, bob_bits, basis, intensity):
    """Columns of one run of row codes (equal-length views; a loop the compiler vectorises)."""
    if protocol == _BB84:
        for r in range(code.size):
            c = code[r]
            value, a_basis, index = pattern_fields(c)
            alice_bits[r] = value
            intensity[r] = index
            basis[r] = a_basis
            bob_bits[r] = (c >> np.uint8(4)) & np.uint8(1)
    else:
        for r in range(code.size):
            c = code[r]
            value, _, index = pattern_fields(c)
            alice_bits[r] = value
            intensity[r] = index
            basis[r] = 0
            bob_bits[r] = np.uint8(1) - ((c >> np.uint8(5)) & np.uint8(1))


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_run(src, dst):
    for r in range(src.size):
        dst[r] = src[r]


@nb.njit(cache=True, nogil=True)
def _decode_rows(protocol, out_slots, out_code, n_rows, removed, alice_bits, bob_bits, basis,
                 intensity, slots):
    """Both ends' columns from the first n_rows row codes, leaving out the ``removed`` rows
    (ascending); ``slots`` gets the kept slots unless it is empty (nothing removed: the caller
    uses out_slots as it is). Runs between removed rows are copied whole, so rejected
    multi-clicks cost no row-by-row shifting."""
    w = 0
    start = 0
    for q in range(removed.size + 1):
        end = removed[q] if q < removed.size else n_rows
        m = end - start
        _decode_run(protocol, out_code[start:end], alice_bits[w:w + m], bob_bits[w:w + m],
                    basis[w:w + m], intensity[w:w + m])
        if slots.size:
            _copy_run(out_slots[start:end], slots[w:w + m])
        w += m
        start = end + 1


def _common_path(timestamps_ps, channels, fit, gate_ps, window, window_first_slot,
                 holdoff_slots, rng) -> bool:
    """Inputs the fused kernel takes as they are; anything else goes to the chain."""
    return (isinstance(timestamps_ps, np.ndarray) and timestamps_ps.dtype == np.int64
            and timestamps_ps.ndim == 1
            and isinstance(channels, np.ndarray) and channels.dtype == np.uint8
            and channels.shape == timestamps_ps.shape
            and isinstance(window, np.ndarray) and window.dtype == np.uint8
            and window.ndim == 1 and window.size > 0
            and isinstance(window_first_slot, (int, np.integer)) and window_first_slot >= 0
            and isinstance(fit, ClockFit) and isinstance(rng, ProtocolRandom)
            and isinstance(holdoff_slots, (int, np.integer)) and 0 <= holdoff_slots <= 10**9
            and isinstance(gate_ps, (int, float, np.integer, np.floating))
            and 0.0 <= gate_ps < np.inf)


def _align_and_sift(protocol, timestamps_ps, channels, fit, gate_ps, window, window_first_slot,
                    rng, holdoff_slots):
    def chain():
        slots, valid = assign_slots(timestamps_ps, fit, gate_ps)
        sift = sift_bb84 if protocol == _BB84 else sift_b92
        return sift(slots, channels,
                    lambda s: pattern_from_window(window, window_first_slot, s), rng,
                    valid=valid, holdoff_slots=holdoff_slots)

    if not _common_path(timestamps_ps, channels, fit, gate_ps, window, window_first_slot,
                        holdoff_slots, rng):
        return chain()
    t = np.ascontiguousarray(timestamps_ps)
    c = np.ascontiguousarray(channels)
    w = np.ascontiguousarray(window)
    n = t.size
    slots = np.empty(n, np.int64)
    code = np.empty(n, np.uint8)
    multi_slot = np.empty(n, np.int64)
    multi_pos = np.empty(n, np.int64)
    multi_masks = np.empty(n, np.uint8)
    counts = np.zeros(_N_COUNTS, np.int64)
    off_path = _fused_pass(protocol, t, c, np.int64(fit.ref_time_ps), np.int64(fit.ref_slot),
                           float(fit.period_ps), float(gate_ps), np.int64(holdoff_slots), w,
                           np.int64(window_first_slot), slots, code, multi_slot, multi_pos,
                           multi_masks, counts)
    if off_path:
        return chain()
    n_multi = int(counts[_C_MULTI])
    n_written = int(counts[_C_KEPT])
    n_same = 0
    removed = multi_pos[:0]
    if n_multi:
        removed = np.empty(n_multi, np.int64)
        n_removed, n_same = _settle_multi(protocol, squash_coins(rng, n_multi), multi_pos,
                                          multi_masks, n_multi, code, removed)
        removed = removed[:n_removed]
    k = n_written - removed.size
    alice_bits = np.empty(k, np.uint8)
    bob_bits = np.empty(k, np.uint8)
    basis = np.empty(k, np.uint8)
    intensity = np.empty(k, np.uint8)
    kept_slots = np.empty(k if removed.size else 0, np.int64)
    _decode_rows(protocol, slots, code, n_written, removed, alice_bits, bob_bits, basis,
                 intensity, kept_slots)
    slots = kept_slots if removed.size else slots[:k]
    # every event not otherwise counted started a row
    n_rows = n - int(counts[:_C_FURTHER + 1].sum())
    sift_counts = SiftCounts(
        n_events=n, n_sync=int(counts[_C_SYNC]), n_other_channel=int(counts[_C_OTHER]),
        n_outside_slot=int(counts[_C_OUTSIDE]), n_holdoff=int(counts[_C_HOLDOFF]),
        n_repeat_same_detector=int(counts[_C_REPEAT]), n_double_same_basis=int(n_same),
        n_double_cross_basis=n_multi - int(n_same), n_detected_slots=n_rows,
        n_inconclusive=n_rows - k if protocol == _B92 else 0,
        n_announced=k if protocol == _B92 else n_rows)
    return SiftResult(AliceSifted(alice_bits, basis, intensity, slots),
                      BobSifted(bob_bits, basis, intensity, slots), sift_counts)


def align_and_sift_bb84(timestamps_ps, channels, fit: ClockFit, gate_ps: float, pattern_window,
                        window_first_slot: int, rng: ProtocolRandom, *,
                        holdoff_slots: int = 0) -> SiftResult:
    """BB84 sifting of both ends from Bob's raw events in one pass (in-process use only).

    Same result, counts and ``rng`` use as ``assign_slots`` then ``sift_bb84`` with
    ``pattern_from_window(pattern_window, window_first_slot, ...)``; see the module docstring.
    timestamps_ps int64, channels uint8 per event; pattern_window uint8 pattern bytes of slots
    from ``window_first_slot``. ``wire_bytes`` is 0: no message is built.
    """
    return _align_and_sift(_BB84, timestamps_ps, channels, fit, gate_ps, pattern_window,
                           window_first_slot, rng, holdoff_slots)


def align_and_sift_b92(timestamps_ps, channels, fit: ClockFit, gate_ps: float, pattern_window,
                       window_first_slot: int, rng: ProtocolRandom, *,
                       holdoff_slots: int = 0) -> SiftResult:
    """B92 counterpart of ``align_and_sift_bb84`` (same contract against ``sift_b92``)."""
    return _align_and_sift(_B92, timestamps_ps, channels, fit, gate_ps, pattern_window,
                           window_first_slot, rng, holdoff_slots)

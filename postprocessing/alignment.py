"""Slot alignment: Bob's time tags -> Alice's absolute slot numbers, from the sync channel.

Clock model (Bob's board clock): ``t_ps(slot) = offset_ps + slot * period_ps`` with
``period_ps = nominal_period_ps * (1 + drift_ppm * 1e-6)``, plus timing jitter. Alice emits a
sync pulse on slot ``k * sync_period`` when bit ``k`` of a public on/off sequence is set.

Acquisition (``fit_clock``) needs no prior offset or drift:
1. chain the sync events: the gap between two consecutive syncs is a whole number of sync
   intervals; rounding each gap with the nominal interval is exact for any drift within
   +-100 ppm because gaps are short, so the chain gives each event a relative sync index.
   Events off the grid (noise clicks) are skipped; a run of them re-anchors a new segment.
2. cross-correlate each segment's observed on/off sequence against the expected bits
   (a 64-bit sliding word and popcount, then a check over the whole segment): this fixes the
   absolute sync index, hence the absolute slot, whatever the offset.
3. least-squares fit of time against slot over all matched syncs, with one robust pass
   (median absolute deviation) that drops syncs too far from the line.

Tracking (``SlotTracker``) then refits chunk by chunk from the syncs that the previous fit
places on sync slots, so slow drift changes are followed; ``assign_slots`` maps every event to
its nearest slot and rejects those farther than a gate from the slot centre.

Times are int64 ps; a fit keeps an integer reference (``ref_slot``, ``ref_time_ps``) so that
float arithmetic only ever sees differences from it (sub-ps error over days of run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np

from firmware_protocol.wire_facts import SYNC_CHANNEL
MAX_DRIFT_PPM = 100.0
"""Largest clock drift acquisition is built for (the hardware is specified at +-10 ppm)."""

_MATCH_BITS = 64


class AlignmentError(ValueError):
    """The sync data do not determine the clock (too few syncs, no or ambiguous match)."""


@dataclass(frozen=True)
class ClockFit:
    """Linear map between Alice's slots and Bob's clock: t(slot) = offset_ps + slot * period_ps.

    Held as t(slot) = ref_time_ps + (slot - ref_slot) * period_ps with integer references.
    """

    ref_slot: int
    ref_time_ps: int
    period_ps: float
    nominal_period_ps: float
    residual_rms_ps: float
    n_sync: int

    @property
    def drift_ppm(self) -> float:
        return (self.period_ps / self.nominal_period_ps - 1.0) * 1e6

    @property
    def offset_ps(self) -> float:
        """Bob's clock reading of slot 0 (float: may be far from the data)."""
        return self.ref_time_ps - self.ref_slot * self.period_ps

    def time_of_slot(self, slot: int) -> float:
        return self.ref_time_ps + (slot - self.ref_slot) * self.period_ps


@dataclass(frozen=True)
class FitReport:
    """How the sync events were used by ``fit_clock``."""

    n_sync_events: int
    n_used: int
    n_off_grid: int
    n_off_pattern: int
    n_outliers: int
    n_segments: int
    n_segments_matched: int


# --------------------------------------------------------------------------------------------
# Kernels


@nb.njit(cache=True, nogil=True, inline="always")
def nearest_slot(t_ps, ref_time_ps, ref_slot, inv_period, period_ps, gate_ps):
    """(slot, within gate) of one int64 ps time tag; inv_period = 1.0 / period_ps.

    The one definition of the rounding, shared by ``assign_slots`` and the fused sifting path
    so that both give the same slot and gate decision to the last bit.
    """
    x = np.float64(t_ps - ref_time_ps) * inv_period
    r = np.floor(x + 0.5)
    return ref_slot + np.int64(r), abs(x - r) * period_ps <= gate_ps


@nb.njit(cache=True, nogil=True)
def _assign_kernel(timestamps_ps, ref_time_ps, ref_slot, period_ps, gate_ps, slots, valid):
    """Nearest slot of each int64 ps time tag; valid (uint8 0/1) when within gate_ps of its
    centre. Returns the number rejected."""
    inv = 1.0 / period_ps
    rejected = 0
    for i in range(timestamps_ps.size):
        s, ok = nearest_slot(timestamps_ps[i], ref_time_ps, ref_slot, inv, period_ps, gate_ps)
        slots[i] = s
        valid[i] = ok
        rejected += 1 - ok
    return rejected


@nb.njit(cache=True, nogil=True)
def _chain_sync(t_sync, interval_ps, gate_ps, max_gap, reanchor_after, segment, index):
    """Relative sync index of each sync time tag (int64 ps, ascending).

    The grid time of the current index is a smoothed estimate (each accepted event pulls it by
    1/8 of its residual), so a noise click accepted inside the gate cannot push the grid far
    enough to reject the next true sync. segment/index int64 out: segment number and index
    within it, -1/-1 for skipped events. Returns the number of segments.
    """
    n_seg = 0
    have = False
    base_t = np.int64(0)
    grid = 0.0
    anchor_n = np.int64(0)
    misses = 0
    for i in range(t_sync.size):
        t = t_sync[i]
        if have:
            rel = np.float64(t - base_t) - grid
            m = np.floor(rel / interval_ps + 0.5)
            resid = rel - m * interval_ps
            if abs(resid) <= gate_ps and m <= max_gap:
                anchor_n += np.int64(m)
                grid += m * interval_ps + 0.125 * resid
                segment[i] = n_seg - 1
                index[i] = anchor_n
                misses = 0
                continue
            misses += 1
            if misses < reanchor_after and m <= max_gap:
                segment[i] = -1
                index[i] = -1
                continue
        n_seg += 1
        have = True
        base_t = t
        grid = 0.0
        anchor_n = 0
        misses = 0
        segment[i] = n_seg - 1
        index[i] = 0
    return n_seg


@nb.njit(cache=True, nogil=True, inline="always")
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@nb.njit(cache=True, nogil=True)
def _match_word(expected, word):
    """Slide a 64-bit window over expected (uint8 0/1); word holds observed bits, first bit in
    the MSB. Returns (best position, its Hamming distance, second-best distance)."""
    best_pos = -1
    best = 65
    second = 65
    if expected.size < 64:
        return best_pos, best, second
    w = np.uint64(0)
    for i in range(64):
        w = (w << np.uint64(1)) | np.uint64(expected[i])
    for p in range(expected.size - 63):
        if p > 0:
            w = (w << np.uint64(1)) | np.uint64(expected[p + 63])
        d = np.int64(_popcount64(w ^ word))
        if d < best:
            second = best
            best = d
            best_pos = p
        elif d < second:
            second = d
    return best_pos, best, second


# --------------------------------------------------------------------------------------------
# Fitting


def _lsq(slots: np.ndarray, times: np.ndarray) -> tuple[int, int, float, np.ndarray]:
    """Least-squares line time(slot); returns ref_slot, ref_time_ps, period_ps, residuals."""
    s0 = int(slots[0])
    t0 = int(times[0])
    x = (slots - s0).astype(np.float64)
    y = (times - t0).astype(np.float64)
    xm, ym = x.mean(), y.mean()
    var = np.dot(x - xm, x - xm)
    if var <= 0:
        raise AlignmentError("all usable sync events fall on one slot: cannot fit a period")
    period = float(np.dot(x - xm, y - ym) / var)
    # reference at the centre of the data keeps extrapolation error symmetric
    ref_slot = s0 + int(round(xm))
    ref_time = t0 + int(round(ym + (ref_slot - s0 - xm) * period))
    resid = y - ((ref_time - t0) + (x - (ref_slot - s0)) * period)
    return ref_slot, ref_time, period, resid


def _robust_fit(slots, times, nominal_period_ps):
    """LSQ, drop points beyond 6 robust sigma (MAD) plus 1 ps, refit."""
    ref_slot, ref_time, period, resid = _lsq(slots, times)
    mad = np.median(np.abs(resid - np.median(resid)))
    keep = np.abs(resid) <= 6 * 1.4826 * mad + 1.0
    n_out = int(keep.size - np.count_nonzero(keep))
    if n_out:
        ref_slot, ref_time, period, resid = _lsq(slots[keep], times[keep])
    rms = float(np.sqrt(np.mean(resid ** 2))) if resid.size else 0.0
    fit = ClockFit(ref_slot, ref_time, period, float(nominal_period_ps), rms,
                   int(resid.size))
    return fit, n_out


def _check_common(nominal_period_ps: float, sync_period: int) -> None:
    if not (np.isfinite(nominal_period_ps) and 1.0 <= nominal_period_ps <= 1e9):
        raise AlignmentError(f"nominal_period_ps {nominal_period_ps} outside 1..1e9 ps")
    if not 1 <= int(sync_period) <= 2**31:
        raise AlignmentError(f"sync_period {sync_period} outside 1..2**31 slots")


def _sync_times(timestamps_ps, channels) -> np.ndarray:
    t = np.asarray(timestamps_ps)
    if t.ndim != 1 or t.dtype != np.int64:
        raise AlignmentError(f"timestamps_ps: expected a 1-D int64 array, got {t.dtype} {t.shape}")
    if channels is None:
        return np.ascontiguousarray(t)
    c = np.asarray(channels)
    if c.shape != t.shape or c.dtype != np.uint8:
        raise AlignmentError(f"channels: expected uint8 of shape {t.shape}, got {c.dtype} "
                             f"{c.shape}")
    return np.ascontiguousarray(t[c == SYNC_CHANNEL])


def fit_clock(timestamps_ps, channels, *, nominal_period_ps: float, sync_period: int,
              sync_on_bits, first_sync_index: int = 0, chain_gate_frac: float = 0.2,
              min_segment_syncs: int = 96, max_mismatch_frac: float = 0.1,
              with_report: bool = False):
    """Acquire the clock from sync events alone: no prior offset or drift is needed.

    timestamps_ps int64 ascending; channels uint8 (only SYNC_CHANNEL events are used; pass
    ``channels=None`` if ``timestamps_ps`` already holds sync events only). ``sync_on_bits``
    (uint8 0/1) is the expected on/off bit of sync indices ``first_sync_index + i``; it must
    cover the data's sync indices (that range is the search range of the absolute offset).
    Returns ``ClockFit``, or ``(ClockFit, FitReport)`` with ``with_report``.
    """
    _check_common(nominal_period_ps, sync_period)
    if not 0.01 <= chain_gate_frac <= 0.45:
        raise AlignmentError(f"chain_gate_frac {chain_gate_frac} outside 0.01..0.45")
    if min_segment_syncs < _MATCH_BITS:
        raise AlignmentError(f"min_segment_syncs {min_segment_syncs} below {_MATCH_BITS}")
    expected = np.ascontiguousarray(sync_on_bits, dtype=np.uint8)
    if expected.ndim != 1 or (expected.size and expected.max() > 1):
        raise AlignmentError("sync_on_bits: expected a 1-D array of 0/1")
    t_sync = _sync_times(timestamps_ps, channels)
    if t_sync.size > 1 and np.any(np.diff(t_sync) < 0):
        raise AlignmentError("timestamps_ps: sync events are not in ascending order")
    interval = float(nominal_period_ps) * int(sync_period)
    # a gap of m intervals drifts by m * interval * MAX_DRIFT_PPM: keep that under a tenth of the
    # gate so the rounding stays exact
    max_gap = max(1, int(0.1 * chain_gate_frac / (MAX_DRIFT_PPM * 1e-6)))
    segment = np.empty(t_sync.size, np.int64)
    index = np.empty(t_sync.size, np.int64)
    n_seg = _chain_sync(t_sync, interval, chain_gate_frac * interval, np.int64(max_gap),
                        16, segment, index)
    n_off_grid = int(np.count_nonzero(segment < 0))

    abs_index = np.full(t_sync.size, -1, np.int64)
    n_matched = 0
    for seg in range(n_seg):
        members = np.flatnonzero(segment == seg)
        idx = index[members]
        span = int(idx[-1]) + 1 if idx.size else 0
        if span < min_segment_syncs:
            continue
        observed = np.zeros(span, np.uint8)
        observed[idx] = 1
        word = np.uint64(int("".join(map(str, observed[:_MATCH_BITS])), 2))
        pos, best, second = _match_word(expected, word)
        if pos < 0 or best > _MATCH_BITS * max_mismatch_frac or second <= best + 8:
            continue  # no match, or not unique enough to trust
        if pos + span > expected.size:
            continue  # segment runs past the bits the caller supplied
        mismatches = int(np.count_nonzero(expected[pos:pos + span] != observed))
        if mismatches > max_mismatch_frac * span:
            continue
        abs_index[members] = idx + pos + int(first_sync_index)
        n_matched += 1
    used = abs_index >= 0
    if n_matched == 0:
        raise AlignmentError(f"no sync segment matched the expected on/off sequence "
                             f"({t_sync.size} sync events, {n_seg} segments, need a segment "
                             f"spanning >= {min_segment_syncs} sync intervals)")
    # drop events at sync indices that should be dark (noise that fell on the grid)
    on = expected[np.where(used, abs_index - int(first_sync_index), 0)] == 1
    n_off_pattern = int(np.count_nonzero(used & ~on))
    used &= on
    slots = abs_index[used] * int(sync_period)
    fit, n_out = _robust_fit(slots, t_sync[used], nominal_period_ps)
    if abs(fit.drift_ppm) > MAX_DRIFT_PPM:
        raise AlignmentError(f"fitted drift {fit.drift_ppm:.3f} ppm outside +-{MAX_DRIFT_PPM} "
                             f"ppm: wrong nominal_period_ps?")
    if not with_report:
        return fit
    return fit, FitReport(int(t_sync.size), fit.n_sync, n_off_grid, n_off_pattern, n_out,
                          int(n_seg), n_matched)


def assign_slots(timestamps_ps, fit: ClockFit, gate_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """Absolute slot (int64) of each event and a validity mask (bool): |t - centre| <= gate_ps.

    A gate of half a slot or more accepts every event.
    """
    t = np.asarray(timestamps_ps)
    if t.ndim != 1 or t.dtype != np.int64:
        raise AlignmentError(f"timestamps_ps: expected a 1-D int64 array, got {t.dtype} {t.shape}")
    if not 0.0 <= gate_ps < np.inf:
        raise AlignmentError(f"gate_ps {gate_ps} outside 0..inf")
    slots = np.empty(t.size, np.int64)
    valid = np.empty(t.size, np.bool_)
    _assign_kernel(np.ascontiguousarray(t), np.int64(fit.ref_time_ps), np.int64(fit.ref_slot),
                   float(fit.period_ps), float(gate_ps), slots, valid)
    return slots, valid


# --------------------------------------------------------------------------------------------
# Tracking


@dataclass
class TrackerCounts:
    """Running totals of a ``SlotTracker``."""

    n_events: int = 0
    n_rejected: int = 0
    n_unaligned: int = 0
    n_sync_used: int = 0
    n_sync_off_pattern: int = 0
    n_refits: int = 0
    n_chunks_without_refit: int = 0


@dataclass
class SlotTracker:
    """Acquire on the first chunk with enough syncs, then refit chunk by chunk.

    ``gate_ps``: events farther than this from their slot centre are rejected; if None the gate
    is ``gate_sigma`` times the sync residual rms (floored at 1 ps), capped at half a slot.
    Events of chunks before acquisition are returned invalid and counted as unaligned.
    """

    nominal_period_ps: float
    sync_period: int
    sync_on_bits: np.ndarray
    first_sync_index: int = 0
    gate_ps: float | None = None
    gate_sigma: float = 3.0
    sync_gate_sigma: float = 6.0
    min_refit_syncs: int = 16
    fit: ClockFit | None = None
    counts: TrackerCounts = field(default_factory=TrackerCounts)

    def __post_init__(self):
        _check_common(self.nominal_period_ps, self.sync_period)
        self.sync_on_bits = np.ascontiguousarray(self.sync_on_bits, dtype=np.uint8)
        if self.gate_ps is not None and self.gate_ps < 0:
            raise AlignmentError(f"gate_ps {self.gate_ps} must be >= 0")

    def event_gate_ps(self) -> float:
        half = self.fit.period_ps / 2
        if self.gate_ps is not None:
            return min(float(self.gate_ps), half)
        return min(max(self.gate_sigma * self.fit.residual_rms_ps, 1.0), half)

    def update(self, timestamps_ps, channels) -> tuple[np.ndarray, np.ndarray]:
        """Slots and validity of one chunk of events (int64 ps ascending, uint8 channels)."""
        t = np.asarray(timestamps_ps)
        c = np.asarray(channels)
        self.counts.n_events += int(t.size)
        if self.fit is None:
            try:
                self.fit = fit_clock(t, c, nominal_period_ps=self.nominal_period_ps,
                                     sync_period=self.sync_period,
                                     sync_on_bits=self.sync_on_bits,
                                     first_sync_index=self.first_sync_index)
            except AlignmentError:
                self.counts.n_unaligned += int(t.size)
                return np.full(t.size, -1, np.int64), np.zeros(t.size, np.bool_)
            self.counts.n_sync_used += self.fit.n_sync
        else:
            self._refit(t, c)
        slots, valid = assign_slots(t, self.fit, self.event_gate_ps())
        self.counts.n_rejected += int(valid.size - np.count_nonzero(valid))
        return slots, valid

    def _refit(self, t: np.ndarray, c: np.ndarray) -> None:
        fit = self.fit
        t_sync = _sync_times(t, c)
        sync_gate = min(max(self.sync_gate_sigma * fit.residual_rms_ps, 2.0), fit.period_ps / 2)
        s, ok = assign_slots(t_sync, fit, sync_gate)
        sync_period = int(self.sync_period)
        ok &= (s % sync_period) == 0
        k = s // sync_period - int(self.first_sync_index)
        known = ok & (k >= 0) & (k < self.sync_on_bits.size)
        dark = np.zeros_like(ok)
        dark[known] = self.sync_on_bits[k[known]] == 0
        self.counts.n_sync_off_pattern += int(np.count_nonzero(dark))
        ok &= ~dark
        if np.count_nonzero(ok) < self.min_refit_syncs:
            self.counts.n_chunks_without_refit += 1
            return
        new_fit, _ = _robust_fit(s[ok], t_sync[ok], self.nominal_period_ps)
        self.fit = new_fit
        self.counts.n_sync_used += new_fit.n_sync
        self.counts.n_refits += 1

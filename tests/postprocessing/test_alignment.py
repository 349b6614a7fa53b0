"""Slot alignment on synthetic time tags made with numpy and the board's sync sequence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.alignment import (
    AlignmentError,
    ClockFit,
    SlotTracker,
    assign_slots,
    fit_clock,
)
from firmware_protocol.wire_facts import SYNC_CHANNEL
from sim_backend.pattern import sync_on, sync_slots

SYNC_KEY = 0x5EED


def clock(slots, offset_ps, period_ps, jitter_ps, rng):
    return np.round(offset_ps + slots * period_ps + rng.normal(0, jitter_ps, slots.size)
                    ).astype(np.int64)


def expected_bits(stop_slot, sync_period):
    return sync_on(SYNC_KEY, np.arange(stop_slot // sync_period + 2))


def make_run(rng, *, start, n_slots, sync_period, offset_ps, drift_ppm, jitter_ps,
             period0=1000.0, n_clicks=3000, miss=0.0, n_noise=0):
    """Sync and detector events of slots [start, start + n_slots), merged and time-sorted."""
    period = period0 * (1 + drift_ppm * 1e-6)
    sync = sync_slots(SYNC_KEY, start, start + n_slots, sync_period)
    sync = sync[rng.random(sync.size) >= miss]
    clicks = np.sort(rng.choice(n_slots, size=n_clicks, replace=False)) + start
    t_sync = clock(sync, offset_ps, period, jitter_ps, rng)
    t_click = clock(clicks, offset_ps, period, jitter_ps, rng)
    t_noise = rng.integers(t_sync.min(), t_sync.max(), n_noise) if n_noise else np.zeros(0, np.int64)
    t = np.concatenate([t_sync, t_click, t_noise])
    ch = np.concatenate([np.full(sync.size, SYNC_CHANNEL, np.uint8),
                         rng.integers(0, 4, clicks.size).astype(np.uint8),
                         np.full(n_noise, SYNC_CHANNEL, np.uint8)])
    truth = np.concatenate([sync, clicks, np.full(n_noise, -1, np.int64)])
    order = np.argsort(t, kind="stable")
    return t[order], ch[order], truth[order], sync.size


def drift_sigma_ppm(jitter_ps, n_sync, span_slots, period0=1000.0):
    """LSQ slope sigma for n points spread evenly over span: sigma_t * sqrt(12 / n) / span."""
    return jitter_ps * np.sqrt(12.0 / n_sync) / span_slots / period0 * 1e6


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1),
       sync_period=st.sampled_from([16, 64, 250]),
       drift_ppm=st.floats(-10, 10),
       jitter_ps=st.floats(1, 40))
def test_fit_recovers_offset_drift_and_every_slot(seed, sync_period, drift_ppm, jitter_ps):
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, 10**8))
    offset = int(rng.integers(-10**13, 10**13))  # far larger than any sync interval
    n_slots = 200 * sync_period * 8
    t, ch, truth, n_sync = make_run(rng, start=start, n_slots=n_slots, sync_period=sync_period,
                                    offset_ps=offset, drift_ppm=drift_ppm, jitter_ps=jitter_ps)
    fit = fit_clock(t, ch, nominal_period_ps=1000.0, sync_period=sync_period,
                    sync_on_bits=expected_bits(start + n_slots, sync_period))
    assert fit.n_sync == n_sync
    # 6 sigma of the least-squares slope (sigma from the jitter and the sync spread)
    assert abs(fit.drift_ppm - drift_ppm) < 6 * drift_sigma_ppm(jitter_ps, n_sync, n_slots)
    slots, valid = assign_slots(t, fit, gate_ps=500.0)
    assert valid.all()
    np.testing.assert_array_equal(slots, truth)  # jitter << period: every slot exact
    # the offset is an extrapolation to slot 0: compare it through the slope sigma
    assert abs(fit.offset_ps - offset) < 6 * jitter_ps + abs(fit.period_ps - 1000.0 * (
        1 + drift_ppm * 1e-6)) * (start + n_slots) + 1.0


def test_missing_syncs_and_noise_clicks():
    rng = np.random.default_rng(7)
    start, n_slots, sp = 123_456_789, 64 * 4000, 64
    t, ch, truth, n_sync = make_run(rng, start=start, n_slots=n_slots, sync_period=sp,
                                    offset_ps=-987_654_321_000, drift_ppm=-9.5, jitter_ps=25,
                                    miss=0.05, n_noise=200)
    fit, report = fit_clock(t, ch, nominal_period_ps=1000.0, sync_period=sp,
                            sync_on_bits=expected_bits(start + n_slots, sp), with_report=True)
    # every true sync is used; a noise click survives only by landing within the fit's
    # outlier gate of an "on" sync slot, which the report must account for
    assert report.n_used >= n_sync
    assert report.n_used - n_sync <= report.n_sync_events - n_sync
    assert report.n_off_grid + report.n_off_pattern + report.n_outliers > 0
    slots, valid = assign_slots(t, fit, gate_ps=4 * 25)
    real = truth >= 0
    ok = valid & real
    np.testing.assert_array_equal(slots[ok], truth[ok])
    # 4-sigma Gaussian gate: expected loss 6.3e-5 of real events; allow 5 binomial sigma
    p = 6.3e-5
    assert (real & ~valid).sum() <= real.sum() * p + 5 * np.sqrt(real.sum() * p) + 1


def test_too_few_syncs_raises():
    rng = np.random.default_rng(1)
    t, ch, _, _ = make_run(rng, start=0, n_slots=64 * 50, sync_period=64, offset_ps=0,
                           drift_ppm=0, jitter_ps=10)
    with pytest.raises(AlignmentError, match="segment"):
        fit_clock(t, ch, nominal_period_ps=1000.0, sync_period=64,
                  sync_on_bits=expected_bits(64 * 50, 64))


def test_sequence_outside_supplied_range_is_not_matched():
    rng = np.random.default_rng(2)
    start, n_slots, sp = 64 * 100_000, 64 * 2000, 64
    t, ch, _, _ = make_run(rng, start=start, n_slots=n_slots, sync_period=sp, offset_ps=5,
                           drift_ppm=3, jitter_ps=10)
    with pytest.raises(AlignmentError):
        fit_clock(t, ch, nominal_period_ps=1000.0, sync_period=sp,
                  sync_on_bits=expected_bits(start - 64 * 5000, sp))


@pytest.mark.parametrize("kwargs, match", [
    (dict(nominal_period_ps=0.0), "nominal_period_ps"),
    (dict(sync_period=0), "sync_period"),
    (dict(chain_gate_frac=0.9), "chain_gate_frac"),
])
def test_bad_parameters_raise(kwargs, match):
    args = dict(nominal_period_ps=1000.0, sync_period=64, sync_on_bits=np.zeros(100, np.uint8))
    args.update(kwargs)
    with pytest.raises(AlignmentError, match=match):
        fit_clock(np.zeros(4, np.int64), np.zeros(4, np.uint8), **args)


def test_assign_slots_gate_and_types():
    fit = ClockFit(ref_slot=10, ref_time_ps=10_000, period_ps=1000.0, nominal_period_ps=1000.0,
                   residual_rms_ps=10.0, n_sync=100)
    t = np.array([9_000, 10_040, 10_499, 10_501, 11_960, 20_000], np.int64)
    slots, valid = assign_slots(t, fit, gate_ps=50.0)
    assert slots.tolist() == [9, 10, 10, 11, 12, 20]
    assert valid.tolist() == [True, True, False, False, True, True]
    assert assign_slots(t, fit, gate_ps=600.0)[1].all()
    with pytest.raises(AlignmentError, match="gate_ps"):
        assign_slots(t, fit, gate_ps=-1.0)
    with pytest.raises(AlignmentError, match="int64"):
        assign_slots(t.astype(np.float64), fit, gate_ps=50.0)


def test_tracker_follows_slowly_changing_drift():
    """Drift ramps from -8 to -5 ppm: one global line is off by slots, chunk refits are not."""
    rng = np.random.default_rng(11)
    sp, chunk, n_chunks, jitter = 64, 500_000, 24, 20.0
    start, offset = 77_000_000, 3_141_592_653_589
    total = chunk * n_chunks
    d0, d1 = -8.0, -5.0
    k = (d1 - d0) / total  # ppm per slot

    def t_of(slots):
        x = (slots - start).astype(np.float64)
        drift_int = d0 * x + 0.5 * k * x * x  # integral of the drift over the run, ppm * slots
        return np.round(offset + slots * 1000.0 + 1000.0 * 1e-6 * drift_int
                        + rng.normal(0, jitter, slots.size)).astype(np.int64)

    tracker = SlotTracker(nominal_period_ps=1000.0, sync_period=sp,
                          sync_on_bits=expected_bits(start + total, sp))
    n_valid = n_real = 0
    all_t, all_truth = [], []
    for c in range(n_chunks):
        lo = start + c * chunk
        sync = sync_slots(SYNC_KEY, lo, lo + chunk, sp)
        clicks = np.sort(rng.choice(chunk, size=4000, replace=False)) + lo
        slots_true = np.concatenate([sync, clicks])
        ch = np.concatenate([np.full(sync.size, SYNC_CHANNEL, np.uint8),
                             np.zeros(clicks.size, np.uint8)])
        t = t_of(slots_true)
        order = np.argsort(t, kind="stable")
        t, ch, slots_true = t[order], ch[order], slots_true[order]
        slots, valid = tracker.update(t, ch)
        np.testing.assert_array_equal(slots[valid], slots_true[valid])
        n_valid += int(valid.sum())
        n_real += t.size
        all_t.append(t)
        all_truth.append(slots_true)
    assert tracker.counts.n_refits == n_chunks - 1
    assert abs(tracker.fit.drift_ppm - d1) < 0.2
    # 3-sigma gate on Gaussian jitter keeps 99.73 %; 5 binomial sigma below that
    p = 0.9973
    assert n_valid >= n_real * p - 5 * np.sqrt(n_real * p * (1 - p))
    # a single fit over the whole run cannot do this: the drift ramp bends the line by slots
    t, truth = np.concatenate(all_t), np.concatenate(all_truth)
    line = np.polyfit((truth - start).astype(float), (t - offset).astype(float), 1)
    worst = np.max(np.abs((t - offset) - np.polyval(line, (truth - start).astype(float))))
    assert worst > 500.0


def test_tracker_without_syncs_reports_unaligned():
    tracker = SlotTracker(nominal_period_ps=1000.0, sync_period=64,
                          sync_on_bits=expected_bits(10**6, 64))
    slots, valid = tracker.update(np.arange(10, dtype=np.int64) * 1000, np.zeros(10, np.uint8))
    assert not valid.any() and tracker.counts.n_unaligned == 10 and tracker.fit is None


def test_tracker_with_missing_syncs_and_noise_clicks():
    rng = np.random.default_rng(21)
    sp, chunk, n_chunks, jitter = 100, 400_000, 5, 30.0
    start, offset, period = 9_000_000, -55_555_555_555, 1000.0 * (1 + 6.6e-6)
    tracker = SlotTracker(nominal_period_ps=1000.0, sync_period=sp, gate_ps=5 * jitter,
                          sync_on_bits=expected_bits(start + chunk * n_chunks, sp))
    for c in range(n_chunks):
        lo = start + c * chunk
        sync = sync_slots(SYNC_KEY, lo, lo + chunk, sp)
        sync = sync[rng.random(sync.size) >= 0.1]  # 10 % of sync pulses lost
        clicks = np.sort(rng.choice(chunk, size=3000, replace=False)) + lo
        truth = np.concatenate([sync, clicks])
        t = clock(truth, offset, period, jitter, rng)
        t_noise = rng.integers(t.min(), t.max(), 300)  # dark counts on the sync detector
        t = np.concatenate([t, t_noise])
        ch = np.concatenate([np.full(sync.size, SYNC_CHANNEL, np.uint8),
                             np.ones(clicks.size, np.uint8),
                             np.full(t_noise.size, SYNC_CHANNEL, np.uint8)])
        truth = np.concatenate([truth, np.full(t_noise.size, -1, np.int64)])
        order = np.argsort(t, kind="stable")
        slots, valid = tracker.update(t[order], ch[order])
        real = truth[order] >= 0
        np.testing.assert_array_equal(slots[valid & real], truth[order][valid & real])
    # every chunk refitted despite losses and noise
    assert tracker.counts.n_refits == n_chunks - 1
    assert tracker.counts.n_chunks_without_refit == 0
    # LSQ slope sigma: 30 ps * sqrt(12 / ~1800 syncs) / 4e5 slots -> ~0.006 ppm; 0.05 is ~8 sigma
    assert abs(tracker.fit.drift_ppm - 6.6) < 8 * drift_sigma_ppm(jitter, 1800, chunk)

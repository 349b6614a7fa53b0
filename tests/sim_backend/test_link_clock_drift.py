"""Bob's clock (offset, drift, jitter), the sync pulses, and the fibre's polarization drift.

Tolerance K = 5 standard deviations of each estimator (stated per test). Fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np

from sim_backend.controls import LinkControls
from sim_backend.link import LinkSimulator, bob_outcomes
from sim_backend.params import LinkParams
from firmware_protocol.wire_facts import SYNC_CHANNEL
from sim_backend.pattern import sync_slots
from sim_backend.physics import theory
from sim_backend.physics.channel import drift_step

K = 5.0


def test_timestamps_follow_offset_drift_and_jitter():
    p = LinkParams.preset("gys", distance_km=0.0, clock_offset_ps=123_456_789,
                          clock_drift_ppm=7.5, jitter_ps=50.0)
    chunk = LinkSimulator(p, seed=51).run_slots(4_000_000)
    slots = chunk.true_slots.astype(np.float64)
    period = 1e12 / p.clock_hz * (1 + p.clock_drift_ppm * 1e-6)
    residual = chunk.timestamps_ps - (p.clock_offset_ps + slots * period)
    n = residual.size
    # Residuals are the Gaussian jitter (+ rounding, variance 1/12 ps^2): mean 0, sd jitter.
    sd = math.sqrt(p.jitter_ps ** 2 + 1 / 12)
    assert abs(residual.mean()) <= K * sd / math.sqrt(n)
    assert abs(residual.std() - sd) <= K * sd / math.sqrt(2 * n)
    # Least-squares slope recovers the drifted period: sd(slope) = jitter / sqrt(Sxx).
    x = slots - slots.mean()
    slope = float(x @ (chunk.timestamps_ps - chunk.timestamps_ps.mean())) / float(x @ x)
    assert abs(slope - period) <= K * sd / math.sqrt(float(x @ x))
    assert abs(period - 1000.0) > 20 * sd / math.sqrt(float(x @ x))   # drift is resolvable


def test_sync_pulses_are_all_there_and_only_on_sync_slots():
    p = LinkParams.preset("gys", distance_km=200.0, sync_period=1000, jitter_ps=20.0)
    controls = LinkControls(switch_port=2)                 # no quantum signal at all
    sim = LinkSimulator(p, controls, seed=52)
    first = sim.run_slots(1_000_500)
    second = sim.run_slots(999_500)
    for chunk in (first, second):
        got = np.sort(chunk.true_slots[chunk.channels == SYNC_CHANNEL])
        want = sync_slots(sim.sync_key, chunk.first_slot, chunk.first_slot + chunk.n_slots,
                          p.sync_period)
        np.testing.assert_array_equal(got, want)
        assert np.all(got % p.sync_period == 0)
    # About half of the sync indices carry a pulse (binomial, p = 1/2, 2000 indices).
    n_sync = np.count_nonzero(first.channels == SYNC_CHANNEL) + np.count_nonzero(
        second.channels == SYNC_CHANNEL)
    assert abs(n_sync - 1000) <= K * math.sqrt(2000 * 0.25)


def test_fibre_random_walk_decorrelates_as_exp_minus_sigma2_t():
    rng = np.random.default_rng(53)
    sigma, t = 1.0, 0.3
    s = np.array([1.0, 0.0, 0.0])
    values = np.array([s @ drift_step(rng, sigma, t) @ s for _ in range(1500)])
    expected = theory.drifted_alignment(sigma, t)
    # Mean of 1500 bounded samples: sigma of the mean from the sample spread.
    assert abs(values.mean() - expected) <= K * values.std(ddof=1) / math.sqrt(values.size)
    r = drift_step(rng, sigma, t)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) > 0


def sifted_errors(sim: LinkSimulator, chunk, rng) -> tuple[int, int]:
    slots, det, _ = bob_outcomes(chunk.true_slots, chunk.channels, rng)
    pat = sim.alice_pattern(slots)
    sifted = (det >> 1) == ((pat >> 1) & 1)
    errors = sifted & ((det & 1) != (pat & 1))
    return int(sifted.sum()), int(errors.sum())


def run_drifting_link(compensate: bool):
    p = LinkParams.preset("gys", distance_km=0.0, clock_hz=1e6, dead_time_ns=0.0,
                          polarization_drift_rad_per_sqrt_s=1.5, p_signal=1.0, p_decoy1=0.0)
    controls = LinkControls()
    for det in controls.detectors:
        det.dead_time_ns = 0.0
    sim = LinkSimulator(p, controls, seed=54)
    rng = np.random.default_rng(55)
    rows = []
    for _ in range(40):                                    # 40 chunks of 50 ms
        if compensate:
            with controls.lock:
                controls.controller_rotation = controls.fibre_rotation.T.copy()
        net = controls.net_rotation()
        chunk = sim.run_slots(50_000)
        sifted, errors = sifted_errors(sim, chunk, rng)
        rows.append((sifted, errors, theory.expected_link(p, net_rotation=net).qber))
    return np.array(rows)


def test_polarization_drift_raises_qber_unless_compensated():
    drifting = run_drifting_link(compensate=False)
    fixed = run_drifting_link(compensate=True)
    for rows in (drifting, fixed):
        sifted, errors, e = rows[:, 0], rows[:, 1], rows[:, 2]
        # Errors per chunk ~ Binomial(sifted, e(R_chunk)) for the rotation of that chunk.
        assert abs(errors.sum() - (sifted * e).sum()) <= K * math.sqrt(
            (sifted * e * (1 - e)).sum())
    fixed_qber = fixed[:, 1].sum() / fixed[:, 0].sum()
    late = drifting[20:]
    late_qber = late[:, 1].sum() / late[:, 0].sum()
    e_det = 0.033
    assert abs(fixed_qber - e_det) <= K * math.sqrt(e_det * (1 - e_det) / fixed[:, 0].sum())
    assert late_qber > 2 * e_det                           # after 1-2 s: sigma^2 t >= 2
    assert drifting[0, 2] < 0.04                           # it started aligned

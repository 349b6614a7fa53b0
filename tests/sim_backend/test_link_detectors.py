"""Bob's detectors and the device settings in LinkControls, seen through the link physics.

Tolerance K = 5 standard deviations of the estimator; each test states the law it uses
(binomial, renewal process, compound Poisson). Fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim_backend.controls import LinkControls
from sim_backend.link import LinkSimulator, simulate
from sim_backend.params import LinkParams
from firmware_protocol.wire_facts import SYNC_CHANNEL
from sim_backend.physics import theory
from sim_backend.physics.channel import rotation_about

K = 5.0


def binomial_sigma(p: float, n: float) -> float:
    return math.sqrt(p * (1 - p) / n)


def bb84_click_probability(mu_eta: float, e_det: float, y0: float) -> np.ndarray:
    """(4,) mean click probability per slot of each detector, BB84 with unbiased bases.

    Written out from the model (Poisson splitting: detector k sees mean mu*eta*q_k), so that
    the simulator is checked against an independent derivation.
    """
    v = 1 - 2 * e_det
    dark = 1 - (1 - y0) ** 0.25
    states = [(1, 0), (-1, 0), (0, 1), (0, -1)]            # (s1, s2) of H, V, D, A
    p = np.zeros(4)
    for s1, s2 in states:
        q = np.array([1 + v * s1, 1 - v * s1, 1 + v * s2, 1 - v * s2]) / 4
        p += (1 - (1 - dark) * np.exp(-mu_eta * q)) / 4
    return p


def params(**overrides) -> LinkParams:
    base = dict(distance_km=0.0, p_signal=1.0, p_decoy1=0.0, dead_time_ns=0.0,
                dark_count_probability=0.0, misalignment=0.0)
    base.update(overrides)
    return LinkParams.preset("gys", **base)


def bare_controls(**fields) -> LinkControls:
    """Shared controls with the detectors' dead time at 0 (their default is 100 ns)."""
    controls = LinkControls(**fields)
    for det in controls.detectors:
        det.dead_time_ns = 0.0
    return controls


def detector_counts(chunk) -> np.ndarray:
    return np.bincount(chunk.channels[chunk.channels < SYNC_CHANNEL], minlength=4)


def test_dead_time_from_detector_settings_follows_renewal_theory():
    p = params()
    controls = LinkControls()
    for det in controls.detectors:
        det.dead_time_ns = 1000.0                          # 999 blocked slots at 1 GHz
    n = 20_000_000
    chunk = LinkSimulator(p, controls, seed=31).run_slots(n)
    p_bar = bb84_click_probability(p.mu * p.transmittance, 0.0, 0.0)
    dead = 999
    counts = detector_counts(chunk)
    for k in range(4):
        pk = p_bar[k]
        rate = pk * theory.dead_time_live_fraction(pk, dead)
        # Renewal CLT: Var N = n var(cycle) / mean(cycle)^3, cycle = D + Geometric(p).
        mean_cycle = dead + 1 / pk
        var_n = n * ((1 - pk) / pk ** 2) / mean_cycle ** 3
        assert abs(counts[k] - n * rate) <= K * math.sqrt(var_n), k
        slots = chunk.true_slots[chunk.channels == k]
        assert np.diff(slots).min() > dead                 # never inside a dead time
    # The same link without the dead time counts far more (live fraction ~ 0.15 here).
    free = LinkSimulator(p, seed=31).run_slots(n)
    assert detector_counts(free).sum() > 5 * counts.sum()


def test_link_dead_time_applies_without_shared_controls():
    p = params(dead_time_ns=500.0)
    sim = LinkSimulator(p, seed=32)
    assert all(d.dead_time_ns == 500.0 for d in sim.controls.detectors)
    chunk = sim.run_slots(2_000_000)
    for k in range(4):
        assert np.diff(chunk.true_slots[chunk.channels == k]).min() >= 500


def test_afterpulses_add_the_expected_extra_clicks():
    p = params(distance_km=25.0, afterpulse_probability=0.2, afterpulse_time_constant_ns=20.0,
               misalignment=0.033, dark_count_probability=1.7e-6)
    n = 50_000_000
    chunk = LinkSimulator(p, seed=33).run_slots(n)
    primary = n * bb84_click_probability(p.mu * p.transmittance, p.misalignment,
                                         p.dark_count_probability).sum()
    total = detector_counts(chunk).sum()
    ap = p.afterpulse_probability
    # Each primary starts a cascade of Geometric(1 - P) clicks: mean 1/(1-P), E[X^2] =
    # (1+P)/(1-P)^2; primaries are Poisson, so Var(total) = lambda (1+P)/(1-P)^2.
    expected = primary * theory.afterpulse_total_factor(ap)
    sigma = math.sqrt(primary * (1 + ap)) / (1 - ap)
    assert abs(total - expected) <= K * sigma


def test_afterpulses_raise_qber_like_background_clicks():
    # An afterpulse repeats a detector on a later, unrelated slot: a random outcome. With P the
    # afterpulse probability, QBER -> e_det (1 - P) + P / 2 (expected_link, first order).
    p = params(distance_km=25.0, afterpulse_probability=0.2, misalignment=0.033,
               dark_count_probability=1.7e-6)
    n = 50_000_000
    r = simulate(p, n, seed=41)
    e = theory.expected_link(p)
    # The closed form ignores dark counts and O(eta mu) = 0.7 % terms that expected_link keeps.
    assert e.qber == pytest.approx(0.033 * 0.8 + 0.1, rel=0.01)
    assert abs(r.detection_probability - e.detection_probability) <= K * binomial_sigma(
        e.detection_probability, n)
    assert abs(r.qber - e.qber) <= K * binomial_sigma(e.qber, r.sifted_bits)


def test_afterpulse_probability_and_delay():
    # Dark counts alone (switch away from the link), so rare that a same-detector gap shorter
    # than 12 time constants is an afterpulse (Poisson coincidence 5e-6 * 60 = 3e-4).
    p = params(dark_count_probability=2e-5, afterpulse_probability=0.5,
               afterpulse_time_constant_ns=5.0)
    controls = bare_controls(switch_port=2)
    n = 1_000_000_000
    chunk = LinkSimulator(p, controls, seed=34).run_slots(n)
    gaps = []
    clicks = 0
    for k in range(4):
        slots = chunk.true_slots[chunk.channels == k]
        clicks += slots.size
        gaps.append(np.diff(slots))
    gaps = np.concatenate(gaps)
    short = gaps[gaps <= 60]
    ap = p.afterpulse_probability
    # Every click (afterpulses too) is followed by an afterpulse with probability P.
    assert abs(short.size / clicks - ap) <= K * binomial_sigma(ap, clicks)
    # Delay after re-arming (dead time 0: the next slot) is geometric with mean tau = 5 slots
    # and variance tau (tau + 1).
    tau = p.afterpulse_time_constant_ns * 1e-9 * p.clock_hz
    mean_delay = (short - 1).mean()
    assert abs(mean_delay - tau) <= K * math.sqrt(tau * (tau + 1) / short.size)


def test_switch_on_another_port_leaves_dark_counts_only():
    p = params(dark_count_probability=1e-4, misalignment=0.033)
    n = 10_000_000
    controls = bare_controls(switch_port=3, link_port=1)
    r = simulate(p, n, seed=35, controls=controls)
    y0 = p.dark_count_probability
    assert abs(r.detection_probability - y0) <= K * binomial_sigma(y0, n)
    # Darks are random outcomes: QBER 1/2 on the sifted half.
    assert abs(r.qber - 0.5) <= K * binomial_sigma(0.5, y0 * n / 2)
    controls.switch_port = 1
    r_open = simulate(p, 1_000_000, seed=35, controls=controls)
    q = theory.gain(p.mu, p.transmittance, y0)
    assert abs(r_open.detection_probability - q) <= K * binomial_sigma(q, 1_000_000)


@pytest.mark.parametrize("axis", ["s1", "s2", "s3"])
def test_controller_rotation_by_90_degrees_raises_qber_as_predicted(axis):
    p = params(misalignment=0.033, dark_count_probability=1.7e-6)
    rot = rotation_about(axis, math.pi / 2)
    controls = bare_controls(controller_rotation=rot)
    n = 3_000_000
    r = simulate(p, n, seed=36, controls=controls)
    # A photon in Alice's basis b errs with (1 - V R_bb)/2 (R_11 for Z, R_22 for X).
    v = 1 - 2 * p.misalignment
    e_photon = 0.5 * (1 - v * rot[0, 0]) / 2 + 0.5 * (1 - v * rot[1, 1]) / 2
    expected = theory.expected_link(p, net_rotation=rot)
    assert expected.qber == pytest.approx(e_photon, abs=1e-3)
    sifted = expected.detection_probability * n / 2
    assert abs(r.qber - expected.qber) <= K * binomial_sigma(expected.qber, sifted)
    assert r.qber > 0.2                                    # far above e_det = 3.3 %


def test_controller_undoes_the_fibre_rotation():
    fibre = rotation_about(np.array([0.3, -0.5, 0.8]), 1.1)
    p = params(misalignment=0.033)
    n = 2_000_000
    scrambled = simulate(p, n, seed=37, controls=bare_controls(fibre_rotation=fibre))
    fixed = simulate(p, n, seed=37, controls=bare_controls(fibre_rotation=fibre,
                                                          controller_rotation=fibre.T))
    for r, rot in ((scrambled, fibre), (fixed, np.eye(3))):
        e = theory.expected_link(p, net_rotation=rot)
        sifted = e.detection_probability * n / 2
        assert abs(r.qber - e.qber) <= K * binomial_sigma(e.qber, sifted)
    assert fixed.qber < 0.05 < scrambled.qber


def test_disabled_detector_never_clicks():
    controls = bare_controls()
    controls.detectors[1].enabled = False
    p = params(dark_count_probability=1e-5)
    chunk = LinkSimulator(p, controls, seed=38).run_slots(2_000_000)
    counts = detector_counts(chunk)
    assert counts[1] == 0 and controls.telemetry[1].counts == 0
    assert all(counts[k] > 0 and controls.telemetry[k].counts == counts[k] for k in (0, 2, 3))


def test_efficiency_setting_scales_the_gain_linearly():
    controls = bare_controls()
    for det in controls.detectors:
        det.efficiency_pct = 20.0                          # twice the nominal 10 %
    p = params(distance_km=50.0)
    n = 100_000_000
    r = simulate(p, n, seed=39, controls=controls)
    q = theory.gain(p.mu, 2 * p.transmittance, 0.0)
    assert abs(r.detection_probability - q) <= K * binomial_sigma(q, n)


def test_efficiency_mismatch_between_detectors():
    p = params(efficiency_mismatch=0.5)
    n = 4_000_000
    counts = detector_counts(LinkSimulator(p, seed=40).run_slots(n))
    # V and A see half the efficiency: their count ratio to H and D is 1/2 (to O(eta mu)).
    high, low = counts[0] + counts[2], counts[1] + counts[3]
    rel = math.sqrt(1 / high + 1 / low)                    # Poisson counts, ratio
    assert abs(low / high - 0.5) <= K * rel * 0.5


def test_b92_dead_time_loads_h_and_d_more_and_theory_follows_each_detector():
    # B92: Alice sends H or D, so H and D fire ~3x as often as V and A and lose more to dead
    # time; the conclusive (V, A) fraction of detections rises above 1/4 (0.36 here; a single
    # shared live fraction would predict ~0.25). The expectation scales each detector by its
    # own live fraction. 5 binomial sigma: dead time makes counts sub-binomial, so the binomial
    # variance bounds the true one from above.
    p = LinkParams.preset("gys", protocol="b92", distance_km=0.0, misalignment=0.0,
                          dead_time_ns=200.0)
    n = 20_000_000
    result = simulate(p, n, seed=35)
    expected = theory.expected_link(p)
    frac = result.sifted_bits / result.detections
    assert expected.conclusive_fraction > 0.26        # the effect is there to be seen
    assert abs(frac - expected.conclusive_fraction) <= K * binomial_sigma(
        expected.conclusive_fraction, result.detections)
    assert abs(result.detection_probability - expected.detection_probability) <= K * math.sqrt(
        expected.detection_probability * (1 - expected.detection_probability) / n)

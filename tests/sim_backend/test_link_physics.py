"""The simulated link against the closed forms of docs/physics.md section 1.

Statistical tolerances: K = 5 standard deviations of the estimator under the binomial (or,
where stated, renewal/compound) law, computed from the EXPECTED rate and the sample size; fixed
seeds. A correct simulator fails one of these checks with probability below 1e-6 each.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim_backend.link import LinkSimulator, bob_outcomes, simulate
from sim_backend.params import LinkParams
from sim_backend.physics import theory
from firmware_protocol.wire_facts import SYNC_CHANNEL
from sim_backend.pattern import pattern_at

K = 5.0


def binomial_sigma(p: float, n: float) -> float:
    """Standard deviation of a frequency estimated from n trials of probability p."""
    return math.sqrt(p * (1.0 - p) / n)


def assert_within(measured: float, expected: float, sigma: float, what: str) -> None:
    assert abs(measured - expected) <= K * sigma, (
        f"{what}: measured {measured:.6g}, expected {expected:.6g}, "
        f"{abs(measured - expected) / sigma:.1f} sigma (limit {K})")


def clean(**overrides) -> LinkParams:
    """GYS with signal pulses only and no dead time: the setting of the reference formulas."""
    base = dict(p_signal=1.0, p_decoy1=0.0, dead_time_ns=0.0)
    base.update(overrides)
    return LinkParams.preset("gys", **base)


@pytest.mark.parametrize("distance_km", [0.0, 50.0, 100.0])
def test_gain_and_qber_follow_gys_formulas(distance_km):
    p = clean(distance_km=distance_km)
    eta, y0 = p.transmittance, p.dark_count_probability
    q = theory.gain(p.mu, eta, y0)
    e = theory.error_rate(p.mu, eta, y0, p.misalignment)
    n = int(1.5e5 / q)                       # about 1.5e5 detections whatever the distance
    r = simulate(p, n, seed=11)
    assert_within(r.detection_probability, q, binomial_sigma(q, n), "gain Q_mu")
    # Half of the detections are sifted (passive 50/50 basis choice at Bob).
    assert_within(r.sifted_bits / r.detections, 0.5, binomial_sigma(0.5, q * n), "sift ratio")
    assert_within(r.qber, e, binomial_sigma(e, q * n / 2), "QBER E_mu")


def test_decoy_gains_and_errors_per_intensity():
    p = LinkParams.preset("gys", distance_km=25.0, dead_time_ns=0.0)
    eta, y0, n = p.transmittance, p.dark_count_probability, 200_000_000
    r = simulate(p, n, seed=12)
    for k, (mu, prob) in enumerate(zip(p.intensities, p.intensity_probabilities)):
        q = theory.gain(mu, eta, y0)
        # Gain estimator clicks_k / (n p_k): clicks_k ~ Binomial(n, p_k q).
        sigma = binomial_sigma(prob * q, n) / prob
        assert_within(r.gains[k], q, sigma, f"gain of intensity {mu}")
        e = theory.error_rate(mu, eta, y0, p.misalignment)
        sifted_expected = n * prob * q / 2
        assert_within(r.error_rates[k], e, binomial_sigma(e, sifted_expected),
                      f"error rate of intensity {mu}")
    assert r.per_intensity[2].detections > 0       # vacuum decoy sees the dark counts


def test_biased_basis_choice_keeps_half_of_detections_and_the_error_rate():
    p = clean(distance_km=0.0, p_basis_x=0.1)
    n = 5_000_000
    r = simulate(p, n, seed=13)
    q = theory.gain(p.mu, p.transmittance, p.dark_count_probability)
    e = theory.error_rate(p.mu, p.transmittance, p.dark_count_probability, p.misalignment)
    assert_within(r.sifted_bits / r.detections, 0.5, binomial_sigma(0.5, q * n), "sift ratio")
    assert_within(r.qber, e, binomial_sigma(e, q * n / 2), "QBER")


def test_b92_conclusive_fraction_and_error_rate():
    # Per detected photon (no dark counts): conclusive = V or A click = 1/4 + e_det/2, of which
    # e_det/2 wrong, so QBER = 2 e_det / (1 + 2 e_det) (section 2's 25 % when e_det = 0).
    p = clean(protocol="b92", distance_km=0.0, dark_count_probability=0.0)
    n = 8_000_000
    r = simulate(p, n, seed=14)
    e = p.misalignment
    q = theory.gain(p.mu, p.transmittance, 0.0)
    conclusive = 0.25 + e / 2
    assert_within(r.detection_probability, q, binomial_sigma(q, n), "gain")
    assert_within(r.conclusive_fraction, conclusive, binomial_sigma(conclusive, q * n),
                  "conclusive fraction")
    qber = 2 * e / (1 + 2 * e)
    assert_within(r.qber, qber, binomial_sigma(qber, q * n * conclusive), "B92 QBER")
    # expected_link is first order in the clicks per slot: it may differ by O(eta mu).
    exp = theory.expected_link(p)
    first_order = p.mu * p.transmittance
    assert exp.conclusive_fraction == pytest.approx(conclusive, rel=first_order)
    assert exp.qber == pytest.approx(qber, rel=first_order)


def double_click_probability(mu_eta: float, e_det: float) -> float:
    """P(two or more detectors click) for a BB84 state, Poisson splitting over the 4 ports."""
    v = 1 - 2 * e_det
    m = mu_eta * np.array([(1 + v) / 4, (1 - v) / 4, 0.25, 0.25])
    none = np.exp(-m)
    p0 = none.prod()
    p1 = sum((1 - none[k]) * np.prod(np.delete(none, k)) for k in range(4))
    return 1 - p0 - p1


def test_multiphoton_pulses_give_double_clicks_in_the_same_slot():
    p = clean(distance_km=0.0, mu=3.0, dark_count_probability=0.0)
    n = 2_000_000
    r = simulate(p, n, seed=15, keep_events=True)
    pd = double_click_probability(p.mu * p.transmittance, p.misalignment)
    assert_within(r.double_clicks / n, pd, binomial_sigma(pd, n), "double clicks per pulse")
    det = r.channels < SYNC_CHANNEL
    slots, counts = np.unique(r.true_slots[det], return_counts=True)
    assert np.count_nonzero(counts >= 2) == r.double_clicks
    # Both detectors of one double click share the slot but are different channels.
    multi = slots[counts >= 2][:50]
    for s in multi:
        chans = r.channels[det][r.true_slots[det] == s]
        assert len(set(chans.tolist())) == chans.size >= 2


def test_squashing_picks_one_detector_per_slot():
    rng = np.random.default_rng(0)
    slots = np.array([5, 5, 9, 12, 12, 12, 12], dtype=np.int64)
    chans = np.array([0, 1, 3, 0, 1, 2, 3], dtype=np.uint8)
    s, det, n = bob_outcomes(slots, chans, rng)
    assert s.tolist() == [5, 9, 12]
    assert n.tolist() == [2, 1, 4]
    assert det[1] == 3
    assert det[0] in (0, 1)
    many = [bob_outcomes(slots, chans, rng)[1][2] for _ in range(400)]
    # Four clicks: each detector should come up (probability 1/4 each; all four seen in 400
    # draws fails with probability < 4 * 0.75^400).
    assert set(many) == {0, 1, 2, 3}


def test_same_seed_same_events_and_pattern_matches_generator():
    p = LinkParams.preset("gys", distance_km=10.0)
    a, b = LinkSimulator(p, seed=42), LinkSimulator(p, seed=42)
    ca, cb = a.run_slots(3_000_000), b.run_slots(3_000_000)
    np.testing.assert_array_equal(ca.timestamps_ps, cb.timestamps_ps)
    np.testing.assert_array_equal(ca.channels, cb.channels)
    assert a.pattern_key == b.pattern_key and a.sync_key == b.sync_key
    other = LinkSimulator(p, seed=43).run_slots(3_000_000)
    assert other.timestamps_ps.size != ca.timestamps_ps.size or not np.array_equal(
        other.timestamps_ps, ca.timestamps_ps)
    slots = ca.true_slots[:100]
    np.testing.assert_array_equal(
        a.alice_pattern(slots), pattern_at(a.pattern_key, slots, p_basis_x=p.p_basis_x,
                                           p_signal=p.p_signal, p_decoy1=p.p_decoy1))


def test_chunks_continue_the_run():
    sim = LinkSimulator(LinkParams.preset("gys", distance_km=0.0), seed=3)
    first = sim.run_slots(100_000)
    second = sim.run_slots(50_000)
    assert (first.first_slot, first.n_slots, second.first_slot) == (0, 100_000, 100_000)
    assert sim.next_slot == 150_000
    assert first.true_slots.min() >= 0 and first.true_slots.max() < 100_000
    assert second.true_slots.min() >= 100_000 and second.true_slots.max() < 150_000
    assert second.timestamps_ps[0] >= first.timestamps_ps[-1] - 10 * sim.params.jitter_ps
    for c in (first, second):
        assert c.timestamps_ps.dtype == np.int64 and c.channels.dtype == np.uint8
        assert c.true_slots.dtype == np.int64
        assert np.all(np.diff(c.timestamps_ps) >= 0)
        assert set(np.unique(c.channels).tolist()) <= {0, 1, 2, 3, SYNC_CHANNEL}


def test_decoy_key_rate_vanishes_near_140_km():
    # docs/physics.md section 1: with f = 1.22 the GYS decoy key rate reaches roughly 140 km.
    def rate(d):
        return theory.decoy_key_rate(0.5, 0.045 * 10 ** (-0.021 * d), 1.7e-6, 0.033)
    assert rate(50) > rate(100) > rate(130) > 0
    assert rate(160) < 0

"""Eavesdropper signatures (docs/physics.md section 2) coming out of the per-pulse physics.

Ideal optics (no misalignment, no dark counts, no dead time, 0 km) so that the figures are
the textbook ones; tolerance K = 5 binomial sigma of each estimator, from the expected rates.
"""

from __future__ import annotations

import math

import pytest

from sim_backend.controls import LinkControls
from sim_backend.link import LinkSimulator, simulate
from sim_backend.params import LinkParams
from sim_backend.physics import theory

K = 5.0
SQRT_HALF = math.sqrt(0.5)


def sigma(p: float, n: float) -> float:
    return math.sqrt(p * (1 - p) / n)


def ideal(protocol: str, eve: str, fraction: float = 1.0, **extra) -> LinkParams:
    values = dict(protocol=protocol, eve=eve, eve_fraction=fraction, distance_km=0.0,
                  misalignment=0.0, dark_count_probability=0.0, dead_time_ns=0.0,
                  p_signal=1.0, p_decoy1=0.0)
    values.update(extra)
    return LinkParams.preset("gys", **values)


# (protocol, model, QBER, conclusive fraction) as tabulated in docs/physics.md section 2.
REFERENCE = [
    ("b92", "intercept-resend", 1 / 3, 0.375),
    ("b92", "b92-resend", 1 / 4, 0.25),
    ("b92", "helstrom", (1 - SQRT_HALF) / 2, 0.25),
    ("b92", "usd", 0.0, 0.25),
    ("b92", "blinding", 0.0, 0.25),
    ("bb84", "intercept-resend", 1 / 4, None),
    ("bb84", "blinding", 0.0, None),
]


@pytest.mark.parametrize("protocol, model, qber, conclusive", REFERENCE)
def test_theory_reproduces_the_reference_signatures(protocol, model, qber, conclusive):
    sig = theory.eve_signature(protocol, model, 1.0, 0.5, 0.045)
    assert sig.qber == pytest.approx(qber, abs=1e-12)
    if conclusive is None:
        assert sig.conclusive_fraction is None
    else:
        assert sig.conclusive_fraction == pytest.approx(conclusive, abs=1e-12)


@pytest.mark.parametrize("protocol, model, qber, conclusive", REFERENCE)
def test_attack_signatures_in_simulation(protocol, model, qber, conclusive):
    p = ideal(protocol, model)
    n = 3_000_000
    r = simulate(p, n, seed=21)
    sig = theory.eve_signature(protocol, model, 1.0, p.mu, p.transmittance)
    det = sig.detection_probability
    assert abs(r.detection_probability - det) <= K * sigma(det, n)
    kept = conclusive if conclusive is not None else 0.5
    assert abs(r.sifted_bits / r.detections - kept) <= K * sigma(kept, det * n)
    if qber == 0.0:
        assert r.errors == 0
    else:
        assert abs(r.qber - qber) <= K * sigma(qber, det * n * kept)


def test_usd_yield_drop():
    # USD forwards only its successes, 1 - 1/sqrt(2) = 0.293 of the caught pulses.
    p = ideal("b92", "usd")
    n = 4_000_000
    attacked = simulate(p, n, seed=22)
    clean = simulate(p.replace(eve="none", eve_fraction=0.0), n, seed=23)
    ratio_expected = ((1 - SQRT_HALF) * (1 - math.exp(-p.mu)) * p.transmittance
                      / (1 - math.exp(-p.mu * p.transmittance)))
    assert ratio_expected == pytest.approx(0.293 * (1 - math.exp(-p.mu)) / p.mu, rel=0.02)
    q_att = attacked.detection_probability
    q_clean = clean.detection_probability
    # Ratio of two independent binomial frequencies: relative variances add.
    rel = math.sqrt(1 / (q_att * n) + 1 / (q_clean * n))
    assert abs(q_att / q_clean - ratio_expected) <= K * rel * ratio_expected


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_bb84_partial_intercept_resend(fraction):
    p = ideal("bb84", "intercept-resend", fraction)
    n = 4_000_000
    r = simulate(p, n, seed=24)
    sig = theory.eve_signature("bb84", "intercept-resend", fraction, p.mu, p.transmittance)
    assert abs(r.qber - sig.qber) <= K * sigma(sig.qber, sig.detection_probability * n / 2)
    # Weighting by detection: attacked pulses are seen (1-e^-mu) eta / (1-e^-eta mu) as often,
    # so the QBER sits a little below f/4 and tends to it as mu -> 0.
    assert sig.qber < fraction / 4
    small_mu = theory.eve_signature("bb84", "intercept-resend", fraction, 1e-4, p.transmittance)
    assert small_mu.qber == pytest.approx(fraction / 4, rel=1e-3)


def test_intercept_resend_with_misalignment_and_darks():
    # Eve right basis: Bob errs with e_det; wrong basis: 1/2. Per sifted bit 1/4 + e_det/2.
    p = ideal("bb84", "intercept-resend", misalignment=0.033)
    n = 3_000_000
    r = simulate(p, n, seed=25)
    exp = theory.expected_link(p)
    e = 0.25 + p.misalignment / 2
    assert exp.qber == pytest.approx(e, rel=1e-9)
    assert abs(r.qber - e) <= K * sigma(e, exp.detection_probability * n / 2)


def test_blinding_shows_in_telemetry_only():
    p = LinkParams.preset("gys", distance_km=10.0, eve="blinding", eve_fraction=1.0)
    controls = LinkControls()
    sim = LinkSimulator(p, controls, seed=26)
    sim.run_slots(2_000_000)
    for tel, det in zip(controls.telemetry, controls.detectors):
        assert tel.photocurrent_ua > 10.0          # blinded: tens of uA instead of ~10 nA
        assert tel.bias_v < 0.8 * det.bias_v
        assert tel.counts > 0
    clean_controls = LinkControls()
    LinkSimulator(p.replace(eve="none", eve_fraction=0.0), clean_controls, seed=27).run_slots(
        2_000_000)
    for tel, det in zip(clean_controls.telemetry, clean_controls.detectors):
        assert tel.photocurrent_ua < 0.1
        assert tel.bias_v == det.bias_v

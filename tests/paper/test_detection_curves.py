"""Simulated abort curves against the analytic ones (qkd_detection).

Tolerance, derived: every simulated point carries an exact Clopper-Pearson interval. With K
points checked, intervals at level 1 - ALPHA/K contain their true value simultaneously with
probability >= 1 - ALPHA (Bonferroni; the nested samples' correlation does not matter for a
union bound). So if the analytic curve is right, this test fails with probability <= ALPHA.
"""

from __future__ import annotations

import math

import pytest

from paper import qkd_detection as det

ALPHA = 1e-3


def test_per_bit_error_matches_the_reference_signatures():
    # Eve on every pulse: honest pulses play no part, so e is the textbook signature
    # (BB84 intercept-resend 1/4; B92: random-basis 1/3, B92 measurement 1/4, Helstrom
    # (1 - 1/sqrt 2)/2, unambiguous discrimination 0)
    expected = {("bb84", "intercept-resend"): 0.25, ("b92", "intercept-resend"): 1 / 3,
                ("b92", "b92-resend"): 0.25,
                ("b92", "helstrom"): (1 - math.sqrt(0.5)) / 2, ("b92", "usd"): 0.0}
    for (proto, model), e in expected.items():
        assert det.error_per_bit(det.link_params(proto, model, 1.0)) == pytest.approx(e, abs=1e-12)


@pytest.mark.slow
def test_simulated_curves_lie_within_their_intervals_of_the_analytic_ones():
    attacks = (("bb84", "intercept-resend"), ("b92", "helstrom"), ("b92", "usd"),
               ("b92", "none"))
    # count the points first, then run at the corrected level
    n_points = 0
    for _, model in attacks:
        n_points += len(det.bit_grid(1024)) if model == "usd" else (
            len(det.bit_grid(64)) + len(det.bit_grid(2048)))
    results = det.run(blocks=60, m_max_any=64, m_max_node=2048, m_max_usd=1024, seed=4242,
                      confidence=1 - ALPHA / n_points, with_decisions=False, attacks=attacks,
                      fractions=(0.75,), log=lambda _m: None)
    checked = 0
    for r in results:
        for c in r.curves:
            for m, a, lo, hi in zip(c.bits, c.analytic, c.ci_low, c.ci_high):
                assert lo <= a <= hi, f"{r.label} {c.test} m={m}: {a:.4f} outside [{lo:.4f}, {hi:.4f}]"
                checked += 1
        # the measured error fraction over every simulated bit: 5 binomial sigma
        if r.model != "usd":
            n = 60 * 2048
            sigma = math.sqrt(max(r.error_per_bit * (1 - r.error_per_bit), 1e-9) / n)
            assert abs(r.error_per_bit_measured - r.error_per_bit) < 5 * sigma + 1e-12
    assert checked == n_points


def test_any_error_curve_is_three_quarters_to_the_m_for_bb84_intercept_resend():
    r = det.qber_attack("bb84", "intercept-resend", 1.0, blocks=5, m_max_any=16, m_max_node=16,
                        seed=1, confidence=0.99)
    c = r.curves[0]
    assert c.test == "any error"
    for m, a in zip(c.bits, c.analytic):
        assert a == pytest.approx(1 - 0.75**m)
    # (3/4)^m <= 1e-6 first at m = 49
    assert r.bits_for_detection == 49

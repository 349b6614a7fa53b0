"""Exact binomial tails and Clopper-Pearson bounds against values computed independently."""

from __future__ import annotations

import math

import pytest

from paper import binomial


def _cdf_by_hand(c, n, p):
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(c + 1))


@pytest.mark.parametrize("c,n,p", [(3, 10, 0.3), (0, 50, 0.02), (40, 100, 0.45), (99, 100, 0.9)])
def test_cdf_and_sf_match_the_sum_of_terms(c, n, p):
    assert binomial.cdf(c, n, p) == pytest.approx(_cdf_by_hand(c, n, p), rel=1e-10, abs=1e-15)
    assert binomial.sf(c, n, p) == pytest.approx(1 - _cdf_by_hand(c, n, p), rel=1e-9, abs=1e-15)


def test_clopper_pearson_defining_equations():
    lo, hi = binomial.clopper_pearson(5, 20, 0.05)
    # the ends are where the tail probabilities equal alpha/2
    assert binomial.sf(4, 20, lo) == pytest.approx(0.025, rel=1e-6)
    assert binomial.cdf(5, 20, hi) == pytest.approx(0.025, rel=1e-6)
    # zero successes: upper end 1 - (alpha/2)^(1/n)
    assert binomial.clopper_pearson(0, 200, 0.05)[1] == pytest.approx(1 - 0.025 ** (1 / 200))


def test_clopper_pearson_refuses_bad_counts():
    with pytest.raises(ValueError, match="successes"):
        binomial.clopper_pearson(5, 3, 0.05)

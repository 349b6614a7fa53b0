"""Exact binomial tails and Clopper-Pearson intervals (no SciPy: the test extra stays small).

Log-space sums of the binomial pmf are exact to float64 rounding for the counts used here
(up to ~1e5 trials; the pulse counts of the yield test reach 1e8 but only their lower tail,
a few thousand terms, is summed).
"""

from __future__ import annotations

import math

import numpy as np

_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def log_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if p <= 0.0:
        return np.where(k == 0, 0.0, -np.inf)
    if p >= 1.0:
        return np.where(k == n, 0.0, -np.inf)
    comb = (math.lgamma(n + 1) - _lgamma(k + 1).astype(np.float64)
            - _lgamma(n - k + 1).astype(np.float64))
    return comb + k * math.log(p) + (n - k) * math.log1p(-p)


def cdf(c: int, n: int, p: float) -> float:
    """P(X <= c) for X ~ Binomial(n, p)."""
    if c < 0:
        return 0.0
    if c >= n:
        return 1.0
    lp = log_pmf(np.arange(0, c + 1), n, p)
    top = lp.max()
    if not np.isfinite(top):
        return 0.0
    return float(min(1.0, math.exp(top) * np.exp(lp - top).sum()))


def sf(c: int, n: int, p: float) -> float:
    """P(X > c) for X ~ Binomial(n, p), summed over the shorter tail."""
    if c < 0:
        return 1.0
    if c >= n:
        return 0.0
    if c + 1 > n - c:
        lp = log_pmf(np.arange(c + 1, n + 1), n, p)
        top = lp.max()
        return 0.0 if not np.isfinite(top) else float(
            min(1.0, math.exp(top) * np.exp(lp - top).sum()))
    return max(0.0, 1.0 - cdf(c, n, p))


def _bisect(f, lo: float, hi: float, iters: int = 60) -> float:
    """Root of the increasing function f on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval for a binomial proportion.

    Lower end: the p at which P(X >= x | p) = alpha/2; upper end: P(X <= x | p) = alpha/2.
    Coverage is at least 1 - alpha for every true p (the interval is conservative).
    """
    if not (0 <= successes <= trials) or trials < 1:
        raise ValueError(f"successes={successes!r} must lie in [0, trials={trials!r}], trials >= 1")
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    x, n, a = successes, trials, alpha / 2
    lo = 0.0 if x == 0 else _bisect(lambda p: sf(x - 1, n, p) - a, 0.0, 1.0)
    hi = 1.0 if x == n else _bisect(lambda p: a - cdf(x, n, p), 0.0, 1.0)
    return lo, hi

"""From measured factoring times and published records to 1024- and 2048-bit moduli.

The number field sieve's heuristic cost is L_N[1/3, (64/9)^(1/3)] =
exp((64/9)^(1/3) (ln N)^(1/3) (ln ln N)^(2/3)), with the o(1) dropped: only ratios of L between
two sizes are used, anchored on a published record, so the unknown constant cancels and the
dropped o(1) is the extrapolation's main uncertainty (it is why the two records below disagree
with each other by a factor that this module reports).

Records (CADO-NFS, Intel Xeon Gold 6130 at 2.1 GHz as the reference core):
- RSA-250, 829 bits, February 2020: about 2700 physical core-years (2450 sieving, 250 matrix).
- RSA-240, 795 bits, December 2019: about 900 physical core-years (800 sieving, 100 matrix).
Both from the team's announcements (Boudot, Gaudry, Guillevic, Heninger, Thomé, Zimmermann),
as relayed on the NMBRTHRY list and Schneier's blog (2019-12-03, 2020-04-08); the paper is
"Comparing the difficulty of factorization and discrete logarithm: a 240-digit experiment",
CRYPTO 2020.

Our own measurements use the quadratic sieve, whose cost is L_N[1/2, 1]; a one-constant fit of
that form to our times shows how far the small sizes are from the NFS regime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_YEAR = 365.25 * 86400
NFS_C = (64.0 / 9.0) ** (1.0 / 3.0)


@dataclass(frozen=True)
class Record:
    name: str
    bits: int
    core_years: float
    date: str


RSA_250 = Record("RSA-250", 829, 2700.0, "2020-02")
RSA_240 = Record("RSA-240", 795, 900.0, "2019-12")
RECORDS = (RSA_240, RSA_250)


def ln_n(bits: float) -> float:
    """ln N for an N of the given bit length (N ~ 2^bits)."""
    return bits * math.log(2.0)


def log_l(bits: float, alpha: float, c: float) -> float:
    """ln L_N[alpha, c] = c (ln N)^alpha (ln ln N)^(1 - alpha)."""
    x = ln_n(bits)
    return c * x ** alpha * math.log(x) ** (1.0 - alpha)


def nfs_core_years(bits: float, anchor: Record = RSA_250) -> float:
    """Core-years for a ``bits``-bit modulus, scaled from ``anchor`` by the NFS L ratio."""
    return anchor.core_years * math.exp(log_l(bits, 1 / 3, NFS_C) - log_l(anchor.bits, 1 / 3, NFS_C))


def qs_fit(points: list[tuple[int, float]]) -> float:
    """ln A of t = A L_N[1/2, 1] fitted (least squares in ln t) to (bits, seconds) points."""
    if not points:
        raise ValueError("qs_fit needs at least one (bits, seconds) point")
    return sum(math.log(t) - log_l(b, 0.5, 1.0) for b, t in points) / len(points)


def qs_seconds(bits: float, ln_a: float) -> float:
    return math.exp(ln_a + log_l(bits, 0.5, 1.0))

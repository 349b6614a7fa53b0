"""GF(2^64) arithmetic and polynomial hashing (verification tags, later Wegman-Carter MACs).

Field: GF(2)[z] / (z^64 + z^4 + z^3 + z + 1); an element is a uint64 whose bit k is the
coefficient of z^k. ``gf2_64_mul`` is a carry-less multiply (``pclmulqdq`` when present) and a
two-step fold of the high word. ``gf2k_mul`` is a slow generic shift-and-add multiply for any
field GF(2^k), k <= 64, used to cross-check and to run the same hash in tiny fields in tests.
"""

from __future__ import annotations

import numba
import numpy as np

from postprocessing.gf2.clmul import HAVE_PCLMUL, clmul64_hw, clmul64_sw

FIELD64_POLY_LOW = 0x1B  # z^4 + z^3 + z + 1, the low part of the modulus z^64 + z^4 + z^3 + z + 1

_U1 = np.uint64(1)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U60 = np.uint64(60)
_U61 = np.uint64(61)
_U63 = np.uint64(63)


@numba.njit(cache=True, nogil=True, inline="always")
def _fold(lo, hi):
    # hi * z^64 = hi * (1 + z + z^3 + z^4) mod the modulus; the spill (< 2^4) folds once more
    spill = (hi >> _U63) ^ (hi >> _U61) ^ (hi >> _U60)
    lo ^= hi ^ (hi << _U1) ^ (hi << _U3) ^ (hi << _U4)
    return lo ^ spill ^ (spill << _U1) ^ (spill << _U3) ^ (spill << _U4)


@numba.njit(cache=True, nogil=True)
def gf2_64_mul_hw(a, b):
    """Product in GF(2^64) through the hardware carry-less multiply (if the host has one)."""
    lo, hi = clmul64_hw(a, b)
    return _fold(lo, hi)


@numba.njit(cache=True, nogil=True)
def gf2_64_mul_sw(a, b):
    """Product in GF(2^64) through the portable carry-less multiply."""
    lo, hi = clmul64_sw(a, b)
    return _fold(lo, hi)


gf2_64_mul = gf2_64_mul_hw if HAVE_PCLMUL else gf2_64_mul_sw


@numba.njit(cache=True, nogil=True)
def poly_hash64(words, points):
    """Tags t_j = sum_i words[i] * points[j]^(L - i) in GF(2^64), i = 0..L-1 (Horner).

    words: uint64[L] message blocks; points: uint64[k] evaluation points; returns uint64[k].
    For two different messages of the same length the difference is a nonzero polynomial of
    degree <= L without constant term, so a uniform point collides with probability <= L / 2^64.
    """
    k = points.size
    acc = np.zeros(k, dtype=np.uint64)
    for i in range(words.size):
        m = words[i]
        for j in range(k):
            acc[j] = gf2_64_mul(acc[j] ^ m, points[j])
    return acc


@numba.njit(cache=True, nogil=True)
def gf2k_mul(a, b, k, poly_low):
    """Product in GF(2^k) = GF(2)[z] / (z^k + poly_low), 1 <= k <= 64, by shift-and-add."""
    a = np.uint64(a)
    b = np.uint64(b)
    poly = np.uint64(poly_low)
    top = np.uint64(k - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - k)
    res = np.uint64(0)
    for i in range(k):
        if (b >> np.uint64(i)) & _U1:
            res ^= a
        carry = (a >> top) & _U1
        a = (a << _U1) & mask
        if carry:
            a ^= poly
    return res


@numba.njit(cache=True, nogil=True)
def poly_hash_gf2k(blocks, point, k, poly_low):
    """The tag of ``poly_hash64`` in a small field GF(2^k): sum_i blocks[i] * point^(L - i)."""
    acc = np.uint64(0)
    for i in range(blocks.size):
        acc = gf2k_mul(acc ^ np.uint64(blocks[i]), point, k, poly_low)
    return acc

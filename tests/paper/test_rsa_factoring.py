"""The RSA side: moduli are products of two distinct primes of equal size, factored correctly."""

from __future__ import annotations

import random

import flint
import pytest

from paper import rsa_factoring as rsa


@pytest.mark.parametrize("bits", [16, 32, 64, 96])
def test_every_modulus_is_p_times_q_and_factors_back(bits):
    res = rsa.time_size(bits, 20, random.Random(bits))
    assert res.factored == res.count == len(res.moduli) == 20
    for n, p, q in res.moduli:
        n, p, q = int(n), int(p), int(q)
        assert p * q == n
        assert p != q and p.bit_length() == q.bit_length() == bits // 2
        assert n.bit_length() == bits
        assert flint.fmpz(p).is_prime() and flint.fmpz(q).is_prime()
        assert rsa.factor(n) == [p, q]


def test_factor_returns_multiplicity():
    assert rsa.factor(2**5 * 3 * 101**2) == [2, 2, 2, 2, 2, 3, 101, 101]


def test_moduli_are_reproducible_from_the_seed():
    a = rsa.rsa_modulus(64, random.Random(7))
    b = rsa.rsa_modulus(64, random.Random(7))
    assert a == b


@pytest.mark.parametrize("bits", [7, 2, 33])
def test_bad_sizes_are_refused(bits):
    with pytest.raises(ValueError, match="bits="):
        rsa.rsa_modulus(bits, random.Random(0))

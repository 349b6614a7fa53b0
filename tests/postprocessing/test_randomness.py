"""ProtocolRandom: the protocol's only random source (os.urandom, or a named test DRBG)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from postprocessing.randomness import ProtocolRandom, RandomnessError


def test_default_source_is_the_os_csprng():
    r = ProtocolRandom()
    assert r.source_name == "os.urandom" and not r.is_deterministic
    assert len(r.bytes(32)) == 32 and r.bytes(32) != r.bytes(32)  # 2^-256 to fail by chance


def test_deterministic_source_only_by_name_and_reproducible():
    a, b = ProtocolRandom.deterministic_for_tests(7), ProtocolRandom.deterministic_for_tests(7)
    c = ProtocolRandom.deterministic_for_tests(8)
    assert a.is_deterministic and "deterministic_for_tests" in repr(a)
    assert a.bytes(100) == b.bytes(100) != c.bytes(100)
    assert np.array_equal(a.choice(1000, 10), b.choice(1000, 10))


@pytest.mark.parametrize("span", [2, 3, 7, 256, 257, 1000, 2**32 + 5, 2**63, 2**64])
def test_integers_stay_in_range(span):
    r = ProtocolRandom.deterministic_for_tests(span % 1000)
    dtype = np.uint64 if span > 2**63 else np.int64
    v = r.integers(0, span, size=5000, dtype=dtype)
    assert v.dtype == dtype and v.shape == (5000,)
    assert int(v.min()) >= 0 and int(v.max()) < span


def test_integers_are_unbiased_for_a_range_rejection_matters():
    """span 3 in one byte: plain modulo would give 0 with probability 86/256 instead of 1/3.
    Counts are multinomial: each within 5 sigma = 5 sqrt(N p (1 - p)) of N/3."""
    r = ProtocolRandom.deterministic_for_tests(1)
    n = 300_000
    counts = np.bincount(r.integers(0, 3, size=n), minlength=3)
    sigma = math.sqrt(n * (1 / 3) * (2 / 3))
    assert np.all(np.abs(counts - n / 3) < 5 * sigma)
    # modulo bias would put count[0] at n * 86/256 = n/3 + 0.0026 n ~ 780 above n/3 (~3 sigma)


def test_integers_numpy_semantics():
    r = ProtocolRandom.deterministic_for_tests(2)
    one = r.integers(0, 2**63)
    assert isinstance(one, np.int64) and 0 <= one < 2**63
    coins = r.integers(0, 2, size=(2, 9), dtype=np.uint8)
    assert coins.shape == (2, 9) and coins.dtype == np.uint8 and coins.max() <= 1
    assert -5 <= r.integers(-5, 5) < 5 and 0 <= r.integers(4) < 4
    assert r.integers(3, 4) == 3 and r.integers(3, 3, endpoint=True) == 3


def test_bits_are_balanced_and_shaped():
    r = ProtocolRandom()
    b = r.bits(1_000_003)
    assert b.dtype == np.uint8 and b.size == 1_000_003 and b.max() == 1
    assert abs(b.mean() - 0.5) < 5 * 0.5 / math.sqrt(b.size)  # 5 sigma of a binomial mean


def test_uint64_covers_the_high_bit():
    r = ProtocolRandom.deterministic_for_tests(3)
    vals = [r.uint64() for _ in range(200)]
    assert all(0 <= v < 2**64 for v in vals)
    assert any(v >= 2**63 for v in vals)  # fails with probability 2^-200


def test_choice_without_replacement_is_distinct_and_uniform():
    r = ProtocolRandom.deterministic_for_tests(4)
    picks = r.choice(1000, 1000)
    assert sorted(picks.tolist()) == list(range(1000))
    trials, n, k = 4000, 20, 5
    hits = np.zeros(n, np.int64)
    for _ in range(trials):
        s = r.choice(n, k)
        assert np.unique(s).size == k and s.min() >= 0 and s.max() < n
        hits[s] += 1
    # each position is picked with probability k/n: binomial, 5 sigma
    p = k / n
    assert np.all(np.abs(hits - trials * p) < 5 * math.sqrt(trials * p * (1 - p)))


@pytest.mark.parametrize("n,k", [(20, 5), (100, 10)])  # the key path and the marking path
def test_choice_covers_positions_and_pairs_uniformly(n, k):
    """Each position has probability k/n, each pair k(k-1)/(n(n-1)) (a uniform subset):
    binomial counts within 5 sigma."""
    r = ProtocolRandom.deterministic_for_tests(n)
    trials = 4000
    hits = np.zeros(n, np.int64)
    pair = 0
    for _ in range(trials):
        s = r.choice(n, k)
        assert np.unique(s).size == k
        hits[s] += 1
        pair += bool(np.isin([0, 1], s).all())
    p = k / n
    assert np.all(np.abs(hits - trials * p) < 5 * math.sqrt(trials * p * (1 - p)))
    p2 = k * (k - 1) / (n * (n - 1))
    assert abs(pair - trials * p2) < 5 * math.sqrt(trials * p2 * (1 - p2)) + 1


def test_choice_with_replacement_and_edges():
    r = ProtocolRandom.deterministic_for_tests(5)
    assert r.choice(3, 50, replace=True).max() < 3
    assert r.choice(10, 0).size == 0
    assert sorted(r.permutation(6).tolist()) == list(range(6))


@pytest.mark.parametrize("call", [
    lambda r: r.bytes(-1), lambda r: r.bits(1.5), lambda r: r.integers(5, 5),
    lambda r: r.integers(0, 2**65), lambda r: r.integers(0, 300, dtype=np.uint8),
    lambda r: r.choice(3, 4), lambda r: ProtocolRandom.deterministic_for_tests(-1),
])
def test_bad_requests_raise_typed_errors(call):
    with pytest.raises(RandomnessError):
        call(ProtocolRandom.deterministic_for_tests(0))


def test_short_source_is_refused():
    with pytest.raises(RandomnessError, match="returned 3 bytes"):
        ProtocolRandom(lambda n: b"abc").bytes(8)


def test_no_non_cryptographic_generator_in_protocol_packages():
    """numpy/stdlib generators belong to the simulator, tests and benchmarks only."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"default_rng|np\.random|numpy\.random|import random")
    offenders = [f"{p.relative_to(root)}:{i}"
                 for pkg in ("daemon", "postprocessing", "drivers", "firmware_protocol", "kms")
                 for p in sorted((root / pkg).rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []

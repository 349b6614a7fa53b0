"""Verification hashing: GF(2^64) arithmetic, tag sizing, roles, messages, collision bound."""

import math
from fractions import Fraction

import numpy as np
import pytest
from postprocessing.randomness import ProtocolRandom

det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.gf2.field64 import (
    FIELD64_POLY_LOW, gf2_64_mul, gf2_64_mul_hw, gf2_64_mul_sw, gf2k_mul, poly_hash64,
    poly_hash_gf2k)
from postprocessing.verification import (
    VerificationError, VerifyMessage, VerifyMessageError, alice_verification_message, bob_check,
    key_tags, tag_bits_for, tag_layout, verify)

u64 = st.integers(0, (1 << 64) - 1)
MODULUS = (1 << 64) | FIELD64_POLY_LOW


def py_clmul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def py_mod(a, m):
    while a.bit_length() >= m.bit_length():
        a ^= m << (a.bit_length() - m.bit_length())
    return a


def py_mul(a, b):
    return py_mod(py_clmul(a, b), MODULUS)


def mul(a, b):
    return int(gf2_64_mul(np.uint64(a), np.uint64(b)))


# ---- GF(2^64) ------------------------------------------------------------------------------

@given(u64, u64)
def test_mul_matches_python_reduction_all_paths(a, b):
    want = py_mul(a, b)
    ua, ub = np.uint64(a), np.uint64(b)
    assert int(gf2_64_mul_hw(ua, ub)) == want
    assert int(gf2_64_mul_sw(ua, ub)) == want
    assert int(gf2k_mul(ua, ub, 64, FIELD64_POLY_LOW)) == want


def test_mul_known_answers():
    assert mul(1 << 63, 2) == FIELD64_POLY_LOW  # z^64 = z^4 + z^3 + z + 1
    assert mul(1 << 63, 1 << 63) == py_mod(1 << 126, MODULUS)
    assert mul(0xFFFFFFFFFFFFFFFF, 1) == 0xFFFFFFFFFFFFFFFF


def test_modulus_is_irreducible():
    # Rabin: f of degree 64 = 2^6 is irreducible iff z^(2^64) = z mod f and gcd(z^(2^32) - z, f) = 1
    def frob(k):
        r = 2  # z
        for _ in range(k):
            r = py_mod(py_clmul(r, r), MODULUS)
        return r

    def gcd(a, b):
        while b:
            a, b = b, py_mod(a, b)
        return a

    assert frob(64) == 2
    assert gcd(MODULUS, frob(32) ^ 2) == 1


@given(u64, u64, u64)
def test_field_axioms(a, b, c):
    assert mul(a, b) == mul(b, a)
    assert mul(mul(a, b), c) == mul(a, mul(b, c))
    assert mul(a, b ^ c) == mul(a, b) ^ mul(a, c)
    assert mul(a, 1) == a and mul(a, 0) == 0


@given(st.integers(1, (1 << 64) - 1))
@settings(max_examples=30)
def test_every_nonzero_element_has_an_inverse(a):
    # a^(2^64 - 2) is the inverse in a field with 2^64 elements
    r, base, e = 1, a, (1 << 64) - 2
    while e:
        if e & 1:
            r = mul(r, base)
        base = mul(base, base)
        e >>= 1
    assert mul(r, a) == 1


@given(st.lists(u64, min_size=1, max_size=40), st.lists(u64, min_size=1, max_size=3))
def test_poly_hash_is_horner_evaluation(words, points):
    got = poly_hash64(np.array(words, dtype=np.uint64), np.array(points, dtype=np.uint64))
    for r, tag in zip(points, got):
        acc = 0
        for m in words:
            acc = py_mul(acc ^ m, r)
        assert int(tag) == acc


# ---- tag sizing ----------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.5, 1e-3, 1e-10, 1e-15, 2.0 ** -50, 1e-30, 1e-60])
@pytest.mark.parametrize("n_bits", [1, 64, 65, 10_000, 1_000_000, 10_000_000])
def test_tag_layout_meets_eps_and_is_tight(eps, n_bits):
    k, b = tag_layout(eps, n_bits)
    n_words = -(-n_bits // 64)
    bound = Fraction(n_words, 1 << b) ** k
    assert bound <= Fraction(eps)
    assert b == 1 or Fraction(n_words, 1 << (b - 1)) ** k > Fraction(eps)  # b is the least
    assert 1 <= b <= 64
    assert k * b >= math.ceil(math.log2(1 / eps))
    assert tag_bits_for(eps, n_bits) == k * b


def test_numpy_scalar_eps_is_accepted():
    assert tag_bits_for(np.float32(1e-6), 1000) == tag_bits_for(float(np.float32(1e-6)), 1000)


def test_tag_bits_for_short_keys_is_log2_of_inverse_eps():
    # one word: h_r(m) = m r is a bijection of r, so the bound is exactly 2^-b
    for eps in (1e-3, 1e-10, 1e-15):
        assert tag_bits_for(eps, 64) == math.ceil(math.log2(1 / eps))


def test_tag_bits_for_without_length_bounds_every_supported_key():
    for eps in (1e-10, 1e-15):
        assert tag_bits_for(eps) >= tag_bits_for(eps, 10 ** 8)


@pytest.mark.parametrize("eps", [0.0, 1.0, -1e-3, 2.0, float("nan"), "small", None])
def test_bad_eps_raises(eps):
    with pytest.raises(VerificationError):
        tag_bits_for(eps, 1000)


# ---- roles -----------------------------------------------------------------------------------

keys = st.integers(1, 3000).flatmap(
    lambda n: st.binary(min_size=n, max_size=n).map(
        lambda b: (np.frombuffer(b, dtype=np.uint8) & 1).astype(np.uint8)))


@given(keys, st.sampled_from([1e-6, 1e-15, 1e-30]))
def test_equal_keys_always_pass(bits, eps):
    res = verify(bits, bits.copy(), eps)
    assert res.ok
    assert res.tag_bits == res.disclosed_bits == tag_bits_for(eps, bits.size)


@given(keys, st.data())
def test_single_flip_is_caught_full_width_nonzero_points(bits, data):
    # D(r) = delta * r^e with delta != 0: nonzero for every r != 0, so never missed
    pos = data.draw(st.integers(0, bits.size - 1))
    points = np.array(data.draw(st.lists(st.integers(1, (1 << 64) - 1), min_size=1,
                                         max_size=3)), dtype=np.uint64)
    flipped = bits.copy()
    flipped[pos] ^= 1
    assert not np.array_equal(key_tags(bits, points, 64), key_tags(flipped, points, 64))


@given(keys, st.data())
def test_single_flip_fails_bob_check_with_random_points(bits, data):
    # a false pass here has probability <= eps_cor = 1e-15 per example
    pos = data.draw(st.integers(0, bits.size - 1))
    msg = alice_verification_message(bits, 1e-15)
    flipped = bits.copy()
    flipped[pos] ^= 1
    assert bob_check(msg, bits)
    assert not bob_check(msg, flipped)


def test_verify_with_protocol_random_and_callable_rng_is_reproducible():
    rng_bits = np.random.default_rng(5)
    a = rng_bits.integers(0, 2, 5000, dtype=np.uint8)
    m1 = alice_verification_message(a, 1e-12, det_rng(1).bytes)
    m2 = alice_verification_message(a, 1e-12, det_rng(1).bytes)
    assert m1 == m2
    b = a.copy()
    b[-1] ^= 1
    assert not verify(a, b, 1e-12, det_rng(2)).ok


def test_role_errors():
    a = np.zeros(100, np.uint8)
    msg = alice_verification_message(a, 1e-9)
    with pytest.raises(VerificationError):
        bob_check(msg, np.zeros(101, np.uint8))
    with pytest.raises(VerificationError):
        verify(a, np.zeros(99, np.uint8), 1e-9)
    with pytest.raises(VerificationError):
        verify(np.full(100, 3, np.uint8), a, 1e-9)
    with pytest.raises(VerificationError):
        alice_verification_message(a, 1e-9, lambda n: b"\x00" * (n - 1))


def test_bob_refuses_tags_too_short_for_his_eps():
    bits = np.zeros(64 * 1000, np.uint8)
    msg = alice_verification_message(bits, 1e-6)
    assert bob_check(msg, bits, 1e-6)
    with pytest.raises(VerificationError):
        bob_check(msg, bits, 1e-12)


# ---- messages --------------------------------------------------------------------------------

@st.composite
def messages(draw):
    b = draw(st.integers(1, 64))
    k = draw(st.integers(1, 5))
    return VerifyMessage(draw(st.integers(1, 1 << 32)), b,
                         tuple(draw(st.lists(u64, min_size=k, max_size=k))),
                         tuple(draw(st.lists(st.integers(0, (1 << b) - 1), min_size=k,
                                             max_size=k))))


@given(messages())
def test_message_round_trip(msg):
    data = msg.to_bytes()
    assert VerifyMessage.from_bytes(data) == msg
    assert msg.tag_bits == msg.bits_per_tag * len(msg.tags)


@given(messages(), st.data())
def test_truncated_or_extended_message_raises(msg, data):
    raw = msg.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(VerifyMessageError):
        VerifyMessage.from_bytes(raw[:cut])
    with pytest.raises(VerifyMessageError):
        VerifyMessage.from_bytes(raw + b"\x00")


def test_malformed_messages_raise_typed_errors():
    good = VerifyMessage(1000, 40, (5,), (7,)).to_bytes()
    with pytest.raises(VerifyMessageError):
        VerifyMessage.from_bytes(b"XXXX" + good[4:])
    bad_b = bytearray(good)
    bad_b[13] = 0  # bits per tag 0
    with pytest.raises(VerifyMessageError):
        VerifyMessage.from_bytes(bytes(bad_b))
    wide = bytearray(good)
    wide[13] = 2  # tag 7 does not fit in 2 bits
    with pytest.raises(VerifyMessageError):
        VerifyMessage.from_bytes(bytes(wide))
    with pytest.raises(VerifyMessageError):
        VerifyMessage(0, 40, (5,), (7,))
    with pytest.raises(VerifyMessageError):
        VerifyMessage(10, 40, (5, 6), (7,))


# ---- the collision bound in a tiny field -------------------------------------------------

GF8_LOW = 0x1B  # z^8 + z^4 + z^3 + z + 1 (irreducible)


def gf8_poly_from_roots(roots):
    """Coefficients c_0..c_L (GF(2^8)) of z * prod (z + a) over the given roots a."""
    c = [0, 1]  # z
    for a in roots:
        nxt = [0] * (len(c) + 1)
        for e, ce in enumerate(c):
            nxt[e + 1] ^= ce
            nxt[e] ^= int(gf2k_mul(np.uint64(ce), np.uint64(a), 8, GF8_LOW))
        c = nxt
    return c


def tiny_hash(blocks, r):
    return int(poly_hash_gf2k(np.array(blocks, dtype=np.uint64), np.uint64(r), 8, GF8_LOW))


@pytest.mark.parametrize("n_blocks", [1, 4, 16])
def test_tiny_field_exhaustive_collisions_meet_the_bound(n_blocks):
    rng = np.random.default_rng(n_blocks)
    for _ in range(20):
        m1 = rng.integers(0, 256, n_blocks)
        m2 = m1.copy()
        while np.array_equal(m1, m2):
            m2 = rng.integers(0, 256, n_blocks)
        collisions = sum(tiny_hash(m1, r) == tiny_hash(m2, r) for r in range(256))
        assert collisions <= n_blocks  # at most L roots of the difference polynomial
        for b in (4, 6):  # low b bits only: at most L * 2^(8 - b) points
            low = sum((tiny_hash(m1, r) ^ tiny_hash(m2, r)) % (1 << b) == 0 for r in range(256))
            assert low <= n_blocks * (1 << (8 - b))


def test_tiny_field_empirical_collision_rate_matches_the_tight_bound():
    # A difference with L distinct roots (0 and L - 1 chosen elements) collides with probability
    # exactly L / 256, the bound. Sampling N uniform points: count ~ Binomial(N, p); 4 sigma.
    n_blocks = 12
    roots = list(range(1, n_blocks))
    c = gf8_poly_from_roots(roots)  # c_0 = 0, degree L
    assert c[0] == 0 and len(c) == n_blocks + 1
    delta = [c[n_blocks - i] for i in range(n_blocks)]  # block i multiplies r^(L - i)
    rng = np.random.default_rng(11)
    m1 = rng.integers(0, 256, n_blocks)
    m2 = m1 ^ np.array(delta)
    exhaustive = sum(tiny_hash(m1, r) == tiny_hash(m2, r) for r in range(256))
    assert exhaustive == n_blocks
    n_trials = 20_000
    points = rng.integers(0, 256, n_trials)
    hits = sum(tiny_hash(m1, r) == tiny_hash(m2, r) for r in points)
    p = n_blocks / 256
    sigma = math.sqrt(n_trials * p * (1 - p))
    assert abs(hits - n_trials * p) <= 4 * sigma


def test_verify_refuses_a_non_cryptographic_generator_object():
    a = np.zeros(64, np.uint8)
    with pytest.raises(VerificationError, match="ProtocolRandom"):
        verify(a, a, 1e-12, object())

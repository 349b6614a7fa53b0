"""Verification that Alice's and Bob's reconciled keys agree, by polynomial hashing in GF(2^64).

The key (n bits) is cut into L = ceil(n / 64) words m_1..m_L (little-endian bit order, zero
padded); for a uniform point r the tag is h_r(m) = sum_i m_i r^(L + 1 - i), keeping its low b
bits. For two different keys of the same length the difference D(r) is a nonzero polynomial of
degree <= L with no constant term, so D(r) - v has at most L roots for every v and the low b bits
of D(r) vanish for at most L * 2^(64 - b) of the 2^64 points:
    Pr[tags agree | keys differ] <= L / 2^b          (one point)
    Pr[...] <= (L / 2^b)^k                           (k independent points).
For a target eps_cor we take k = ceil(log2(1/eps_cor) / (64 - log2 L)) points and the smallest b
with (L / 2^b)^k <= eps_cor, so the disclosed tag is k * b ~ log2(1/eps_cor) + k log2 L bits
(e.g. 64 bits for a 10^6-bit key at eps_cor = 1e-15). Those tag bits are leakage; the points are
independent of the key and are not. Bits are unpacked uint8 0/1, one per byte.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from postprocessing.gf2.field64 import gf2_64_mul, poly_hash64
from postprocessing.randomness import ProtocolRandom

__all__ = [
    "VerificationError", "VerifyMessageError", "VerifyMessage", "VerifyResult", "tag_bits_for",
    "tag_layout", "alice_verification_message", "bob_check", "verify", "key_tags", "gf2_64_mul",
]

MAX_KEY_BITS = 1 << 32  # the conservative length tag_bits_for assumes when none is given
_MAGIC = b"QKV1"
_HEADER = struct.Struct(">4sQBB")  # magic, n_bits, points k, bits per tag b
_PAIR = struct.Struct(">QQ")  # point, tag


class VerificationError(ValueError):
    """Bad input to verification (eps_cor out of range, key lengths, bit values)."""


class VerifyMessageError(VerificationError):
    """A verification message that cannot be decoded or is inconsistent."""


@dataclass(frozen=True)
class VerifyMessage:
    """Alice -> Bob: the key length, the random points and her (truncated) tags."""

    n_bits: int
    bits_per_tag: int
    points: tuple[int, ...]
    tags: tuple[int, ...]

    def __post_init__(self):
        if not 1 <= self.n_bits <= MAX_KEY_BITS:
            raise VerifyMessageError(f"n_bits {self.n_bits} is outside 1..{MAX_KEY_BITS}")
        if not 1 <= self.bits_per_tag <= 64:
            raise VerifyMessageError(f"bits_per_tag {self.bits_per_tag} is outside 1..64")
        if not 1 <= len(self.points) <= 255 or len(self.points) != len(self.tags):
            raise VerifyMessageError(
                f"{len(self.points)} points and {len(self.tags)} tags: need equal counts in 1..255")
        if any(not 0 <= p < 1 << 64 for p in self.points):
            raise VerifyMessageError("a point is outside 0..2^64-1")
        if any(not 0 <= t < 1 << self.bits_per_tag for t in self.tags):
            raise VerifyMessageError(f"a tag is wider than bits_per_tag = {self.bits_per_tag}")

    @property
    def tag_bits(self) -> int:
        return self.bits_per_tag * len(self.tags)

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(_MAGIC, self.n_bits, len(self.points), self.bits_per_tag)
        return head + b"".join(_PAIR.pack(p, t) for p, t in zip(self.points, self.tags))

    @classmethod
    def from_bytes(cls, data: bytes) -> "VerifyMessage":
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise VerifyMessageError(
                f"verification message of {len(data)} bytes is shorter than its "
                f"{_HEADER.size}-byte header")
        magic, n_bits, k, b = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise VerifyMessageError(f"bad magic {magic!r}, expected {_MAGIC!r}")
        want = _HEADER.size + k * _PAIR.size
        if len(data) != want:
            raise VerifyMessageError(
                f"verification message has {len(data)} bytes, its header announces {want}")
        pairs = [_PAIR.unpack_from(data, _HEADER.size + i * _PAIR.size) for i in range(k)]
        return cls(n_bits, b, tuple(p for p, _ in pairs), tuple(t for _, t in pairs))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    tag_bits: int
    disclosed_bits: int  # = tag_bits: what the finite-key bound must count as leakage


def tag_layout(eps_cor: float, n_bits: int) -> tuple[int, int]:
    """(k points, b bits per tag) for an n-bit key, with (L / 2^b)^k <= eps_cor, L = ceil(n/64)."""
    try:
        eps_cor = float(eps_cor)
    except (TypeError, ValueError):
        raise VerificationError(f"eps_cor {eps_cor!r} is not a number in (0, 1)") from None
    if not 0.0 < eps_cor < 1.0:
        raise VerificationError(f"eps_cor {eps_cor!r} is outside the open interval (0, 1)")
    if not 1 <= n_bits <= MAX_KEY_BITS:
        raise VerificationError(f"key length {n_bits} bits is outside 1..{MAX_KEY_BITS}")
    n_words = -(-n_bits // 64)
    need = math.log2(1.0 / eps_cor)
    k = max(1, math.ceil(need / (64.0 - math.log2(n_words))))
    eps = Fraction(eps_cor)
    while True:
        b = max(1, math.ceil(need / k + math.log2(n_words)) - 1)
        while b <= 64 and Fraction(n_words, 1 << b) ** k > eps:
            b += 1
        if b <= 64:
            return k, b
        k += 1  # float rounding left no room at 64 bits per point: add a point


def tag_bits_for(eps_cor: float, n_bits: int | None = None) -> int:
    """Tag bits disclosed to verify an n-bit key at eps_cor (the leakage to count).

    Polynomial hashing costs about log2(n/64) bits per point on top of ceil(log2(1/eps_cor));
    without n_bits the longest supported key (MAX_KEY_BITS) is assumed, an upper bound.
    """
    k, b = tag_layout(eps_cor, MAX_KEY_BITS if n_bits is None else n_bits)
    return k * b


def key_tags(bits: np.ndarray, points: np.ndarray, bits_per_tag: int) -> np.ndarray:
    """Low ``bits_per_tag`` bits of the GF(2^64) polynomial hash of the key at each point."""
    words = _key_words(bits)
    tags = poly_hash64(words, np.asarray(points, dtype=np.uint64))
    words.fill(0)
    if bits_per_tag < 64:
        tags &= np.uint64((1 << bits_per_tag) - 1)
    return tags


def alice_verification_message(bits: np.ndarray, eps_cor: float,
                               rng_bytes: Callable[[int], bytes] | None = None) -> VerifyMessage:
    """Alice's side: fresh random points and her tags. rng_bytes(n) -> n random bytes."""
    bits = _as_bits(bits)
    k, b = tag_layout(eps_cor, bits.size)
    raw = (rng_bytes or secrets.token_bytes)(8 * k)
    if len(raw) != 8 * k:
        raise VerificationError(f"rng_bytes returned {len(raw)} bytes, {8 * k} were asked for")
    points = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    tags = key_tags(bits, points, b)
    return VerifyMessage(bits.size, b, tuple(int(p) for p in points), tuple(int(t) for t in tags))


def bob_check(message: VerifyMessage, bits: np.ndarray, eps_cor: float | None = None) -> bool:
    """Bob's side: True iff his key hashes to Alice's tags at her points.

    With eps_cor given, a message whose tags are too short for that bound is refused
    (VerificationError) rather than trusted.
    """
    bits = _as_bits(bits)
    if bits.size != message.n_bits:
        raise VerificationError(
            f"Bob's key has {bits.size} bits, Alice's message is for {message.n_bits}")
    if eps_cor is not None:
        n_words = -(-bits.size // 64)
        bound = Fraction(n_words, 1 << message.bits_per_tag) ** len(message.tags)
        tag_layout(eps_cor, bits.size)  # validates eps_cor
        if bound > Fraction(eps_cor):
            raise VerificationError(
                f"message has {len(message.tags)} tags of {message.bits_per_tag} bits: collision "
                f"bound {float(bound):.3g} exceeds eps_cor {eps_cor:g}")
    tags = key_tags(bits, np.array(message.points, dtype=np.uint64), message.bits_per_tag)
    return bool(np.array_equal(tags, np.array(message.tags, dtype=np.uint64)))


def verify(alice_bits: np.ndarray, bob_bits: np.ndarray, eps_cor: float,
           rng=None) -> VerifyResult:
    """Both roles in one process (tests, benchmarks, the in-process pipeline).

    rng: None (os.urandom via secrets), a callable n -> bytes, or a ProtocolRandom.
    """
    rng_bytes = rng.bytes if isinstance(rng, ProtocolRandom) else rng
    if rng_bytes is not None and not callable(rng_bytes):
        raise VerificationError(f"rng must be None, a ProtocolRandom or a callable n -> bytes, "
                                f"got {type(rng).__name__}")
    alice_bits = _as_bits(alice_bits)
    bob_bits = _as_bits(bob_bits)
    if alice_bits.size != bob_bits.size:
        raise VerificationError(
            f"keys differ in length: Alice {alice_bits.size} bits, Bob {bob_bits.size} bits")
    msg = VerifyMessage.from_bytes(alice_verification_message(alice_bits, eps_cor,
                                                              rng_bytes).to_bytes())
    ok = bob_check(msg, bob_bits, eps_cor)
    return VerifyResult(ok=ok, tag_bits=msg.tag_bits, disclosed_bits=msg.tag_bits)


def _key_words(bits: np.ndarray) -> np.ndarray:
    """uint8 0/1 -> uint64 words, little-endian bit order, zero padded to whole words."""
    n_words = -(-bits.size // 64)
    buf = np.zeros(8 * n_words, dtype=np.uint8)
    packed = np.packbits(bits, bitorder="little")
    buf[:packed.size] = packed
    packed.fill(0)
    return buf.view("<u8").astype(np.uint64, copy=False)


def _as_bits(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.size == 0:
        raise VerificationError(f"a key must be a non-empty 1-D bit array, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype != np.uint8:
        raise VerificationError(f"key bits must have dtype uint8 (0/1 per byte), got {a.dtype}")
    if a.max() > 1:
        raise VerificationError("key holds values other than 0 and 1 (expected unpacked bits)")
    return a

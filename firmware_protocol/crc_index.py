"""CRC-32 of any slice of a buffer in near-constant time, so resynchronisation stays linear.

When a frame's payload check fails, the decoder steps one byte on and tries the next sync word.
Headers stacked inside that payload may each claim a payload reaching the same far end; checking
each one by hashing its payload again costs the square of the input (an 8 MiB burst took minutes).
CRC-32 is affine over GF(2), so the check of a slice follows from two prefix values:

    crc(buf[a:b]) = P(b) XOR P(a) * x^(8(b-a))  (mod the CRC polynomial)

with P(x) the CRC of the stream from a fixed anchor up to x (zlib's crc32_combine rule).
``PrefixCrc`` keeps P at checkpoints every ``STRIDE`` bytes, computed once as the stream
arrives, so each byte is hashed a bounded number of times whatever the attacker stacks.
Polynomial arithmetic uses zlib's reflected representation (x^0 is bit 31).
"""

from __future__ import annotations

import bisect
import zlib

_POLY = 0xEDB88320           # CRC-32/ISO-HDLC, reflected
_X0 = 1 << 31                # the polynomial 1 in the reflected representation
STRIDE = 64                  # bytes between checkpoints: bounds the hashing per query
_LOW_BITS = 12               # x^(8L) = LOW[L mod 4096] * HIGH[L div 4096]


def _times_x(v: int) -> int:
    return (v >> 1) ^ _POLY if v & 1 else v >> 1


# v * x^4 = (v >> 4) ^ _X4[v & 15]: the four low bits are the ones that wrap round the polynomial
_X4 = []
for _low_nibble in range(16):
    _v = _low_nibble
    for _ in range(4):
        _v = _times_x(_v)
    _X4.append(_v)


def gf2_multiply(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (both reflected 32-bit values), a nibble at a time."""
    b1 = _times_x(b)
    b2 = _times_x(b1)
    b3 = _times_x(b2)
    # multiples of b by the 16 polynomials of degree < 4 (bit 3 of the index is x^0)
    table = [0, b3, b2, b2 ^ b3, b1, b1 ^ b3, b1 ^ b2, b1 ^ b2 ^ b3]
    table += [t ^ b for t in table]
    x4 = _X4
    product = 0
    for shift in (0, 4, 8, 12, 16, 20, 24, 28):      # highest-degree nibble of a first
        product = (product >> 4) ^ x4[product & 15] ^ table[(a >> shift) & 15]
    return product


def _times_x8(v: int) -> int:
    for _ in range(8):
        v = (v >> 1) ^ _POLY if v & 1 else v >> 1
    return v


_low: list[int] = []
_high: list[int] = []


def _tables() -> tuple[list[int], list[int]]:
    if not _low:
        v = _X0
        for _ in range(1 << _LOW_BITS):
            _low.append(v)
            v = _times_x8(v)
        step = v                                  # x^(8 * 4096)
        h = _X0
        for _ in range(1 << _LOW_BITS):
            _high.append(h)
            h = gf2_multiply(h, step)
    return _low, _high


def shift_bytes(crc: int, n: int) -> int:
    """crc * x^(8n): what a CRC value becomes after n more bytes, minus their own CRC."""
    low, high = _tables()
    hi, lo = divmod(n, 1 << _LOW_BITS)
    factor = low[lo]
    while hi:                                     # one step for any n below 16 MiB
        part = min(hi, len(high) - 1)
        factor = gf2_multiply(factor, high[part])
        hi -= part
    return gf2_multiply(factor, crc)


def crc_of_slice(prefix_a: int, prefix_b: int, length: int) -> int:
    """CRC-32 of the ``length`` bytes between two prefix values P(a), P(b) with b = a + length."""
    return prefix_b ^ shift_bytes(prefix_a, length)


class PrefixCrc:
    """Prefix CRC checkpoints over a stream held in a buffer that only grows at the end and is
    trimmed at the front; positions are absolute stream offsets.

    ``bytes_hashed`` counts every byte passed to zlib (the work bound the tests check).
    """

    def __init__(self, anchor: int):
        self._pos = [anchor]       # checkpoint offsets, increasing
        self._val = [0]            # P at each checkpoint (P(anchor) = 0)
        self._first = 0            # checkpoints before this index were trimmed away
        self._last_query = (anchor, 0)
        self.bytes_hashed = 0

    @property
    def start(self) -> int:
        return self._pos[self._first]

    def _hash(self, buf, origin: int, lo: int, hi: int, value: int) -> int:
        self.bytes_hashed += hi - lo
        with memoryview(buf) as view:
            return zlib.crc32(view[lo - origin:hi - origin], value)

    def prefix(self, buf, origin: int, x: int) -> int:
        """P(x); ``buf[0]`` sits at stream offset ``origin`` and holds bytes up to ``x``."""
        pos, val = self._pos, self._val
        while pos[-1] + STRIDE <= x:
            nxt = pos[-1] + STRIDE
            val.append(self._hash(buf, origin, pos[-1], nxt, val[-1]))
            pos.append(nxt)
        i = bisect.bisect_right(pos, x, self._first) - 1
        base, value = pos[i], val[i]
        last_x, last_value = self._last_query
        if base <= last_x <= x:            # queries at frame starts move forward: reuse
            base, value = last_x, last_value
        value = self._hash(buf, origin, base, x, value)
        self._last_query = (x, value)
        return value

    def crc(self, buf, origin: int, a: int, b: int) -> int:
        """CRC-32 of stream bytes [a, b) (both at or after ``start``)."""
        pa = self.prefix(buf, origin, a)
        pb = self.prefix(buf, origin, b)
        self._last_query = (a, pa)
        return crc_of_slice(pa, pb, b - a)

    def trim(self, buf, origin: int, new_origin: int) -> None:
        """The buffer is about to drop bytes before ``new_origin``: keep P computable there."""
        if new_origin <= self.start:
            return
        p = self.prefix(buf, origin, new_origin)
        i = bisect.bisect_right(self._pos, new_origin, self._first)
        # checkpoints [first, i) lie at or before new_origin; replace them by one at new_origin
        self._pos[i - 1] = new_origin
        self._val[i - 1] = p
        self._first = i - 1
        if self._first > 1024 and self._first * 2 > len(self._pos):
            del self._pos[:self._first]
            del self._val[:self._first]
            self._first = 0

    @property
    def end(self) -> int:
        return self._pos[-1]

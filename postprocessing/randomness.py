"""Every random value of the protocol path, from the operating system's CSPRNG.

Secret choices (Bob's squashing coins) and public ones (test-sample positions, Cascade
permutation seeds, verification points, Toeplitz seeds) must all be unpredictable until used or
announced: an eavesdropper who can predict the test sample spares the sampled pulses, one who
knows the Toeplitz seed before the key is fixed can aim her attack at it. A non-cryptographic
generator (numpy's PCG64, Mersenne Twister) is recoverable from its outputs, so the protocol
never uses one; numpy generators stay in the simulator, which models physics.

``ProtocolRandom()`` reads ``os.urandom`` for every request (no state of its own that a memory
dump could reveal ahead of time). Bulk requests are fast enough: see ``bench/bench_randomness.py``
(``os.urandom`` delivers hundreds of MB/s here, far above what one block needs: a 10^7-bit
Toeplitz seed is 1.25 MB).

Tests get a reproducible source only by asking for it by name:
``ProtocolRandom.deterministic_for_tests(seed)``, a SHAKE-256 counter DRBG (output i is
SHAKE-256(seed || i) truncated to the request). It must never be used by a node.

Method names and signatures follow numpy's ``Generator`` where they overlap (``bytes``,
``integers``, ``choice``), so callers need not care which one they hold in tests of old code;
``bits`` and ``uint64`` are additions. Integers are unbiased (rejection sampling).
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np

__all__ = ["ProtocolRandom", "RandomnessError"]

_MAX_REQUEST = 1 << 34  # bytes; a caller asking for more has a bug


class RandomnessError(ValueError):
    """A request to the protocol random source is outside its accepted range."""


class _ShakeCounterDrbg:
    """Deterministic bytes for tests: block i = SHAKE-256(b"qkd-test-drbg" || seed || i)."""

    def __init__(self, seed: int):
        self._key = b"qkd-test-drbg" + int(seed).to_bytes(32, "little", signed=False)
        self._counter = 0
        self.name = f"deterministic_for_tests({seed})"

    def __call__(self, n: int) -> bytes:
        out = hashlib.shake_256(self._key + self._counter.to_bytes(8, "little")).digest(n)
        self._counter += 1
        return out


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= _MAX_REQUEST:
        raise RandomnessError(f"{name}={n!r} must be an integer in [0, {_MAX_REQUEST}]")
    return int(n)


def _word_dtype(span: int):
    """Smallest unsigned word that holds span - 1 (span >= 1)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if span <= 1 << (8 * np.dtype(dt).itemsize):
            return dt
    return np.uint64


class ProtocolRandom:
    """Random bytes, bits and integers for the protocol; ``os.urandom`` unless a test says not."""

    def __init__(self, source: Callable[[int], bytes] | None = None):
        self._source = os.urandom if source is None else source
        self.source_name = "os.urandom" if source is None else getattr(source, "name", "custom")

    @classmethod
    def deterministic_for_tests(cls, seed: int) -> "ProtocolRandom":
        """A reproducible hash-based DRBG (SHAKE-256 in counter mode) for tests only."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not \
                0 <= int(seed) < 1 << 256:
            raise RandomnessError(f"seed={seed!r} must be an integer in [0, 2^256)")
        return cls(_ShakeCounterDrbg(int(seed)))

    @property
    def is_deterministic(self) -> bool:
        return self.source_name.startswith("deterministic_for_tests")

    def __repr__(self) -> str:
        return f"ProtocolRandom({self.source_name})"

    # --- raw material -------------------------------------------------------------------------

    def bytes(self, n: int) -> bytes:
        """n uniform random bytes."""
        n = _check_count("n", n)
        out = self._source(n) if n else b""
        if len(out) != n:
            raise RandomnessError(f"random source returned {len(out)} bytes, {n} were asked for")
        return out

    def bits(self, n: int) -> np.ndarray:
        """n uniform bits as uint8 0/1 (one per byte)."""
        n = _check_count("n", n)
        raw = np.frombuffer(self.bytes((n + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw, count=n, bitorder="little")

    def uint64(self) -> int:
        """One uniform integer in [0, 2^64)."""
        return int.from_bytes(self.bytes(8), "little")

    # --- integers -----------------------------------------------------------------------------

    def _words(self, count: int, dtype) -> np.ndarray:
        return np.frombuffer(self.bytes(count * np.dtype(dtype).itemsize), dtype=dtype).copy()

    def _below(self, span: int, count: int) -> np.ndarray:
        """count uniform integers in [0, span) as uint64, by masked rejection sampling."""
        if span == 1:
            return np.zeros(count, dtype=np.uint64)
        dt = _word_dtype(span)
        mask = (1 << (span - 1).bit_length()) - 1
        out = np.empty(count, dtype=np.uint64)
        filled = 0
        while filled < count:
            need = count - filled
            # acceptance probability > 1/2: draw a little more than need / p to finish in ~1 pass
            exact = mask + 1 == span  # a power of two: every masked word is accepted
            draw = need if exact else need + need // 2 + 16
            w = self._words(draw, dt).astype(np.uint64) & np.uint64(mask)
            if not exact:
                w = w[w < np.uint64(span)][:need]
            out[filled:filled + w.size] = w
            filled += w.size
        return out

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint: bool = False):
        """Uniform integers in [low, high) (numpy Generator semantics, ``endpoint`` included).

        One value (of ``dtype``) when size is None, else an array of that shape."""
        if high is None:
            low, high = 0, low
        low, high = int(low), int(high)
        if endpoint:
            high += 1
        if high <= low:
            raise RandomnessError(f"integers: low={low} must be < high={high}")
        span = high - low
        if span > 1 << 64:
            raise RandomnessError(f"integers: range of {span} values exceeds 2^64")
        info = np.iinfo(dtype)
        if low < info.min or high - 1 > info.max:
            raise RandomnessError(f"integers: [{low}, {high}) does not fit {np.dtype(dtype)}")
        shape = () if size is None else (size if isinstance(size, tuple) else (int(size),))
        count = int(np.prod(shape, dtype=np.int64))
        _check_count("size", count)
        raw = self._below(span, count)
        if low >= 0:
            vals = (raw + np.uint64(low)).astype(dtype)
        elif span <= 1 << 63:
            vals = (raw.astype(np.int64) + np.int64(low)).astype(dtype)
        else:
            raise RandomnessError(f"integers: a range of {span} values below zero is not supported")
        if size is None:
            return np.dtype(dtype).type(vals[0])
        return vals.reshape(shape)

    def _smallest_keys(self, m: int, size: int) -> np.ndarray:
        """Indices of the ``size`` smallest of m independent 64-bit keys, in key order: a
        uniformly random ordered selection (a tie across the cut, probability ~ m / 2^64,
        redraws)."""
        while True:
            keys = self._words(m, np.uint64)
            if size == m:
                if np.unique(keys).size == m:
                    return np.argsort(keys, kind="stable").astype(np.int64)
                continue
            picked = np.argpartition(keys, size - 1)[:size]
            if np.count_nonzero(keys == keys[picked].max()) == 1:
                return picked[np.argsort(keys[picked], kind="stable")].astype(np.int64)

    def choice(self, n: int, size: int, replace: bool = False) -> np.ndarray:
        """``size`` positions out of range(n) (int64, in random order); distinct unless replace.

        Without replacement every ordered selection is exactly equally likely. Small samples
        first mark the values of uniform draws until at least ``size`` distinct ones are hit
        (given their number, that set is a uniform subset: the process is symmetric under
        relabelling), then keep ``size`` of them by random 64-bit keys; large samples put the
        keys on every position directly."""
        n = _check_count("n", n)
        size = _check_count("size", size)
        if replace:
            if n == 0 and size:
                raise RandomnessError("choice: cannot draw from an empty range")
            return self._below(n, size).astype(np.int64)
        if size > n:
            raise RandomnessError(f"choice: size={size} exceeds n={n} without replacement")
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        if 4 * size > n:
            return self._smallest_keys(n, size)
        hit = np.zeros(n, dtype=np.bool_)
        draws = size + size // 4 + 16
        while True:
            hit[self._below(n, draws).astype(np.intp)] = True
            distinct = np.flatnonzero(hit)
            if distinct.size >= size:
                return distinct[self._smallest_keys(distinct.size, size)].astype(np.int64)
            draws = 2 * (size - distinct.size) + 16

    def permutation(self, n: int) -> np.ndarray:
        """A uniform permutation of range(n), int64."""
        return self.choice(n, n)

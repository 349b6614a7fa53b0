"""Privacy amplification: Toeplitz hashing of the reconciled key with a fresh public seed.

Bits in and out are unpacked: uint8 arrays of 0/1, one bit per byte. The seed s (n + out_len - 1
bits, public, fresh per block) defines the out_len x n Toeplitz matrix T[i, j] = s[i - j + n - 1];
the output is y = T x over GF(2). Toeplitz matrices with a uniform seed form a 2-universal family
(Pr[T a = T b] = 2^-out_len for a != b), which the leftover hash lemma needs.

y is the middle product of two GF(2) polynomials, computed on packed 64-bit words with carry-less
multiplication (512-bit vpclmulqdq, pclmulqdq or portable code, whichever the host has) and a
transposed Karatsuba recursion (``postprocessing.gf2.toeplitz``). Memory is linear: about 2 bytes
of temporaries per input bit, so a 10^7-bit block needs ~20 MB beyond its inputs.
"""

from __future__ import annotations

import secrets

import numpy as np

from postprocessing.gf2.toeplitz import BEST_PATH, choose_tiling, shift_words, toeplitz_tiled

MAX_INPUT_BITS = 1 << 31  # blocks are 10^6..10^8 bits; beyond this a caller has a bug


class AmplificationError(ValueError):
    """Bad input to privacy amplification (lengths, dtype, bit values)."""


def new_seed(n: int, out_len: int) -> np.ndarray:
    """Fresh uniform Toeplitz seed for an n-bit input and out_len-bit output (from os.urandom)."""
    _check_lengths(n, out_len)
    n_seed = n + out_len - 1
    raw = np.frombuffer(secrets.token_bytes((n_seed + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=n_seed, bitorder="little")


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """Compress ``bits`` (uint8 0/1, n of them) to out_len bits: y = T x, T[i, j] = seed[i-j+n-1].

    ``seed`` is uint8 0/1 of length n + out_len - 1. Returns uint8 0/1 of length out_len.
    """
    return _toeplitz_hash(bits, seed, out_len, BEST_PATH)


def _toeplitz_hash(bits, seed, out_len, path: int) -> np.ndarray:
    bits = _as_bits(bits, "bits")
    seed = _as_bits(seed, "seed")
    n = bits.size
    _check_lengths(n, out_len)
    if seed.size != n + out_len - 1:
        raise AmplificationError(
            f"seed has {seed.size} bits; a {n}-bit input hashed to {out_len} bits needs "
            f"n + out_len - 1 = {n + out_len - 1}")
    rows_words = -(-out_len // 64)
    cols_words = -(-n // 64)
    n_rows, n_cols, tile = choose_tiling(rows_words, cols_words)
    n_pad = n_cols * tile * 64
    # padded problem: key columns j >= n are zero; diagonal d[k] = seed[k - (n_pad - n)]
    d = shift_words(_pack_words(seed), n_pad - n, (n_rows + n_cols) * tile)
    x = np.zeros(n_cols * tile, dtype=np.uint64)
    packed = _pack_words(bits)
    x[:packed.size] = packed
    packed.fill(0)
    y = toeplitz_tiled(d, x, n_rows, n_cols, tile, path)
    x.fill(0)
    out = np.unpackbits(y.view(np.uint8), count=out_len, bitorder="little")
    y.fill(0)
    return out


def _pack_words(bits01: np.ndarray) -> np.ndarray:
    """uint8 0/1 -> uint64 words, little-endian bit order, zero padded to whole words."""
    packed = np.packbits(bits01, bitorder="little")
    buf = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    buf[:packed.size] = packed
    packed.fill(0)
    return buf.view("<u8").astype(np.uint64, copy=False)


def _as_bits(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise AmplificationError(f"{name} must be a 1-D array of bits, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype != np.uint8:
        raise AmplificationError(f"{name} must have dtype uint8 (0/1 per byte), got {a.dtype}")
    if a.size and a.max() > 1:
        raise AmplificationError(f"{name} holds values other than 0 and 1 (expected unpacked bits)")
    return a


def _check_lengths(n: int, out_len: int) -> None:
    if not 1 <= n <= MAX_INPUT_BITS:
        raise AmplificationError(f"input length {n} bits is outside 1..{MAX_INPUT_BITS}")
    if not 1 <= out_len <= n:
        raise AmplificationError(f"out_len {out_len} is outside 1..{n} (the input length)")

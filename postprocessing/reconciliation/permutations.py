"""Per-pass random permutations that Alice and Bob derive from one shared 64-bit seed.

The seed travels in the protocol (``CascadeSetup``); node code draws it with ``secrets``.
The generator is splitmix64 driving a Fisher-Yates shuffle with Lemire's unbiased bounded
draw (two 32-bit draws per 64-bit output), so a shuffle is a pure function of (seed, frame
length, pass) on every platform.
Permutations are public: they only decide which bits share a block, never reveal key bits.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _splitmix64(state):
    """One splitmix64 step: returns (new state, 64-bit output); all uint64."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _bounded(state, x, bound):
    """Lemire's unbiased draw in [0, bound) from the 32-bit word ``x`` (uint64 < 2**32);
    a rejected word is replaced by the low half of a fresh output. Returns (state, j)."""
    m = x * bound
    low = m & _LOW32
    if low < bound:
        threshold = ((_LOW32 + np.uint64(1)) - bound) % bound
        while low < threshold:
            state, r = _splitmix64(state)
            m = (r & _LOW32) * bound
            low = m & _LOW32
    return state, np.int64(m >> np.uint64(32))


@numba.njit(cache=True, nogil=True)
def shuffle_pass(seed, pass_index, n_bits, perm, inv):
    """Fill ``perm`` (pass position -> frame index) and ``inv`` (its inverse), both int32[n_bits];
    an ``inv`` of length 0 skips the inverse.

    Layout: perm[q] is the frame index of the bit at position q of this pass; inv[perm[q]] == q.
    Fisher-Yates from the top; each 64-bit output gives the draws of two steps.
    """
    _, state = _splitmix64(np.uint64(seed) ^ (np.uint64(pass_index + 1) * _MIX2))
    # uint64 indices: no negative-index wrap-around test in the loops
    for q in range(np.uint64(n_bits)):
        perm[q] = q
    i = n_bits - 1
    while i > 0:
        state, r = _splitmix64(state)
        state, j = _bounded(state, r & _LOW32, np.uint64(i + 1))
        t = perm[np.uint64(i)]
        perm[np.uint64(i)] = perm[np.uint64(j)]
        perm[np.uint64(j)] = t
        i -= 1
        if i > 0:
            state, j = _bounded(state, r >> np.uint64(32), np.uint64(i + 1))
            t = perm[np.uint64(i)]
            perm[np.uint64(i)] = perm[np.uint64(j)]
            perm[np.uint64(j)] = t
            i -= 1
    if inv.shape[0] == n_bits:
        for q in range(np.uint64(n_bits)):
            inv[np.uint64(perm[q])] = q


BASE_STREAM = 1 << 20  # stream of the label shuffle shared by the halving passes
# a halving bit of SECOND_LABEL + t: bit t of the second pass's positions, not of the labels
SECOND_LABEL = 64


@numba.njit(cache=True, nogil=True)
def pass_permutations(seed, n_bits, halving_bits):
    """Shuffles of every pass: (order int32[n], perm, inv int32[n_rows, n], pinfo int64[2, P]).

    ``order`` (stream 0) is the first pass: both parties reorder their frame by it and the
    first pass then reads the reordered frame as it is (pinfo row -1). Every later pass p
    without a halving bit shuffles the reordered frame with its own row (stream p); all halving
    passes share one last row (stream BASE_STREAM) read as labels, except those with a halving
    bit SECOND_LABEL + t, which read row 0 (the second pass's shuffle: a position in that pass)
    as labels, bit t. pinfo[0, p] = row, pinfo[1, p] = halving bit or -1.
    """
    n_passes = halving_bits.shape[0]
    pinfo = np.empty((2, n_passes), dtype=np.int64)
    order = np.empty(n_bits, dtype=np.int32)
    shuffle_pass(seed, 0, n_bits, order, np.empty(0, dtype=np.int32))
    n_rows = 0
    any_halving = False
    for p in range(1, n_passes):
        if halving_bits[p] < 0:
            n_rows += 1
        elif halving_bits[p] < SECOND_LABEL:
            any_halving = True
    perm = np.empty((n_rows + (1 if any_halving else 0), n_bits), dtype=np.int32)
    inv = np.empty_like(perm)
    pinfo[0, 0] = -1
    pinfo[1, 0] = -1
    r = 0
    for p in range(1, n_passes):
        pinfo[1, p] = halving_bits[p]
        if halving_bits[p] < 0:
            pinfo[0, p] = r
            shuffle_pass(seed, p, n_bits, perm[r], inv[r])
            r += 1
        elif halving_bits[p] >= SECOND_LABEL:
            # the second pass is never a halving pass, so its row is row 0
            pinfo[0, p] = 0
            pinfo[1, p] = halving_bits[p] - SECOND_LABEL
        else:
            pinfo[0, p] = n_rows
    if any_halving:
        shuffle_pass(seed, BASE_STREAM, n_bits, perm[n_rows], inv[n_rows])
    return order, perm, inv, pinfo


def permutations_for(seed: int, n_bits: int, halving_bits):
    """Python entry: the seed is taken modulo 2**64 so any non-negative int is accepted."""
    return pass_permutations(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.int64(n_bits),
                             np.asarray(halving_bits, dtype=np.int64))

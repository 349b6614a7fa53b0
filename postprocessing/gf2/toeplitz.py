"""Toeplitz matrix-vector products over GF(2) on packed words, by transposed Karatsuba.

A square Toeplitz matrix T of N = 64*w rows is held by its diagonal vector ``d`` (2N - 1 bits in
2w words, last bit ignored): T[i, j] = d[i - j + N - 1]. Splitting T into 2x2 blocks of size N/2
gives blocks that are Toeplitz again (diagonal vectors d[0:N-1], d[N/2:3N/2-1], d[N:2N-1]), and
    y_top = T0 (x0 + x1) + (T_-1 + T0) x1,   y_bot = T0 (x0 + x1) + (T_1 + T0) x0
needs three half-size products instead of four (the transpose of Karatsuba's trick, so the
middle product costs one N x N multiplication). The recursion stops at ``w <= BASE_WORDS`` words,
where each 64 x 64 block is one carry-less multiply of a 128-bit diagonal slice by a 64-bit word.

Layout: uint64 words, little-endian bit order (see ``postprocessing.gf2``).
"""

from __future__ import annotations

import numba
import numpy as np

from postprocessing.gf2.clmul import (
    HAVE_PCLMUL, HAVE_VPCLMUL512, clmul64_hw, clmul64_sw, clmul_rows_512, copy_words,
    xor_words)

BASE_WORDS = 64  # schoolbook below this many words; tiles are B * 2^L words, 32 < B <= 64
PATH_SOFTWARE, PATH_PCLMUL, PATH_VPCLMUL512 = 0, 1, 2
BEST_PATH = PATH_VPCLMUL512 if HAVE_VPCLMUL512 else PATH_PCLMUL if HAVE_PCLMUL else PATH_SOFTWARE
_ACC_WORDS = 16 * ((BASE_WORDS + 8) // 8)  # lo/hi of the w + 1 row sums, in groups of 8 rows
_SLACK_WORDS = 8  # the 8-row groups may read up to 7 words past a diagonal vector

_U1 = np.uint64(1)
_U63 = np.uint64(63)


@numba.njit(cache=True, nogil=True)
def _base_hw(buf, doff, xoff, yoff, w):
    # acc(I) = xor_J clmul(d[I - J + w - 1], x[J]); y[I] = bits 63..126 of acc(I) ^ (acc(I+1) << 64)
    lo0 = np.uint64(0)
    hi0 = np.uint64(0)
    for j in range(w):
        lo, hi = clmul64_hw(buf[doff + w - 1 - j], buf[xoff + j])
        lo0 ^= lo
        hi0 ^= hi
    for i in range(w):
        lo1 = np.uint64(0)
        hi1 = np.uint64(0)
        for j in range(w):
            lo, hi = clmul64_hw(buf[doff + i + w - j], buf[xoff + j])
            lo1 ^= lo
            hi1 ^= hi
        buf[yoff + i] = (lo0 >> _U63) | (hi0 << _U1) ^ (lo1 << _U1)
        lo0 = lo1
        hi0 = hi1


@numba.njit(cache=True, nogil=True)
def _base_sw(buf, doff, xoff, yoff, w):
    lo0 = np.uint64(0)
    hi0 = np.uint64(0)
    for j in range(w):
        lo, hi = clmul64_sw(buf[doff + w - 1 - j], buf[xoff + j])
        lo0 ^= lo
        hi0 ^= hi
    for i in range(w):
        lo1 = np.uint64(0)
        hi1 = np.uint64(0)
        for j in range(w):
            lo, hi = clmul64_sw(buf[doff + i + w - j], buf[xoff + j])
            lo1 ^= lo
            hi1 ^= hi
        buf[yoff + i] = (lo0 >> _U63) | (hi0 << _U1) ^ (lo1 << _U1)
        lo0 = lo1
        hi0 = hi1


if HAVE_VPCLMUL512:
    @numba.njit(cache=True, nogil=True)
    def _base_vec(buf, doff, xoff, yoff, w, acc):
        clmul_rows_512(buf, doff + w - 1, xoff, w, (w + 8) // 8, acc)
        for i in range(w):
            buf[yoff + i] = ((acc[2 * i] >> _U63) | (acc[2 * i + 1] << _U1)
                             ^ (acc[2 * i + 2] << _U1))
else:
    @numba.njit(cache=True, nogil=True)
    def _base_vec(buf, doff, xoff, yoff, w, acc):
        _base_hw(buf, doff, xoff, yoff, w)


@numba.njit(cache=True, nogil=True)
def _toeplitz_square(buf, doff, xoff, yoff, w, woff, acc, path):
    """buf[yoff:yoff+w] = T(buf[doff:doff+2w]) buf[xoff:xoff+w], scratch buf[woff:woff+4w].

    Depth-first Karatsuba with an explicit stack (numba cannot cache recursive functions).
    Frame columns: doff, xoff, yoff, woff, w, stage.
    """
    depth = 1
    while (w >> (depth - 1)) > BASE_WORDS:
        depth += 1
    st = np.empty((depth + 1, 6), dtype=np.int64)
    st[0, 0] = doff
    st[0, 1] = xoff
    st[0, 2] = yoff
    st[0, 3] = woff
    st[0, 4] = w
    st[0, 5] = 0
    top = 0
    while top >= 0:
        fd = st[top, 0]
        fx = st[top, 1]
        fy = st[top, 2]
        fwk = st[top, 3]
        fw = st[top, 4]
        stage = st[top, 5]
        if fw <= BASE_WORDS:
            if path == PATH_VPCLMUL512:
                _base_vec(buf, fd, fx, fy, fw, acc)
            elif path == PATH_PCLMUL:
                _base_hw(buf, fd, fx, fy, fw)
            else:
                _base_sw(buf, fd, fx, fy, fw)
            top -= 1
            continue
        h = fw // 2
        xs = fwk
        ds = fwk + h
        p = ds + fw
        nxt = p + h
        if stage == 0:  # p0 = T0 (x0 + x1) -> y_top
            xor_words(buf, xs, fx, fx + h, h)
            cd, cx, cy = fd + h, xs, fy
        elif stage == 1:  # y_bot = p0; p1 = (T_-1 + T0) x1
            copy_words(buf, fy + h, fy, h)
            xor_words(buf, ds, fd, fd + h, fw)
            cd, cx, cy = ds, fx + h, p
        elif stage == 2:  # y_top += p1; p2 = (T_1 + T0) x0
            xor_words(buf, fy, fy, p, h)
            xor_words(buf, ds, fd + fw, fd + h, fw)
            cd, cx, cy = ds, fx, p
        else:  # y_bot += p2
            xor_words(buf, fy + h, fy + h, p, h)
            top -= 1
            continue
        st[top, 5] = stage + 1
        top += 1
        st[top, 0] = cd
        st[top, 1] = cx
        st[top, 2] = cy
        st[top, 3] = nxt
        st[top, 4] = h
        st[top, 5] = 0


@numba.njit(cache=True, nogil=True)
def toeplitz_tiled(d, x, n_row_tiles, n_col_tiles, tile_words, path):
    """y = T x for a (R*S) x (C*S)-word Toeplitz matrix cut into S x S tiles.

    d: uint64[(R + C) * S], diagonal vector (T[i, j] = d[i - j + C*S*64 - 1]);
    x: uint64[C * S]; returns uint64[R * S]. path: PATH_* (the caller checks the host has it).
    The scratch buffers (key-dependent) are wiped.
    """
    s = tile_words
    nd = d.size
    nx = x.size
    # one buffer: [d | x | tile result | 4 S scratch], so kernels address everything by offset
    buf = np.zeros(nd + nx + 5 * s + _SLACK_WORDS, dtype=np.uint64)
    acc = np.zeros(_ACC_WORDS, dtype=np.uint64)
    buf[:nd] = d
    buf[nd:nd + nx] = x
    yoff = nd + nx
    y = np.zeros(n_row_tiles * s, dtype=np.uint64)
    for r in range(n_row_tiles):
        for c in range(n_col_tiles):
            _toeplitz_square(buf, (r - c + n_col_tiles - 1) * s, nd + c * s, yoff, s,
                             yoff + s, acc, path)
            for i in range(s):
                y[r * s + i] ^= buf[yoff + i]
    buf[:] = 0
    acc[:] = 0
    return y


@numba.njit(cache=True, nogil=True)
def shift_words(src, shift_bits, n_words):
    """uint64[n_words] holding the polynomial src * z^shift_bits (bits past the end dropped)."""
    out = np.zeros(n_words, dtype=np.uint64)
    q = shift_bits // 64
    r = np.uint64(shift_bits % 64)
    for i in range(n_words - q):
        if i >= src.size + 1:
            break
        v = np.uint64(0)
        if i < src.size:
            v = src[i] << r
        if r and i >= 1 and i - 1 < src.size:
            v |= src[i - 1] >> (np.uint64(64) - r)
        out[q + i] = v
    return out


def _tile_cost(b: int, levels: int) -> float:
    """Estimated time (ns, measured on the development host) of one tile of b * 2^levels words."""
    if BEST_PATH == PATH_VPCLMUL512:
        leaf = 0.7 * 2 * ((b + 8) // 8) * b  # ~0.7 ns per 512-bit vpclmulqdq, two per 8 rows
    elif BEST_PATH == PATH_PCLMUL:
        leaf = 1.4 * b * (b + 1)
    else:
        leaf = 40.0 * b * (b + 1)
    # Karatsuba nodes: ~130 ns of bookkeeping each plus ~4.5 w words of vector xors (~0.1 ns/word)
    nodes = (3.0 ** levels - 1.0) / 2.0
    xor_words = 4.5 * b * (2 ** levels) * 2.0 * (1.5 ** levels - 1.0)
    return 3.0 ** levels * leaf + 130.0 * nodes + 0.1 * xor_words


def choose_tiling(rows_words: int, cols_words: int) -> tuple[int, int, int]:
    """(R, C, S): tile size S = B * 2^L words minimising the estimated work for the matrix."""
    best = None
    levels = 0
    while True:
        for b in range(BASE_WORDS // 2 + 1, BASE_WORDS + 1):
            s = b << levels
            r = -(-rows_words // s)
            c = -(-cols_words // s)
            cost = r * c * _tile_cost(b, levels)
            if best is None or cost < best[0]:
                best = (cost, r, c, s)
        if (BASE_WORDS // 2 + 1) << levels > max(rows_words, cols_words):
            break
        levels += 1
    return best[1], best[2], best[3]

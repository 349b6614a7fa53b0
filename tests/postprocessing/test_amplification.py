"""Toeplitz privacy amplification: exact against independent references, both clmul paths."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.amplification import (
    AmplificationError, _toeplitz_hash, new_seed, toeplitz_hash)
from postprocessing.gf2.clmul import (
    HAVE_PCLMUL, clmul64, clmul64_hw, clmul64_sw, copy_words, xor_words)
from postprocessing.gf2.toeplitz import (
    BASE_WORDS, BEST_PATH, PATH_PCLMUL, PATH_SOFTWARE, PATH_VPCLMUL512, choose_tiling,
    shift_words)

# every path runs on every host: the hardware ones fall back to software where missing
PATHS = (PATH_SOFTWARE, PATH_PCLMUL, PATH_VPCLMUL512)

u64 = st.integers(0, (1 << 64) - 1)


def matrix_reference(x, seed, out_len):
    """y = T x mod 2 with T built element by element: T[i, j] = seed[i - j + n - 1]."""
    n = x.size
    i = np.arange(out_len)[:, None]
    j = np.arange(n)[None, :]
    t = seed[i - j + n - 1].astype(np.int64)
    return ((t @ x.astype(np.int64)) % 2).astype(np.uint8)


def bigint_reference(x, seed, out_len):
    """Carry-less product of Python ints: y_i = coefficient i + n - 1 of seed(z) * x(z)."""
    n = x.size
    s = int.from_bytes(np.packbits(seed, bitorder="little").tobytes(), "little")
    prod = 0
    for j in np.flatnonzero(x):
        prod ^= s << int(j)
    window = prod >> (n - 1)
    return np.array([(window >> i) & 1 for i in range(out_len)], dtype=np.uint8)


def python_clmul(a, b):
    r = 0
    for i in range(64):
        if (b >> i) & 1:
            r ^= a << i
    return r


@st.composite
def toeplitz_case(draw, max_n=300):
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, n))
    seed = np.random.default_rng(draw(st.integers(0, 2**32))).integers(0, 2, 2 * n + m,
                                                                      dtype=np.uint8)
    return seed[:n], seed[n:2 * n + m - 1].copy(), m


@given(u64, u64)
def test_clmul_paths_agree_with_python_carryless(a, b):
    want = python_clmul(a, b)
    for lo, hi in (clmul64_sw(np.uint64(a), np.uint64(b)), clmul64_hw(np.uint64(a), np.uint64(b))):
        assert (int(hi) << 64) | int(lo) == want


def test_clmul_choice_matches_host():
    if HAVE_PCLMUL:
        assert clmul64 is clmul64_hw and clmul64_hw is not clmul64_sw
    else:
        assert clmul64 is clmul64_sw
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    if numba.config.CPU_NAME in (None, "host"):
        assert HAVE_PCLMUL == ("pclmulqdq" in flags)


@given(toeplitz_case())
def test_matches_matrix_product_all_paths(case):
    x, seed, m = case
    want = matrix_reference(x, seed, m)
    for path in PATHS:
        assert np.array_equal(_toeplitz_hash(x, seed, m, path), want)


@given(toeplitz_case(max_n=2000))
@settings(max_examples=30)
def test_matches_bigint_reference_multiword(case):
    x, seed, m = case
    assert np.array_equal(toeplitz_hash(x, seed, m), bigint_reference(x, seed, m))


@pytest.mark.parametrize("n, m", [(10_000, 5_000), (30_017, 29_999), (100_000, 40_001),
                                  (65_536, 1)])
def test_large_blocks_match_bigint_reference(n, m):
    rng = np.random.default_rng(n + m)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    assert np.array_equal(toeplitz_hash(x, seed, m), bigint_reference(x, seed, m))


@pytest.mark.parametrize("path", PATHS)
def test_every_path_matches_on_a_multilevel_block(path):
    # 4 * 10^4 bits recurses several Karatsuba levels below the tile size
    rng = np.random.default_rng(7)
    n, m = 40_000, 19_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    assert np.array_equal(_toeplitz_hash(x, seed, m, path), bigint_reference(x, seed, m))


def test_best_path_is_the_default():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2, 3000, dtype=np.uint8)
    seed = rng.integers(0, 2, 3000 + 1000 - 1, dtype=np.uint8)
    assert np.array_equal(toeplitz_hash(x, seed, 1000), _toeplitz_hash(x, seed, 1000, BEST_PATH))


def test_is_linear_in_the_key():
    rng = np.random.default_rng(3)
    n, m = 5_000, 2_500
    a, b = rng.integers(0, 2, (2, n), dtype=np.uint8)
    seed = new_seed(n, m)
    assert np.array_equal(toeplitz_hash(a ^ b, seed, m),
                          toeplitz_hash(a, seed, m) ^ toeplitz_hash(b, seed, m))


def test_input_is_not_modified_and_bool_accepted():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, 1000, dtype=np.uint8)
    seed = rng.integers(0, 2, 1000 + 400 - 1, dtype=np.uint8)
    keep = x.copy()
    y = toeplitz_hash(x.astype(bool), seed, 400)
    assert np.array_equal(x, keep)
    assert y.dtype == np.uint8 and y.shape == (400,)
    assert np.array_equal(y, matrix_reference(x, seed, 400))


def test_new_seed_shape_and_freshness():
    a = new_seed(1000, 300)
    b = new_seed(1000, 300)
    assert a.dtype == np.uint8 and a.shape == (1299,) and set(np.unique(a)) <= {0, 1}
    # two fresh 1299-bit seeds coincide with probability 2^-1299
    assert not np.array_equal(a, b)


def test_new_seed_is_balanced():
    n_bits = 200_000
    ones = int(new_seed(n_bits, 1).sum())
    # Binomial(n, 1/2): sigma = sqrt(n)/2 ~ 224; 5 sigma
    assert abs(ones - n_bits / 2) <= 5 * np.sqrt(n_bits) / 2


@pytest.mark.parametrize("rows, cols", [(1, 1), (7, 300), (78_125, 156_250), (300, 7), (17, 17)])
def test_tiling_covers_the_matrix(rows, cols):
    r, c, s = choose_tiling(rows, cols)
    assert r * s >= rows and c * s >= cols
    b = s
    while b > BASE_WORDS:
        assert b % 2 == 0
        b //= 2
    assert BASE_WORDS // 2 < b <= BASE_WORDS


@pytest.mark.parametrize("bad", [
    dict(bits=np.zeros(10, np.uint8), seed=np.zeros(13, np.uint8), out_len=5),  # seed short
    dict(bits=np.zeros(10, np.uint8), seed=np.zeros(20, np.uint8), out_len=11),  # out > n
    dict(bits=np.zeros(10, np.uint8), seed=np.zeros(9, np.uint8), out_len=0),
    dict(bits=np.full(10, 2, np.uint8), seed=np.zeros(14, np.uint8), out_len=5),
    dict(bits=np.zeros(10, np.int64), seed=np.zeros(14, np.uint8), out_len=5),
    dict(bits=np.zeros((2, 5), np.uint8), seed=np.zeros(14, np.uint8), out_len=5),
    dict(bits=np.zeros(0, np.uint8), seed=np.zeros(0, np.uint8), out_len=1),
])
def test_bad_input_raises_typed_error(bad):
    with pytest.raises(AmplificationError):
        toeplitz_hash(**bad)


@given(st.lists(u64, min_size=1, max_size=20), st.integers(0, 700), st.integers(1, 40))
def test_shift_words_is_multiplication_by_a_power_of_z(words, shift, n_words):
    src = np.array(words, dtype=np.uint64)
    as_int = sum(int(w) << (64 * i) for i, w in enumerate(words))
    want = (as_int << shift) % (1 << (64 * n_words))
    got = shift_words(src, shift, n_words)
    assert sum(int(w) << (64 * i) for i, w in enumerate(got)) == want


@given(st.integers(0, 40), st.data())
def test_word_xor_and_copy_kernels(n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    buf = rng.integers(0, 2**63, 3 * n + 8, dtype=np.uint64)
    before = buf.copy()
    _xor(buf, 2 * n, 0, n, n)  # disjoint destination
    assert np.array_equal(buf[2 * n:3 * n], before[:n] ^ before[n:2 * n])
    assert np.array_equal(buf[3 * n:], before[3 * n:])  # nothing written past the range
    mid = buf.copy()
    _xor(buf, 0, 0, n, n)  # in place
    assert np.array_equal(buf[:n], mid[:n] ^ mid[n:2 * n])
    _copy(buf, n, 2 * n, n)
    assert np.array_equal(buf[n:2 * n], mid[2 * n:3 * n])


@numba.njit
def _xor(buf, dst, a, b, n):
    xor_words(buf, dst, a, b, n)


@numba.njit
def _copy(buf, dst, a, n):
    copy_words(buf, dst, a, n)


def block_reference(x, seed, out_len, row_cuts, col_cuts):
    """y from sub-blocks: block (rows r0.., cols c0..) is Toeplitz with its own seed window."""
    n = x.size
    y = np.zeros(out_len, dtype=np.uint8)
    for r0, r1 in zip(row_cuts[:-1], row_cuts[1:]):
        for c0, c1 in zip(col_cuts[:-1], col_cuts[1:]):
            nc, mr = c1 - c0, r1 - r0
            start = r0 - c0 + n - nc  # T[r0 + i, c0 + j] = seed[start + i - j + nc - 1]
            window = seed[start:start + nc + mr - 1]
            assert mr <= nc  # toeplitz_hash only compresses
            y[r0:r1] ^= toeplitz_hash(x[c0:c1], window, mr)
    return y


@pytest.mark.slow
def test_ten_million_bit_block_matches_blockwise_product_within_memory():
    import tracemalloc

    rng = np.random.default_rng(10)
    n, m = 10_000_000, 5_000_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    toeplitz_hash(x[:1000], seed[:1499], 500)  # load the compiled kernels before tracing
    tracemalloc.start()
    y = toeplitz_hash(x, seed, m)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # numpy temporaries: packed words (~n/4 bytes in all) and the unpacked output (m bytes), about
    # 1.2 bytes per input bit; byte-per-bit padded copies of seed and key would add 2.5 more
    assert peak < 2 * n
    # independent split: 4 row bands x 4 column bands of different sizes, each a smaller product
    want = block_reference(x, seed, m, [0, 1_234_567, 2_600_001, 3_900_000, m],
                           [0, 2_500_000, 4_000_003, 7_777_777, n])
    assert np.array_equal(y, want)


def test_block_reference_helper_agrees_with_the_matrix_product():
    rng = np.random.default_rng(12)
    n, m = 900, 400
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    got = block_reference(x, seed, m, [0, 123, 250, m], [0, 300, 555, 740, n])
    assert np.array_equal(got, matrix_reference(x, seed, m))


@pytest.mark.slow
def test_generic_cpu_falls_back_to_software_at_import(tmp_path):
    # numba told to target a generic x86-64 cannot emit pclmulqdq: the import must notice and
    # choose the portable kernels, and the hash must not change
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from postprocessing.gf2 import clmul, toeplitz\n"
        "from postprocessing.amplification import toeplitz_hash\n"
        "assert not clmul.HAVE_PCLMUL and not clmul.HAVE_VPCLMUL512\n"
        "assert clmul.clmul64 is clmul.clmul64_sw\n"
        "assert toeplitz.BEST_PATH == toeplitz.PATH_SOFTWARE\n"
        "rng = np.random.default_rng(5)\n"
        "x = rng.integers(0, 2, 3000, dtype=np.uint8)\n"
        "s = rng.integers(0, 2, 3000 + 1200 - 1, dtype=np.uint8)\n"
        "print(''.join(map(str, toeplitz_hash(x, s, 1200))))\n"
    )
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, 3000, dtype=np.uint8)
    s = rng.integers(0, 2, 3000 + 1200 - 1, dtype=np.uint8)
    assert out.stdout.strip() == "".join(map(str, bigint_reference(x, s, 1200)))

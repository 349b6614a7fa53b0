"""Toeplitz privacy amplification and verification hashing throughput.

Baseline: a plain numpy float-FFT Toeplitz product (convolution of the 0/1 seed with the key,
rounded and reduced mod 2), the usual way to write this step in numpy.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import best_time, emit, progress
from postprocessing.amplification import new_seed, toeplitz_hash
from postprocessing.gf2.toeplitz import BEST_PATH
from postprocessing.verification import alice_verification_message

BENCH = "amplification"
PATH_NAMES = {0: "software", 1: "pclmulqdq", 2: "vpclmulqdq-512"}


def toeplitz_fft_numpy(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """Baseline: y_i = sum_j seed[i - j + n - 1] x_j mod 2 by float FFT convolution."""
    n = bits.size
    size = 1 << int(np.ceil(np.log2(seed.size + n - 1)))
    conv = np.fft.irfft(np.fft.rfft(seed.astype(np.float64), size) *
                        np.fft.rfft(bits.astype(np.float64), size), size)
    return (np.rint(conv[n - 1:n - 1 + out_len]).astype(np.int64) & 1).astype(np.uint8)


def best_cpu_time(fn, repeat: int) -> float:
    """Smallest thread CPU time of ``repeat`` calls: steadier than wall time on a shared host."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def main() -> None:
    rng = np.random.default_rng(1)
    for n in (1_000_000, 10_000_000):
        out_len = n // 2
        progress(f"toeplitz n={n}")
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        seed = new_seed(n, out_len)
        ours = toeplitz_hash(bits, seed, out_len)
        reps = 5 if n < 5e6 else 3
        t_ours = best_time(lambda: toeplitz_hash(bits, seed, out_len), repeat=reps)
        cpu_ours = best_cpu_time(lambda: toeplitz_hash(bits, seed, out_len), reps)
        base = toeplitz_fft_numpy(bits, seed, out_len)
        t_base = best_time(lambda: toeplitz_fft_numpy(bits, seed, out_len), repeat=1)
        cpu_base = best_cpu_time(lambda: toeplitz_fft_numpy(bits, seed, out_len), 1)
        emit(BENCH, figure="toeplitz_hash", input_bits=n, output_bits=out_len,
             clmul_path=PATH_NAMES[BEST_PATH], seconds=round(t_ours, 4),
             input_mbit_s=round(n / t_ours / 1e6, 2),
             baseline="numpy float FFT", baseline_seconds=round(t_base, 4),
             baseline_input_mbit_s=round(n / t_base / 1e6, 2),
             ratio=round(t_base / t_ours, 1), cpu_seconds=round(cpu_ours, 4),
             cpu_input_mbit_s=round(n / cpu_ours / 1e6, 2), baseline_cpu_seconds=round(cpu_base, 4),
             cpu_ratio=round(cpu_base / cpu_ours, 1),
             outputs_equal=bool(np.array_equal(ours, base)))
    for n in (1_000_000, 10_000_000):
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        t_ver = best_time(lambda: alice_verification_message(bits, 1e-15), repeat=3)
        msg = alice_verification_message(bits, 1e-15)
        emit(BENCH, figure="verification_tag", input_bits=n, eps_cor=1e-15,
             tag_bits=msg.tag_bits, points=len(msg.points), seconds=round(t_ver, 5),
             input_mbit_s=round(n / t_ver / 1e6, 1))


if __name__ == "__main__":
    main()

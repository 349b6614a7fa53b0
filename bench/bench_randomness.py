"""Protocol randomness (``postprocessing.randomness.ProtocolRandom``) throughput.

The question: is ``os.urandom`` fast enough for the bulk draws of one block (a Toeplitz seed of
n + l - 1 bits, the test sample of k out of n positions), or would a DRBG be needed? Baseline in
the same run: numpy's PCG64 (not cryptographic: what the protocol used before), same sizes.
"""

from __future__ import annotations

import numpy as np

from bench.common import best_time, emit
from postprocessing.randomness import ProtocolRandom

BENCH = "randomness"


def main() -> None:
    r = ProtocolRandom()
    pcg = np.random.default_rng(1)  # baseline only; never in the protocol path
    for n_bits in (10**6, 10**7):
        t = best_time(lambda: r.bits(n_bits), repeat=5)
        t0 = best_time(lambda: pcg.integers(0, 2, size=n_bits, dtype=np.uint8), repeat=5)
        emit(BENCH, what="bits (Toeplitz seed)", n_bits=n_bits, source="os.urandom",
             mbit_per_s=round(n_bits / t / 1e6, 1), baseline="numpy PCG64 integers(0, 2)",
             baseline_mbit_per_s=round(n_bits / t0 / 1e6, 1), ratio=round(t0 / t, 2))
    n_bytes = 1 << 24
    t = best_time(lambda: r.bytes(n_bytes), repeat=5)
    t0 = best_time(lambda: pcg.bytes(n_bytes), repeat=5)
    emit(BENCH, what="bytes", n_bytes=n_bytes, source="os.urandom",
         mbyte_per_s=round(n_bytes / t / 1e6, 1), baseline="numpy PCG64 bytes",
         baseline_mbyte_per_s=round(n_bytes / t0 / 1e6, 1), ratio=round(t0 / t, 2))
    for n, k in ((10**6, 10**5), (10**7, 10**6)):
        t = best_time(lambda: r.choice(n, k), repeat=3)
        t0 = best_time(lambda: pcg.choice(n, size=k, replace=False), repeat=3)
        emit(BENCH, what="test sample (choice without replacement)", n=n, k=k,
             source="os.urandom", seconds=round(t, 4), baseline="numpy PCG64 choice",
             baseline_seconds=round(t0, 4), ratio=round(t0 / t, 2))


if __name__ == "__main__":
    main()

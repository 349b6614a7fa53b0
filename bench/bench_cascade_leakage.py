"""What Cascade's two-way traffic costs in secret key (security issue 13, section 4).

One sifted block of 1e6 bits per QBER (1, 2, 5 %), split as ``distill`` does by default
(test sample max(1000, 10 %), eps_sec 1e-10, eps_cor 1e-15, schedule "yan", Q_tol = the
sample's error rate): Bob's bits are Alice's with independent errors at that rate; the key
input is reconciled, the verification tag drawn, and the Tomamichel et al. 2012 length is
computed with leak_EC under three accountings (``reconciliation.leakage``):
  * old: Alice's parity bits + tag (the baseline, what distill charges today);
  * error_pattern_public: the Tupkary-Lutkenhaus approach with a phase-error bound (the
    error pattern given to Eve costs the Tomamichel bound nothing): Alice's parities + tag;
  * full_transcript: Alice's + Bob's compared parities + tag (valid with any bound).
Each line: the counts, the three key lengths and what each costs against the old one.
"""

from __future__ import annotations

import math
import time

import numpy as np

from bench.common import emit, progress
from postprocessing import finite_key as fk
from postprocessing.reconciliation import reconcile
from postprocessing.reconciliation.leakage import (ERROR_PATTERN_PUBLIC, FULL_TRANSCRIPT,
                                                   CascadeTraffic, leak_ec_bits)
from postprocessing.verification import verify

SIFTED_BITS = 1_000_000
SAMPLE_FRACTION, MIN_SAMPLE = 0.1, 1000
EPS_SEC, EPS_COR = 1e-10, 1e-15
QBERS = (0.01, 0.02, 0.05)


def main() -> None:
    rng = np.random.default_rng(2023)
    k = max(MIN_SAMPLE, math.ceil(SAMPLE_FRACTION * SIFTED_BITS))
    n = SIFTED_BITS - k
    for q in QBERS:
        progress(f"cascade_leakage QBER {q}")
        q_sample = rng.binomial(k, q) / k
        alice = rng.integers(0, 2, n, dtype=np.uint8)
        bob = alice ^ (rng.random(n) < q).astype(np.uint8)
        t0 = time.perf_counter()
        rec = reconcile(alice, bob, q_sample, schedule="yan", seed=int(rng.integers(2**63)))
        t_rec = time.perf_counter() - t0
        ver = verify(alice, rec.bits, EPS_COR, rng)
        traffic = CascadeTraffic.of(rec, tag_bits=int(ver.disclosed_bits))
        leaks = {"old": rec.disclosed_bits + ver.disclosed_bits,
                 "error_pattern_public": leak_ec_bits(traffic, accounting=ERROR_PATTERN_PUBLIC),
                 "full_transcript": leak_ec_bits(traffic, accounting=FULL_TRANSCRIPT)}
        keys = {name: fk.bb84_key_length(n, k, q_sample, leak, EPS_SEC, EPS_COR)
                for name, leak in leaks.items()}
        emit("cascade_leakage", qber=q, sample_qber=q_sample, sifted_bits=SIFTED_BITS,
             key_input_bits=n, sample_bits=k, verified=bool(ver.ok),
             alice_parity_bits=traffic.alice_parity_bits,
             bob_compared_bits=traffic.bob_compared_bits, tag_bits=traffic.tag_bits,
             efficiency=rec.efficiency,
             **{f"leak_{name}": leak for name, leak in leaks.items()},
             **{f"key_{name}": key for name, key in keys.items()},
             key_cost_error_pattern_public=keys["old"] - keys["error_pattern_public"],
             key_cost_full_transcript=keys["old"] - keys["full_transcript"],
             reconcile_s=t_rec)
        for arr in (alice, bob, rec.bits):
            arr.fill(0)


if __name__ == "__main__":
    main()

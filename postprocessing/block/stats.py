"""The record of one block at one end: sizes, estimates, leakage, the bound, the epsilons, why
it stopped, and the time each step took. JSON-able via ``to_dict``; never holds key bits."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

from postprocessing import estimation as est


@dataclass
class BlockStats:
    """What happened to one block (Bob's record is the fuller one: he alone sees the events)."""

    protocol: str
    n_events: int = 0
    n_pulses: int = 0
    sifted_bits: int = 0
    sample_bits: int = 0
    key_input_bits: int = 0
    qber_estimate: float = math.nan
    qber_upper: float = math.nan
    leak_ec: int = 0
    cascade_disclosed_bits: int = 0
    tag_bits: int = 0
    reconcile_efficiency: float = math.nan
    round_trips: int = 0
    key_length: int = 0
    bound: str = ""
    eps_sec: float = math.nan
    eps_cor: float = math.nan
    bound_terms: dict = field(default_factory=dict)
    conclusive_per_pulse: float = math.nan
    multi_click_fraction: float = math.nan
    # Per basis [Z, X]: error rate and the bits it was measured on. Sampled protocols: the test
    # sample. Decoy BB84: X is the disclosed test basis; Z the key basis as Bob's error
    # correction found it (NaN and 0 until then). Bob's polarization loop steers on X.
    qber_by_basis: list = field(default_factory=list)
    sample_by_basis: list = field(default_factory=list)
    qber_upper_by_basis: list = field(default_factory=list)
    decoy_counts: list = field(default_factory=list)
    decoy_test_errors: list = field(default_factory=list)
    lt3_counts: dict = field(default_factory=dict)
    aborted: bool = False
    abort_reasons: list = field(default_factory=list)
    abort_details: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    sift_counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def record_abort(self, decision: est.AbortDecision) -> None:
        self.aborted = True
        for r, d in zip(decision.reasons, decision.details):
            if r.value not in self.abort_reasons:
                self.abort_reasons.append(r.value)
            self.abort_details.append(d)

    @contextlib.contextmanager
    def timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[stage] = self.timings_s.get(stage, 0.0) + time.perf_counter() - t0

"""What the node enforces, read from ``postprocessing`` at run time (never typed here).

The paper package must follow the node's rules as other branches change them, so defaults come
from ``distill``'s signature, protocols from ``distill.PROTOCOLS``, and a protocol-randomness
source from ``postprocessing.randomness`` when that module exists. Only public names are used;
where one may be missing (``finite_key.B92_QBER_CEILING``) its absence is handled.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

from postprocessing import distill as dist
from postprocessing import estimation as est
from postprocessing import finite_key as fk


def distill_default(name: str):
    """Default of one keyword of ``distill`` (the node's per-block setting)."""
    param = inspect.signature(dist.distill).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise KeyError(f"distill has no default for {name!r}")
    return param.default


def accepted_kwargs(func, candidates: dict) -> dict:
    """The subset of ``candidates`` that ``func`` accepts (signatures change across branches)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(candidates)
    return {k: v for k, v in candidates.items() if k in params}


def protocol_rng(seed: int):
    """A deterministic protocol-randomness source for a reproducible run.

    The node draws from the OS CSPRNG; a reproduction needs a fixed seed, so it takes the
    explicitly-named deterministic source of ``postprocessing.randomness`` when present and a
    seeded numpy Generator (the interface ``distill`` takes today) otherwise.
    """
    try:
        from postprocessing import randomness  # type: ignore[attr-defined]
        return randomness.ProtocolRandom.deterministic_for_tests(seed)
    except (ImportError, AttributeError):
        return np.random.default_rng(seed)


def node_protocols() -> tuple[str, ...]:
    return tuple(dist.PROTOCOLS)


@dataclass(frozen=True)
class QberRule:
    """The node's QBER abort rule on a test sample, with its settings."""

    protocol: str
    threshold: float
    eps: float
    sample_fraction: float
    min_sample_size: int

    @classmethod
    def for_protocol(cls, protocol: str) -> "QberRule":
        thr = float(distill_default("qber_threshold"))
        ceiling = getattr(fk, "B92_QBER_CEILING", None)
        if protocol == "b92" and ceiling is not None:
            thr = min(thr, float(ceiling))
        return cls(protocol, thr, float(distill_default("eps_sec")),
                   float(distill_default("sample_fraction")),
                   int(distill_default("min_sample_size")))

    def key_bits_for(self, k: int) -> int:
        """Unsampled key bits beside a k-bit sample at the node's sample fraction."""
        return max(1, round(k * (1.0 - self.sample_fraction) / self.sample_fraction))

    def aborts(self, errors: int, k: int) -> bool:
        upper = est.estimate_qber_upper(int(errors), int(k), self.key_bits_for(k), self.eps)
        return est.decide_abort(qber_upper=upper, qber_threshold=self.threshold,
                                sample_size=int(k),
                                min_sample_size=self.min_sample_size).abort

    def critical_errors(self, k: int) -> int:
        """Largest error count in a k-bit sample that does not abort (-1: every count aborts)."""
        if self.aborts(0, k):
            return -1
        lo, hi = 0, k            # aborts(lo) is False; find the last False
        if not self.aborts(hi, k):
            return k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.aborts(mid, k):
                hi = mid
            else:
                lo = mid
        return lo


@dataclass(frozen=True)
class YieldRule:
    """The node's B92 conclusive-yield monitor (an unambiguous-discrimination attack shows there)."""

    eps: float
    rel_tolerance: float

    @classmethod
    def from_node(cls) -> "YieldRule":
        return cls(float(distill_default("yield_eps")),
                   float(distill_default("yield_rel_tolerance")))

    def threshold(self, pulses: int, expected_per_pulse: float) -> float:
        return est.check_conclusive_yield(0, int(pulses), expected_per_pulse, eps=self.eps,
                                          rel_tolerance=self.rel_tolerance).threshold

    def aborts(self, conclusive: int, pulses: int, expected_per_pulse: float) -> bool:
        return est.check_conclusive_yield(int(conclusive), int(pulses), expected_per_pulse,
                                          eps=self.eps, rel_tolerance=self.rel_tolerance).drop

    def max_dropping_count(self, pulses: int, expected_per_pulse: float) -> int:
        """Largest conclusive count that still trips the monitor (count < threshold)."""
        return math.ceil(self.threshold(pulses, expected_per_pulse)) - 1

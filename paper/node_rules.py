"""What the node enforces, read from ``postprocessing`` at run time (never typed here).

The paper package must follow the node's rules as they change, so defaults come from
``distill``'s signature, protocols from ``distill.PROTOCOLS``, the abort test and whether a
protocol may yield key from ``postprocessing.block.decisions``, and B92's refusal (its bound
label, alarm ceiling and the published proofs it lacks) from ``postprocessing.finite_key``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from paper import binomial
from postprocessing import distill as dist
from postprocessing import estimation as est
from postprocessing import finite_key as fk
from postprocessing.block import BlockParams, decisions
from postprocessing.randomness import ProtocolRandom


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


def protocol_rng(seed: int) -> ProtocolRandom:
    """A deterministic protocol-randomness source for a reproducible run: the node draws from
    the OS CSPRNG, a reproduction needs a fixed seed (the explicitly-named test DRBG)."""
    return ProtocolRandom.deterministic_for_tests(seed)


def node_protocols() -> tuple[str, ...]:
    return tuple(dist.PROTOCOLS)


def may_yield_key(protocol: str) -> bool:
    """Whether the node grants this protocol any key at all (False for B92 on this node)."""
    return bool(decisions.protocol_may_yield_key(protocol))


def b92_refusal() -> dict:
    """Why the node refuses B92 key, in the node's own words: its bound label, the alarm ceiling
    it still applies to B92 blocks, and each published proof with the assumption it misses."""
    return {"bound": str(getattr(fk, "BOUND_B92_NONE", "")),
            "qber_ceiling": float(getattr(fk, "B92_QBER_CEILING", math.nan)),
            "proofs": dict(getattr(fk, "B92_PROOF_ASSUMPTIONS", {}))}


@lru_cache(maxsize=8)
def block_params(protocol: str) -> BlockParams:
    """The node's per-block settings for a one-intensity block of ``protocol`` (defaults of
    ``distill``; B92's calibrated yield is irrelevant to the QBER test and set to a stand-in)."""
    names = ("qber_tol", "eps_sec", "eps_cor", "qber_threshold", "sample_fraction",
             "min_sample_size", "max_multi_click_fraction", "yield_eps", "yield_rel_tolerance")
    kw = {n: distill_default(n) for n in names}
    if protocol == "b92":
        kw["expected_conclusive_per_pulse"] = 1e-3
    return BlockParams(protocol=protocol, **kw)


@dataclass(frozen=True)
class QberRule:
    """The node's QBER test on a random test sample, judged per basis as the node does.

    ``postprocessing.block.decisions.sampled_decision`` judges each basis on its own: the
    basis's Serfling upper bound (its sampled errors against its own key bits) above the
    threshold aborts, and for a key-yielding protocol so does its sampled rate above Q_tol; a
    sample under ``min_sample_size`` or a basis with no sampled bit aborts too. Each basis
    below is put through that very function. Key bits beside a basis's k sampled bits are taken
    as k (1 - f) / f at the node's sample fraction f. For B92 the node also ends every block
    with ``no_security_proof``; that reason is not counted here: this rule is B92's
    eavesdropper alarm, the part of the decision that depends on what Eve did.
    """

    protocol: str
    threshold: float
    qber_tol: float | None          # None where the node skips the Q_tol check (no key anyway)
    eps: float
    sample_fraction: float
    min_sample_size: int

    @classmethod
    def for_protocol(cls, protocol: str) -> "QberRule":
        params = block_params(protocol)
        tol = float(params.qber_tol) if may_yield_key(protocol) else None
        return cls(protocol, float(decisions.qber_threshold(params)), tol,
                   float(params.eps_sec), float(params.sample_fraction),
                   int(params.min_sample_size))

    def key_bits_for(self, k: int) -> int:
        """Unsampled key bits beside a k-bit sample at the node's sample fraction."""
        return max(1, round(k * (1.0 - self.sample_fraction) / self.sample_fraction))

    def basis_passes(self, errors: int, k: int) -> bool:
        """Does one basis with ``errors`` wrong bits among ``k`` sampled ones pass the node?"""
        if k < 1:
            return False
        n = self.key_bits_for(k)
        upper = est.estimate_qber_upper(int(errors), int(k), n, self.eps)
        e = decisions.SampledEstimate(n, int(k), int(errors), (int(k),), (int(errors),), (n,),
                                      (errors / k,), (upper,))
        verdict = decisions.sampled_decision(block_params(self.protocol), e)
        return est.AbortReason.QBER_ABOVE_THRESHOLD not in verdict.reasons

    def critical_table(self, k_max: int) -> np.ndarray:
        """c[k] for k = 0..k_max: the most errors a k-bit basis sample may hold and pass
        (-1: none passes; c[0] = -1, an empty basis aborts). c is non-decreasing in k: with the
        same errors, a larger sample has a smaller rate and a smaller Serfling term."""
        return _critical_table(self, int(k_max))

    def smallest_clean_basis_sample(self, k_max: int = 1 << 26) -> int:
        """The fewest sampled bits of one basis that pass with no error at all (below this the
        node aborts, or for B92 raises its alarm, on every block whatever Eve does)."""
        lo, hi = 0, int(k_max)            # basis_passes(0, lo) False, (0, hi) True
        if not self.basis_passes(0, hi):
            return -1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.basis_passes(0, mid):
                hi = mid
            else:
                lo = mid
        return hi

    def aborts(self, errors_by_basis, k_by_basis) -> bool:
        """The node's verdict on a sample split by basis (two bases)."""
        if sum(k_by_basis) < self.min_sample_size:
            return True
        return not all(self.basis_passes(x, k) for x, k in zip(errors_by_basis, k_by_basis))


@lru_cache(maxsize=8)
def _critical_table(rule: QberRule, k_max: int) -> np.ndarray:
    c = np.full(k_max + 1, -1, dtype=np.int64)
    last = -1
    for k in range(1, k_max + 1):
        if last < 0 and not rule.basis_passes(0, k):
            continue
        last = max(last, 0)
        while last < k and rule.basis_passes(last + 1, k):
            last += 1
        c[k] = last
    return c


def p_abort_by_basis(rule: QberRule, m: int, p_z: float, e_z: float, e_x: float,
                     table: np.ndarray | None = None) -> float:
    """P(the node aborts an m-bit sample): each sampled bit is in basis Z with probability
    p_z, and wrong with probability e_z or e_x by its basis (independent bits). The sum over
    the Z count runs over 12 binomial sigma each side (the rest weighs < 1e-30)."""
    if m < rule.min_sample_size:
        return 1.0
    table = rule.critical_table(m) if table is None else table
    sd = math.sqrt(max(m * p_z * (1 - p_z), 1.0))
    lo, hi = max(0, int(m * p_z - 12 * sd)), min(m, int(math.ceil(m * p_z + 12 * sd)))
    kz = np.arange(lo, hi + 1)
    weights = np.exp(binomial.log_pmf(kz, m, p_z))
    passes = np.array([binomial.cdf(int(table[k]), int(k), e_z) if k else 0.0 for k in kz]) * \
        np.array([binomial.cdf(int(table[m - k]), int(m - k), e_x) if m - k else 0.0 for k in kz])
    return float(min(1.0, max(0.0, 1.0 - float(np.sum(weights * passes)))))


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

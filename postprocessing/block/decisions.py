"""The block's decisions, in one place for both ends: sample size, abort rules, which bound,
the key length. Pure functions of public block statistics and ``BlockParams``, so Alice's and
Bob's roles reach the same verdict from the same messages.

Per-basis testing (issue: the test sample and the key mix both bases). The sampled path
(Tomamichel 2012 for BB84) draws one random sample over the sifted key, then judges every basis
on its own: each basis's sampled error rate must not exceed Q_tol, and each basis's Serfling
upper bound (its own sample against its own key bits) must not exceed the threshold. The bound
is evaluated at Q_tol with the smallest per-basis sample (the largest sampling term mu), which
is conservative for either basis's key bits. A basis holding key bits but no sampled bit aborts
(nothing bounds it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from postprocessing import estimation as est
from postprocessing import finite_key as fk
from postprocessing import finite_key_lt as fkl
from postprocessing.block.params import BlockParams
from postprocessing.reconciliation.schedules import QBER_MAX, QBER_MIN
from postprocessing.sifting import KEY_BASIS

_R = est.AbortReason


def protocol_may_yield_key(protocol: str) -> bool:
    """False for B92: no published proof covers it on this node (``finite_key.b92_...``)."""
    return protocol != "b92"


def qber_threshold(params: BlockParams) -> float:
    """Ceiling on the QBER upper bound; B92's is at most ``finite_key.B92_QBER_CEILING``."""
    if params.protocol == "b92":
        return min(params.qber_threshold, fk.B92_QBER_CEILING)
    return params.qber_threshold


def sample_size(params: BlockParams, n_sifted: int) -> int:
    """Test-sample size both ends expect for ``n_sifted`` sifted bits."""
    return max(params.min_sample_size, math.ceil(params.sample_fraction * n_sifted))


def cascade_qber(qber_estimate: float) -> float:
    """The QBER that sets Cascade's block sizes: a zero-error sample still needs finite blocks."""
    return min(max(qber_estimate, 1e-4, QBER_MIN), QBER_MAX)


@dataclass(frozen=True)
class SampledEstimate:
    """Statistics of the random test sample, per basis (index 0 = Z, 1 = X)."""

    n_key: int
    k: int
    errors: int
    k_by_basis: tuple[int, ...]
    errors_by_basis: tuple[int, ...]
    n_key_by_basis: tuple[int, ...]
    qber_by_basis: tuple[float, ...]
    upper_by_basis: tuple[float, ...]

    @property
    def qber(self) -> float:
        return self.errors / self.k

    @property
    def qber_upper(self) -> float:
        vals = [u for u in self.upper_by_basis if not math.isnan(u)]
        return max(vals) if vals else math.inf

    @property
    def k_bound(self) -> int:
        """Smallest sample of a basis that holds key bits (what the bound uses)."""
        ks = [k for k, n in zip(self.k_by_basis, self.n_key_by_basis) if n > 0]
        return min(ks) if ks else 0


def sampled_estimate(verdict: est.ClassVerdict, n_key_by_basis, eps_sec: float
                     ) -> SampledEstimate:
    """Per-basis error rates and Serfling upper bounds from Alice's per-basis verdict."""
    uppers, rates = [], []
    for k_b, e_b, n_b in zip(verdict.counts, verdict.errors, n_key_by_basis):
        rates.append(e_b / k_b if k_b else math.nan)
        uppers.append(est.estimate_qber_upper(int(e_b), int(k_b), int(n_b), eps_sec)
                      if k_b and n_b else math.nan)
    return SampledEstimate(int(sum(n_key_by_basis)), verdict.k, verdict.total_errors,
                           tuple(verdict.counts), tuple(verdict.errors),
                           tuple(int(n) for n in n_key_by_basis), tuple(rates), tuple(uppers))


def _decision(reasons: list, details: list) -> est.AbortDecision:
    return est.AbortDecision(tuple(reasons), tuple(details))


def _add(reasons: list, details: list, reason, detail: str) -> None:
    if reason not in reasons:
        reasons.append(reason)
    details.append(detail)


def sampled_decision(params: BlockParams, e: SampledEstimate, *,
                     yield_check: est.YieldCheck | None = None,
                     multi_click_fraction: float | None = None) -> est.AbortDecision:
    """Every reason to stop a block of the sampled path (BB84 single intensity, or B92)."""
    reasons: list = []
    details: list = []
    names = "ZX"
    if e.k < params.min_sample_size:
        _add(reasons, details, _R.SAMPLE_TOO_SMALL,
             f"sample of {e.k} bits, need >= {params.min_sample_size}")
    for b, (k_b, n_b) in enumerate(zip(e.k_by_basis, e.n_key_by_basis)):
        if n_b > 0 and k_b == 0:
            _add(reasons, details, _R.SAMPLE_TOO_SMALL,
                 f"basis {names[b]} holds {n_b} key bits but no sampled bit")
    threshold = qber_threshold(params)
    for b, (rate, upper) in enumerate(zip(e.qber_by_basis, e.upper_by_basis)):
        if not math.isnan(upper) and upper > threshold:
            _add(reasons, details, _R.QBER_ABOVE_THRESHOLD,
                 f"basis {names[b]}: QBER upper bound {upper:.4f} > threshold {threshold:.4f}")
        if (protocol_may_yield_key(params.protocol) and not math.isnan(rate)
                and rate > params.qber_tol):
            _add(reasons, details, _R.QBER_ABOVE_THRESHOLD,
                 f"basis {names[b]}: sample QBER {rate:.4f} > Q_tol {params.qber_tol:.4f}")
    if yield_check is not None and yield_check.drop:
        _add(reasons, details, _R.YIELD_DROP,
             f"conclusive yield {yield_check.observed_per_pulse:.3e}/pulse below "
             f"{yield_check.threshold / yield_check.pulses:.3e} "
             f"(expected {yield_check.expected_per_pulse:.3e})")
    if (params.protocol == "b92" and multi_click_fraction is not None
            and multi_click_fraction > params.max_multi_click_fraction):
        _add(reasons, details, _R.MULTI_CLICK_EXCESS,
             f"multi-click fraction {multi_click_fraction:.4f} > "
             f"{params.max_multi_click_fraction:.4f} (a multi-photon resend signature)")
    if not protocol_may_yield_key(params.protocol):
        _add(reasons, details, _R.NO_SECURITY_PROOF, fk.BOUND_B92_NONE)
    return _decision(reasons, details)


def decoy_decision(params: BlockParams, qber_upper: float) -> est.AbortDecision:
    """Reasons to stop a decoy-BB84 block after the test basis was disclosed."""
    reasons: list = []
    details: list = []
    if qber_upper > params.qber_threshold:
        _add(reasons, details, _R.QBER_ABOVE_THRESHOLD,
             f"test-basis QBER upper bound {qber_upper:.4f} > threshold "
             f"{params.qber_threshold:.4f}")
    return _decision(reasons, details)


def decoy_counts(basis: np.ndarray, intensity: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Sifted rows per [basis, intensity], key-basis and test-basis totals."""
    counts = est.counts_by_basis_intensity(basis, intensity)
    return counts, int(counts[KEY_BASIS].sum()), int(counts[1 - KEY_BASIS].sum())


def sampled_key_length(params: BlockParams, e: SampledEstimate, leak_ec: int
                       ) -> fk.KeyLengthResult:
    """Tomamichel 2012 at the link's Q_tol with the smallest per-basis sample (BB84), or the
    B92 result (always 0)."""
    if not protocol_may_yield_key(params.protocol):
        return fk.b92_key_length_result(e.n_key, e.k, e.qber_upper, params.eps_sec,
                                        params.eps_cor, conclusive_per_pulse=math.nan,
                                        multi_click_fraction=math.nan)
    return fk.bb84_key_length_result(e.n_key, e.k_bound, params.qber_tol, leak_ec,
                                     params.eps_sec, params.eps_cor)


def decoy_key_length(params: BlockParams, counts: np.ndarray, test_errors, leak_ec: int
                     ) -> fk.KeyLengthResult:
    """Lim et al. 2014: key basis KEY_BASIS at all intensities, the other basis disclosed."""
    return fk.decoy_key_length_result(
        n_x=counts[KEY_BASIS].tolist(), n_z=counts[1 - KEY_BASIS].tolist(),
        m_z=list(test_errors), intensities=params.intensities,
        probabilities=params.intensity_probabilities, eps_sec=params.eps_sec,
        eps_cor=params.eps_cor, leak_ec=leak_ec)


# -- LT3 (loss-tolerant three-state, finite_key_lt) --------------------------------------------


def lt3_setup(params: BlockParams) -> fkl.Lt3Setup:
    """The link's LT3 calibration as the bound takes it."""
    return fkl.Lt3Setup(params.intensities, params.intensity_probabilities,
                        params.alice_state_probabilities, params.bob_z_probability,
                        params.bloch_vectors)


def lt3_x0_error_rate(x0_errors: int, x0_clicks: int) -> float:
    """X-basis error rate of the X0 state (A clicks among X clicks): Cascade's QBER estimate
    and the operator's noise figure (the key rows' own rate is known only after Cascade)."""
    return x0_errors / x0_clicks if x0_clicks else math.nan


def lt3_decision(params: BlockParams, counts: fkl.Lt3Counts, x0_error_rate: float, *,
                 multi_click_fraction: float | None = None) -> est.AbortDecision:
    """Every reason to stop an LT3 block once the count table is public.

    Proof assumptions first (Bloch vectors, basis-independent detection, multi-clicks: Bob
    alone knows the last and decides it), then data: key rows present, X0 error rate under the
    threshold, and a positive bound even before any reconciliation leakage."""
    reasons: list = []
    details: list = []
    setup = lt3_setup(params)
    for v in fkl.bloch_violations(setup.bloch):
        _add(reasons, details, _R.ASSUMPTION_VIOLATED, v)
    for v in fkl.basis_efficiency_violations(counts, setup, params.max_basis_efficiency_deviation,
                                             params.eps_sec):
        _add(reasons, details, _R.ASSUMPTION_VIOLATED, v)
    if multi_click_fraction is not None and multi_click_fraction > params.max_multi_click_fraction:
        _add(reasons, details, _R.MULTI_CLICK_EXCESS,
             f"multi-click fraction {multi_click_fraction:.4f} > "
             f"{params.max_multi_click_fraction:.4f} (squashing model / multi-photon resend)")
    n_key = counts.key_clicks[0]
    if n_key < 1:
        _add(reasons, details, _R.TOO_FEW_SIFTED_BITS, "no Z-state Z-detector mu detection")
    if not math.isnan(x0_error_rate) and x0_error_rate > params.qber_threshold:
        _add(reasons, details, _R.QBER_ABOVE_THRESHOLD,
             f"X0 error rate {x0_error_rate:.4f} > threshold {params.qber_threshold:.4f}")
    if not reasons:
        bound = lt3_key_length(params, counts, 0)
        if bound.key_length == 0:
            _add(reasons, details, _R.NO_SECRET_KEY,
                 f"LT3 bound allows no key even before reconciliation (phase-error rate upper "
                 f"bound {bound.terms['phase_error_rate_upper']:.4f}, m1 "
                 f"{bound.terms['m1']:.0f})")
    return _decision(reasons, details)


def lt3_key_length(params: BlockParams, counts: fkl.Lt3Counts, leak_ec: int
                   ) -> fk.KeyLengthResult:
    """The LT3 bound (``finite_key_lt``) of the block's count table; key 0 when the
    characterised states fall outside the proof."""
    setup = lt3_setup(params)
    violations = fkl.bloch_violations(setup.bloch)
    if violations:
        return fk.KeyLengthResult(0, fkl.BOUND_LT3, params.eps_sec, params.eps_cor,
                                  {"raw_length": 0.0})
    return fkl.lt3_key_length_result(counts, setup, eps_sec=params.eps_sec,
                                     eps_cor=params.eps_cor, leak_ec=leak_ec)

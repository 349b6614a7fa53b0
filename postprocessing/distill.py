"""The whole post-processing chain on one block, both ends in one process.

For tests, benchmarks and the demo: the daemon runs the same stages split between two nodes.
Data flows one way -- alignment -> sifting -> parameter estimation -> reconciliation ->
verification -> privacy amplification -- and no stage reaches back. Intermediate key material
(sifted, sampled-out, reconciled bits) is wiped with ``fill(0)`` once the next stage has
consumed it.

Bounds: BB84 with one intensity uses Tomamichel et al. 2012 on a random test sample of the
sifted key; BB84 with three intensities (``intensities=`` given) uses Lim et al. 2014 with the
key from ``sifting.KEY_BASIS`` and every bit of the other basis disclosed for the phase-error
estimate; B92 uses the conservative rule of ``finite_key.b92_key_length``, which needs the
calibrated conclusive yield per pulse. Arrays: bits uint8 0/1 (one per byte), slots int64,
channels uint8, timestamps_ps int64.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from postprocessing import estimation as est
from postprocessing import finite_key as fk
from postprocessing import sifting
from postprocessing.alignment import assign_slots, fit_clock
from postprocessing.randomness import ProtocolRandom
from postprocessing.amplification import toeplitz_hash
from postprocessing.reconciliation import reconcile
from postprocessing.reconciliation.schedules import QBER_MAX, QBER_MIN
from postprocessing.verification import verify

PROTOCOLS = ("bb84", "b92")


class DistillInputError(ValueError):
    """An argument of ``distill`` is missing or outside its accepted range."""


@dataclass
class DistillStats:
    """What happened to one block: sizes, estimates, leakage, the bound, the epsilons, timings."""

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
    qber_by_basis: list = field(default_factory=list)
    decoy_counts: list = field(default_factory=list)
    decoy_test_errors: list = field(default_factory=list)
    aborted: bool = False
    abort_reasons: list = field(default_factory=list)
    abort_details: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    sift_counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def _abort(self, decision: est.AbortDecision) -> None:
        self.aborted = True
        self.abort_reasons = [r.value for r in decision.reasons]
        self.abort_details = list(decision.details)


@dataclass(frozen=True, eq=False)
class DistillResult:
    """Final keys of both ends (uint8 0/1, empty when the block aborted) and the stats record."""

    alice_key: np.ndarray
    bob_key: np.ndarray
    stats: DistillStats


@contextlib.contextmanager
def _timed(timings: dict, stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def _pattern_lookup(alice_pattern, first_slot: int) -> Callable[[np.ndarray], np.ndarray]:
    if callable(alice_pattern):
        return alice_pattern
    pattern = np.asarray(alice_pattern)
    if pattern.ndim != 1 or pattern.dtype != np.uint8:
        raise DistillInputError(f"alice_pattern: expected a callable or a 1-D uint8 array, got "
                                f"{pattern.dtype} {pattern.shape}")

    def lookup(slots: np.ndarray) -> np.ndarray:
        rel = np.asarray(slots, dtype=np.int64) - first_slot
        if rel.size and (rel.min() < 0 or rel.max() >= pattern.size):
            raise DistillInputError(
                f"alice_pattern covers slots [{first_slot}, {first_slot + pattern.size}), "
                f"a detection falls at slot {int(rel.min() + first_slot)}..."
                f"{int(rel.max() + first_slot)}")
        return pattern[rel]
    return lookup


def _empty_result(stats: DistillStats) -> DistillResult:
    return DistillResult(np.zeros(0, np.uint8), np.zeros(0, np.uint8), stats)


def _aborted(stats: DistillStats, decision, *key_material: np.ndarray) -> DistillResult:
    """Record why the block stops and wipe the bits it held."""
    stats._abort(decision)
    for arr in key_material:
        arr.fill(0)
    return _empty_result(stats)


def _check_eps(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise DistillInputError(f"{name}={value!r} must lie in the open interval (0, 1)")


def distill(*, protocol: str, slots: np.ndarray, channels: np.ndarray, alice_pattern,
            n_pulses: int, rng: ProtocolRandom, first_slot: int = 0,
            valid: np.ndarray | None = None, holdoff_slots: int = 0,
            eps_sec: float = 1e-10, eps_cor: float = 1e-15, schedule: str = "yan",
            qber_threshold: float = 0.11, qber_tol: float | None = None,
            sample_fraction: float = 0.1,
            min_sample_size: int = 1000, intensities: tuple | None = None,
            intensity_probabilities: tuple | None = None,
            expected_conclusive_per_pulse: float | None = None,
            yield_eps: float = 1e-9, yield_rel_tolerance: float = 0.1,
            through_wire: bool = True,
            pa_hash: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None
            ) -> DistillResult:
    """Run sifting to privacy amplification for both ends of one block of ``n_pulses`` slots.

    slots/channels: Bob's events already mapped to Alice's slot numbers (``valid`` False for
    events outside the timing gate); see ``distill_events`` to start from raw timestamps.
    alice_pattern: ``pattern_of(slots) -> uint8`` (Alice's board) or the uint8 pattern of slots
    [first_slot, first_slot + len). rng: numpy Generator, seeded from os.urandom in node code;
    it draws squashing coins, the test sample, the verification points and the Toeplitz seed.
    qber_tol: Tomamichel's Q_tol fixed in advance (abort when the sample's error rate exceeds
    it, and the bound uses it); None takes the sample's error rate as Q_tol, so that test
    passes by construction and the bound follows the measured QBER.
    pa_hash: a stand-in with the contract of ``amplification.toeplitz_hash`` (benchmarks run
    the chain with a plain numpy reference through it).
    """
    if protocol not in PROTOCOLS:
        raise DistillInputError(f"protocol={protocol!r} must be one of {PROTOCOLS}")
    if not isinstance(rng, ProtocolRandom):
        raise DistillInputError(f"rng must be a ProtocolRandom, got {type(rng).__name__}")
    _check_eps("eps_sec", eps_sec)
    _check_eps("eps_cor", eps_cor)
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 1:
        raise DistillInputError(f"n_pulses={n_pulses!r} must be an integer >= 1")
    if not (0.0 < sample_fraction < 1.0):
        raise DistillInputError(f"sample_fraction={sample_fraction!r} must lie in (0, 1)")
    if not (0.0 < qber_threshold < 0.5):
        raise DistillInputError(f"qber_threshold={qber_threshold!r} must lie in (0, 0.5)")
    if qber_tol is not None and not (0.0 <= qber_tol < 0.5):
        raise DistillInputError(f"qber_tol={qber_tol!r} must lie in [0, 0.5)")
    decoy = intensities is not None
    if decoy and (protocol != "bb84" or intensity_probabilities is None):
        raise DistillInputError("intensities= needs protocol 'bb84' and intensity_probabilities=")
    if protocol == "b92" and expected_conclusive_per_pulse is None:
        raise DistillInputError("B92 needs expected_conclusive_per_pulse= (the calibrated "
                                "conclusive yield): the USD attack shows only as a yield drop")
    stats = DistillStats(protocol=protocol, n_events=int(np.asarray(slots).size),
                         n_pulses=int(n_pulses), eps_sec=float(eps_sec), eps_cor=float(eps_cor))
    stage = functools.partial(_timed, stats.timings_s)
    pattern_of = _pattern_lookup(alice_pattern, first_slot)

    with stage("sifting"):
        sift = sifting.sift_bb84 if protocol == "bb84" else sifting.sift_b92
        sifted = sift(np.asarray(slots, dtype=np.int64), np.asarray(channels, dtype=np.uint8),
                      pattern_of, rng, valid=valid, holdoff_slots=holdoff_slots,
                      through_wire=through_wire)
    stats.sift_counts = sifted.counts.to_dict()
    stats.sifted_bits = len(sifted.alice)
    try:
        if decoy:
            return _distill_decoy(sifted, stats, stage, rng, schedule, qber_threshold,
                                  tuple(intensities), tuple(intensity_probabilities),
                                  through_wire, pa_hash)
        return _distill_sampled(sifted, stats, stage, rng, schedule, qber_threshold, qber_tol,
                                sample_fraction, min_sample_size,
                                expected_conclusive_per_pulse,
                                yield_eps, yield_rel_tolerance, through_wire, pa_hash)
    finally:
        for arr in (sifted.alice.bits, sifted.bob.bits):
            arr.fill(0)


def _distill_sampled(sifted, stats, stage, rng, schedule, qber_threshold, qber_tol,
                     sample_fraction, min_sample_size, b92_calibration, yield_eps,
                     yield_rel_tol, through_wire, pa_hash) -> DistillResult:
    """Tomamichel 2012 (BB84) or the B92 rule: random test sample of the sifted key.

    b92_calibration: the expected conclusive yield per pulse (B92 only)."""
    expected_conclusive = b92_calibration
    n_sifted = stats.sifted_bits
    b92 = stats.protocol == "b92"
    with stage("estimation"):
        yield_check = None
        if b92:
            stats.conclusive_per_pulse = n_sifted / stats.n_pulses
            yield_check = est.check_conclusive_yield(
                n_sifted, stats.n_pulses, expected_conclusive, eps=yield_eps,
                rel_tolerance=yield_rel_tol)
        k = max(min_sample_size, math.ceil(sample_fraction * n_sifted))
        if n_sifted < 2 or k >= n_sifted:
            stats._abort(est.AbortDecision.because(
                est.AbortReason.TOO_FEW_SIFTED_BITS,
                f"{n_sifted} sifted bits, a test sample of {k} needs more"))
            return _empty_result(stats)
        announcement, bob_kept = est.announce_sample(sifted.bob.bits, k, rng)
        if through_wire:
            announcement = est.SampleAnnouncement.from_bytes(announcement.to_bytes())
        # disagreements split by the (public) basis of each sifted row
        verdict, alice_kept = est.answer_by_class(sifted.alice.bits, announcement,
                                                  sifted.alice.basis, est.N_BASES)
        if through_wire:
            verdict = est.ClassVerdict.from_bytes(verdict.to_bytes())
        announcement.bits.fill(0)
        n_key = n_sifted - k
        stats.sample_bits = k
        stats.key_input_bits = n_key
        stats.qber_estimate = verdict.total_errors / k
        stats.qber_by_basis = est.error_rates(verdict.errors, verdict.counts).tolist()
        stats.qber_upper = est.estimate_qber_upper(verdict.total_errors, k, n_key,
                                                   stats.eps_sec)
        threshold = min(qber_threshold, fk.B92_QBER_CEILING) if b92 else qber_threshold
        decision = est.decide_abort(qber_upper=stats.qber_upper, qber_threshold=threshold,
                                    sample_size=k, min_sample_size=min_sample_size,
                                    yield_check=yield_check)
        if (qber_tol is not None and stats.qber_estimate > qber_tol
                and est.AbortReason.QBER_ABOVE_THRESHOLD not in decision.reasons):
            decision = est.AbortDecision(
                decision.reasons + (est.AbortReason.QBER_ABOVE_THRESHOLD,),
                decision.details + (f"sample QBER {stats.qber_estimate:.4f} > Q_tol "
                                    f"{qber_tol:.4f}",))
        if b92:  # statistics for eavesdropper detection; never a key (finite_key.b92_...)
            c = stats.sift_counts
            multi = c["n_double_same_basis"] + c["n_double_cross_basis"]
            stats.multi_click_fraction = multi / max(1, c["n_detected_slots"])
            bound = fk.b92_key_length_result(
                n_key, k, stats.qber_upper, stats.eps_sec, stats.eps_cor,
                conclusive_per_pulse=stats.conclusive_per_pulse,
                multi_click_fraction=stats.multi_click_fraction)
            stats.bound, stats.bound_terms = bound.bound, dict(bound.terms)
            decision = est.AbortDecision(
                decision.reasons + (est.AbortReason.NO_SECURITY_PROOF,),
                decision.details + (bound.bound,))
    if decision.abort:
        return _aborted(stats, decision, alice_kept, bob_kept)

    def key_length(leak: int) -> fk.KeyLengthResult:
        q_tol = stats.qber_estimate if qber_tol is None else qber_tol
        return fk.bb84_key_length_result(n_key, k, q_tol, leak, stats.eps_sec, stats.eps_cor)

    return _reconcile_verify_amplify(alice_kept, bob_kept, stats.qber_estimate, stats, stage,
                                     rng, schedule, key_length, pa_hash)


def _distill_decoy(sifted, stats, stage, rng, schedule, qber_threshold, intensities,
                   probabilities, through_wire, pa_hash) -> DistillResult:
    """Lim 2014: key from KEY_BASIS (all intensities), the other basis disclosed in full."""
    with stage("estimation"):
        alice, bob = sifted.alice, sifted.bob
        key_basis, test_basis = sifting.KEY_BASIS, 1 - sifting.KEY_BASIS
        # both ends know every row's basis and intensity after sifting
        counts = est.counts_by_basis_intensity(alice.basis, alice.intensity)
        n_key = int(counts[key_basis].sum())
        n_test = int(counts[test_basis].sum())
        stats.sample_bits = n_test
        stats.key_input_bits = n_key
        stats.decoy_counts = counts.tolist()
        if n_test < 1 or n_key < 1:
            stats._abort(est.AbortDecision.because(
                est.AbortReason.TOO_FEW_SIFTED_BITS,
                f"{n_key} key-basis and {n_test} test-basis bits; both must be >= 1"))
            return _empty_result(stats)
        # Bob discloses every test-basis bit; Alice answers the disagreements per intensity.
        test_positions = np.flatnonzero(alice.basis == test_basis)
        announcement, bob_kept = est.announce_positions(bob.bits, test_positions)
        if through_wire:
            announcement = est.SampleAnnouncement.from_bytes(announcement.to_bytes())
        verdict, alice_kept = est.answer_by_class(alice.bits, announcement, alice.intensity,
                                                  est.N_INTENSITIES)
        if through_wire:
            verdict = est.ClassVerdict.from_bytes(verdict.to_bytes())
        announcement.bits.fill(0)
        m_test = list(verdict.errors)
        stats.decoy_test_errors = m_test
        stats.qber_estimate = verdict.total_errors / n_test
        stats.qber_upper = est.estimate_qber_upper(verdict.total_errors, n_test, n_key,
                                                   stats.eps_sec)
        decision = est.decide_abort(qber_upper=stats.qber_upper, qber_threshold=qber_threshold,
                                    sample_size=n_test, min_sample_size=1)
    if decision.abort:
        return _aborted(stats, decision, alice_kept, bob_kept)

    def key_length(leak: int) -> fk.KeyLengthResult:
        return fk.decoy_key_length_result(
            n_x=counts[key_basis].tolist(), n_z=counts[test_basis].tolist(),
            m_z=m_test, intensities=intensities,
            probabilities=probabilities, eps_sec=stats.eps_sec, eps_cor=stats.eps_cor,
            leak_ec=leak)

    return _reconcile_verify_amplify(alice_kept, bob_kept, stats.qber_estimate, stats, stage,
                                     rng, schedule, key_length, pa_hash)


def _reconcile_verify_amplify(alice_kept, bob_kept, qber, stats, stage, rng, schedule,
                              key_length, pa_hash) -> DistillResult:
    with stage("reconciliation"):
        # a zero-error sample still sets finite Cascade blocks: floor the estimate at 1e-4
        q_cascade = min(max(qber, 1e-4, QBER_MIN), QBER_MAX)
        rec = reconcile(alice_kept, bob_kept, q_cascade, schedule=schedule,
                        seed=rng.uint64())
    bob_kept.fill(0)
    corrected = rec.bits
    stats.cascade_disclosed_bits = int(rec.disclosed_bits)
    stats.reconcile_efficiency = float(rec.efficiency)
    stats.round_trips = int(rec.round_trips)
    with stage("verification"):
        ver = verify(alice_kept, corrected, stats.eps_cor, rng)
    stats.tag_bits = int(ver.disclosed_bits)
    stats.leak_ec = stats.cascade_disclosed_bits + stats.tag_bits
    if not ver.ok:
        stats._abort(est.AbortDecision.because(
            est.AbortReason.VERIFICATION_FAILED,
            f"verification tags differ ({stats.tag_bits} tag bits, eps_cor {stats.eps_cor:g})"))
        alice_kept.fill(0)
        corrected.fill(0)
        return _empty_result(stats)
    with stage("finite_key"):
        bound = key_length(stats.leak_ec)
    stats.key_length = bound.key_length
    stats.bound = bound.bound
    stats.bound_terms = dict(bound.terms)
    if bound.key_length == 0:
        stats._abort(est.AbortDecision.because(
            est.AbortReason.NO_SECRET_KEY,
            f"{bound.bound} allows no key (raw length {bound.terms['raw_length']:.1f})"))
        alice_kept.fill(0)
        corrected.fill(0)
        return _empty_result(stats)
    with stage("amplification"):
        n = alice_kept.size
        seed = rng.bits(n + bound.key_length - 1)
        hash_fn = pa_hash or toeplitz_hash
        alice_key = hash_fn(alice_kept, seed, bound.key_length)
        bob_key = hash_fn(corrected, seed, bound.key_length)
    alice_kept.fill(0)
    corrected.fill(0)
    return DistillResult(alice_key, bob_key, stats)


def distill_events(*, timestamps_ps: np.ndarray, channels: np.ndarray, nominal_period_ps: float,
                   sync_period: int, sync_on_bits: np.ndarray, first_sync_index: int = 0,
                   gate_ps: float | None = None, gate_sigma: float = 3.0,
                   **distill_kwargs) -> DistillResult:
    """``distill`` from Bob's raw time tags: slot alignment from the sync channel first.

    sync_on_bits (uint8 0/1): the public on/off bit of sync indices first_sync_index + i,
    covering the block. The event gate defaults to gate_sigma x the sync residual rms (at least
    1 ps, at most half a slot). Other keyword arguments go to ``distill``.
    """
    timings: dict = {}
    with _timed(timings, "alignment"):
        t = np.asarray(timestamps_ps)
        c = np.asarray(channels)
        fit = fit_clock(t, c, nominal_period_ps=nominal_period_ps, sync_period=sync_period,
                        sync_on_bits=sync_on_bits, first_sync_index=first_sync_index)
        gate = (min(float(gate_ps), fit.period_ps / 2) if gate_ps is not None
                else min(max(gate_sigma * fit.residual_rms_ps, 1.0), fit.period_ps / 2))
        slots, valid = assign_slots(t, fit, gate)
    result = distill(slots=slots, channels=c, valid=valid, **distill_kwargs)
    result.stats.timings_s = {**timings, **result.stats.timings_s}
    result.stats.n_events = int(t.size)
    return result

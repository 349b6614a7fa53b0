"""The whole post-processing chain on one block, both ends in one process.

For tests, benchmarks and the demo: ``distill`` is only the in-process wiring of the two block
roles (``postprocessing.block``: ``BobBlock`` and ``AliceBlock``), passing each role's messages
to the other until both are done -- the same objects and messages the daemon's link engine
drives over the peer channel. Every decision (abort rules, Q_tol, which bound, key length,
leakage) lives in ``postprocessing.block.decisions``; every array holding key material is wiped
by the roles on every path; the returned keys are the caller's to store and wipe.

Bounds: BB84 with one intensity uses Tomamichel et al. 2012 at the link's fixed Q_tol on a random
test sample, checked per basis; BB84 with three intensities (``intensities=`` given) uses Lim et
al. 2014 with the key from ``sifting.KEY_BASIS`` and every bit of the other basis disclosed;
B92 never yields key (no published proof covers it with weak coherent pulses, see
``finite_key``): it runs for its statistics and eavesdropper detection only. LT3 (the
loss-tolerant three-state protocol with decoys, ``finite_key_lt``) keeps Z-state Z-detector
mu detections as key and discloses every other detection for its count table. Arrays: bits uint8
0/1 (one per byte), slots int64, channels uint8, timestamps_ps int64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from postprocessing.alignment import assign_slots, fit_clock
from postprocessing.block import (DEFAULT_QBER_TOL, AliceBlock, BlockParams, BlockParamsError,
                                  BlockStats, BobBlock)
from postprocessing.block.params import PROTOCOLS
from postprocessing.randomness import ProtocolRandom

DistillStats = BlockStats  # the name distill's callers know

__all__ = ["PROTOCOLS", "DistillInputError", "DistillResult", "DistillStats", "distill",
           "distill_events"]

DistillInputError = BlockParamsError
"""An argument of ``distill`` is missing or outside its accepted range."""

_STAGES = ("sifting", "estimation", "reconciliation", "verification", "finite_key",
           "amplification")


@dataclass(frozen=True, eq=False)
class DistillResult:
    """Final keys of both ends (uint8 0/1, empty when the block aborted) and Bob's stats
    record (with Alice's bound when she stopped the block at the key length). ``roles`` holds
    (alice, bob) when ``distill(keep_roles=True)``: tests check their ``key_material()``."""

    alice_key: np.ndarray
    bob_key: np.ndarray
    stats: BlockStats
    roles: tuple = ()


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


def run_roles(alice: AliceBlock, bob: BobBlock, transcript: list | None = None) -> None:
    """Pass messages between the two roles until neither has anything to say.

    transcript: if given, gets ("B->A" | "A->B", msg_type, payload length) per message."""
    alice.start()
    to_alice = bob.start()
    while to_alice:
        to_bob = []
        for msg in to_alice:
            if transcript is not None:
                transcript.append(("B->A", msg[0], len(msg[1])))
            to_bob.extend(alice.receive(msg))
        to_alice = []
        for msg in to_bob:
            if transcript is not None:
                transcript.append(("A->B", msg[0], len(msg[1])))
            to_alice.extend(bob.receive(msg))
    if not (alice.done and bob.done):
        raise RuntimeError(f"block roles stalled (Alice {alice.state}, Bob {bob.state})")


def _merged_stats(alice: AliceBlock, bob: BobBlock) -> BlockStats:
    """Bob's record, the stage timings of both ends added, Alice's bound if only she has one."""
    st = bob.outcome.stats
    a = alice.outcome.stats
    if not st.bound and a.bound:
        st.bound, st.bound_terms, st.key_length = a.bound, dict(a.bound_terms), a.key_length
    timings = {k: st.timings_s.get(k, 0.0) + a.timings_s.get(k, 0.0)
               for k in _STAGES if k in st.timings_s or k in a.timings_s}
    st.timings_s = {**st.timings_s, **timings}
    return st


def distill(*, protocol: str, slots: np.ndarray, channels: np.ndarray, alice_pattern,
            n_pulses: int, rng: ProtocolRandom, first_slot: int = 0,
            valid: np.ndarray | None = None, holdoff_slots: int = 0,
            eps_sec: float = 1e-10, eps_cor: float = 1e-15, schedule: str = "yan",
            qber_threshold: float = 0.11, qber_tol: float = DEFAULT_QBER_TOL,
            sample_fraction: float = 0.1,
            min_sample_size: int = 1000, intensities: tuple | None = None,
            intensity_probabilities: tuple | None = None,
            expected_conclusive_per_pulse: float | None = None,
            max_multi_click_fraction: float = 0.01,
            yield_eps: float = 1e-9, yield_rel_tolerance: float = 0.1,
            frame_bits: int | None = None, alice_state_probabilities: tuple | None = None,
            bloch_vectors: tuple | None = None, bob_z_probability: float = 0.5,
            max_basis_efficiency_deviation: float = 0.02, through_wire: bool = True,
            pa_hash: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None,
            keep_roles: bool = False, transcript: list | None = None) -> DistillResult:
    """Run sifting to privacy amplification for both ends of one block of ``n_pulses`` slots.

    slots/channels: Bob's events already mapped to Alice's slot numbers (``valid`` False for
    events outside the timing gate); see ``distill_events`` to start from raw timestamps.
    alice_pattern: ``pattern_of(slots) -> uint8`` (Alice's board) or the uint8 pattern of slots
    [first_slot, first_slot + len). rng: the ProtocolRandom both roles draw from (squashing
    coins, test sample, Cascade seed, verification points, Toeplitz seed); tests pass
    ``ProtocolRandom.deterministic_for_tests(seed)``. qber_tol: the link's Tomamichel Q_tol,
    fixed in advance (default ``block.DEFAULT_QBER_TOL`` = ``qber_tol_for(0.035)``); never
    the observed QBER. The other keywords are ``BlockParams`` fields. Messages always pass as
    bytes (``through_wire`` is kept for callers). pa_hash: a stand-in with the contract of
    ``amplification.toeplitz_hash`` (benchmarks run the chain with a numpy reference).
    """
    if not isinstance(rng, ProtocolRandom):
        raise DistillInputError(f"rng must be a ProtocolRandom, got {type(rng).__name__}")
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 1:
        raise DistillInputError(f"n_pulses={n_pulses!r} must be an integer >= 1")
    if qber_tol is None:
        raise DistillInputError("qber_tol=None: Q_tol must be fixed per link in advance "
                                "(block.qber_tol_for(expected QBER)), never the observed QBER")
    params = BlockParams(
        protocol=protocol, qber_tol=qber_tol, eps_sec=eps_sec, eps_cor=eps_cor,
        schedule=schedule, qber_threshold=qber_threshold, sample_fraction=sample_fraction,
        min_sample_size=min_sample_size, intensities=intensities,
        intensity_probabilities=intensity_probabilities,
        expected_conclusive_per_pulse=expected_conclusive_per_pulse,
        max_multi_click_fraction=max_multi_click_fraction, yield_eps=yield_eps,
        yield_rel_tolerance=yield_rel_tolerance, holdoff_slots=holdoff_slots,
        frame_bits=frame_bits, alice_state_probabilities=alice_state_probabilities,
        bloch_vectors=bloch_vectors, bob_z_probability=bob_z_probability,
        max_basis_efficiency_deviation=max_basis_efficiency_deviation)
    pattern_of = _pattern_lookup(alice_pattern, first_slot)
    alice = AliceBlock(params, pattern_of, rng, pa_hash=pa_hash)
    bob = BobBlock(params, slots, channels, valid, int(n_pulses), rng, pa_hash=pa_hash)
    run_roles(alice, bob, transcript)
    stats = _merged_stats(alice, bob)
    return DistillResult(alice.outcome.key, bob.outcome.key, stats,
                         (alice, bob) if keep_roles else ())


def distill_events(*, timestamps_ps: np.ndarray, channels: np.ndarray, nominal_period_ps: float,
                   sync_period: int, sync_on_bits: np.ndarray, first_sync_index: int = 0,
                   gate_ps: float | None = None, gate_sigma: float = 3.0,
                   **distill_kwargs) -> DistillResult:
    """``distill`` from Bob's raw time tags: slot alignment from the sync channel first.

    sync_on_bits (uint8 0/1): the public on/off bit of sync indices first_sync_index + i,
    covering the block. The event gate defaults to gate_sigma x the sync residual rms (at least
    1 ps, at most half a slot). Other keyword arguments go to ``distill``.
    """
    t0 = time.perf_counter()
    t = np.asarray(timestamps_ps)
    c = np.asarray(channels)
    fit = fit_clock(t, c, nominal_period_ps=nominal_period_ps, sync_period=sync_period,
                    sync_on_bits=sync_on_bits, first_sync_index=first_sync_index)
    gate = (min(float(gate_ps), fit.period_ps / 2) if gate_ps is not None
            else min(max(gate_sigma * fit.residual_rms_ps, 1.0), fit.period_ps / 2))
    slots, valid = assign_slots(t, fit, gate)
    timings = {"alignment": time.perf_counter() - t0}
    result = distill(slots=slots, channels=c, valid=valid, **distill_kwargs)
    result.stats.timings_s = {**timings, **result.stats.timings_s}
    result.stats.n_events = int(t.size)
    return result

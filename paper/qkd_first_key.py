"""Pulses and time to a first secret key of 256 bits and of 1 Mbit, without Eve.

Every key length is what ``postprocessing.distill`` grants on a simulated block at run time, so
the figures follow the node's finite-key bound wherever it goes. The node grants B92 no key at
all (no published proof covers B92 with weak coherent pulses on this hardware; every B92 block
ends with ``no_security_proof``): B92's search stops at its first block, which is kept only for
the QBER it measured. A block of N pulses is simulated (``LinkSimulator``,
GYS parameters, ground-truth slots: alignment is not timed), distilled, and N is doubled until
the key reaches the target; the crossing is then interpolated linearly in N and confirmed by one
more block (regula falsi on the bound's raw length, which unlike the key is not clipped at 0).
A search stops early, reported as "never", when the node's reason cannot go away with a larger
block: the node refuses the protocol any key (``no_security_proof``), or the sample's QBER sits
more than 3 sigma above the node's abort threshold. Otherwise it
stops at an event budget and reports the node's last reason (a raw length that still falls with
N says nothing: decoy bounds fall linearly at first, while the phase-error bound is near 1/2). Time to key = N / clock (acquisition at the source's 1 GHz) + the host time of
``distill`` on this machine (classical round trips of a real network not included).

Protocols: decoy BB84 (Lim et al. 2014 bound) and B92 (the paper's protocol, on the GYS optics
and on the well-aligned link of the demo: no key either way), each only while the node lists it.
The loss-tolerant three-state protocol (``lt3``) is not measured here: it needs its own
calibrated link (state and basis probabilities, high-efficiency detectors; docs/protocols.md),
and the paper's comparison concerns B92. The report names every protocol the node offers that
this run did not measure.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from paper.node_rules import (QberRule, accepted_kwargs, may_yield_key, node_protocols,
                               protocol_rng)
from postprocessing.amplification import toeplitz_hash
from postprocessing import distill as dist
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.physics import theory

N_DETECTORS = 4
CHUNK_SLOTS = 1 << 27
GOOD_OPTICS_MISALIGNMENT = 0.002


@dataclass(frozen=True)
class Case:
    name: str
    protocol: str
    overrides: dict
    decoy: bool


def cases() -> list[Case]:
    """The protocols to run: those the node lists now, in a fixed order."""
    have = node_protocols()
    out = [Case("decoy BB84", "bb84", {}, True),
           Case("B92 (GYS optics)", "b92", {}, False),
           Case(f"B92 (aligned to {GOOD_OPTICS_MISALIGNMENT:.1%})", "b92",
                {"misalignment": GOOD_OPTICS_MISALIGNMENT}, False)]
    return [c for c in out if c.protocol in have]


@dataclass
class Attempt:
    pulses: int
    key_bits: int
    raw_length: float          # the bound before clipping at 0 (nan when it was not reached)
    host_s: float
    aborted: bool
    reasons: list
    qber: float
    sample_bits: int


@dataclass
class FirstKey:
    case: str
    protocol: str
    distance_km: float
    target_bits: int
    found: bool
    pulses: int | None = None
    key_bits: int | None = None
    acquisition_s: float | None = None
    host_s: float | None = None
    budget_pulses: int | None = None
    last_reasons: list = field(default_factory=list)
    last_qber: float = math.nan
    error: str = ""
    never: str = ""            # why no block size can give key, when that is established
    attempts: list = field(default_factory=list)

    @property
    def total_s(self) -> float | None:
        return None if self.acquisition_s is None else self.acquisition_s + self.host_s


def link(case: Case, distance_km: float) -> LinkParams:
    return LinkParams.preset("gys", protocol=case.protocol, distance_km=distance_km,
                             **case.overrides)


def _detections(params: LinkParams, n_pulses: int, seed: int):
    """Bob's detection events (Alice's slot numbers, channels) of one block, sync dropped."""
    sim = LinkSimulator(params, seed=seed)
    slots, chans, done = [], [], 0
    while done < n_pulses:
        ev = sim.run_slots(min(CHUNK_SLOTS, n_pulses - done))
        keep = ev.channels < N_DETECTORS
        slots.append(ev.true_slots[keep])
        chans.append(ev.channels[keep])
        done += ev.n_slots
    return sim, np.concatenate(slots), np.concatenate(chans)


def distill_block(case: Case, params: LinkParams, n_pulses: int, seed: int) -> Attempt:
    sim, slots, chans = _detections(params, n_pulses, seed)
    kwargs = dict(protocol=case.protocol, slots=slots, channels=chans,
                  alice_pattern=sim.alice_pattern, n_pulses=n_pulses,
                  rng=protocol_rng(seed + 1))
    if case.decoy:
        kwargs.update(intensities=params.intensities,
                      intensity_probabilities=params.intensity_probabilities)
    if case.protocol == "b92":
        expect = theory.expected_link(params)        # what calibration tells the node
        kwargs.update(expected_conclusive_per_pulse=expect.detection_probability
                      * expect.conclusive_fraction,
                      mean_photon_number=params.mu, bob_efficiency=params.detector_efficiency)
    t0 = time.perf_counter()
    out = dist.distill(**accepted_kwargs(dist.distill, kwargs))
    host = time.perf_counter() - t0
    n_key = int(out.alice_key.size)
    out.alice_key.fill(0)
    out.bob_key.fill(0)
    st = out.stats
    raw = st.bound_terms.get("raw_length", math.nan) if st.bound_terms else math.nan
    return Attempt(n_pulses, n_key, float(raw), host, bool(st.aborted), list(st.abort_reasons),
                   float(st.qber_estimate), int(st.sample_bits))


REFUSED = "the node grants this protocol no key (no_security_proof)"


def _why_never(case: Case, attempts: list[Attempt]) -> str:
    """A reason no larger block helps, or '' (see the module docstring)."""
    a = attempts[-1]
    if "no_security_proof" in a.reasons or not may_yield_key(case.protocol):
        return REFUSED
    thr = QberRule.for_protocol(case.protocol).threshold
    if a.sample_bits > 0 and "qber_above_threshold" in a.reasons and not math.isnan(a.qber):
        sigma = math.sqrt(max(a.qber * (1 - a.qber), 1e-12) / a.sample_bits)
        if a.qber - 3 * sigma > thr:
            return (f"sample QBER {a.qber:.2%} is above the node's abort threshold "
                    f"{thr:.2%} (more than 3 sigma)")
    return ""


def warm_up() -> None:
    """Compile the PA kernel before anything is timed (the other stages run in every attempt)."""
    toeplitz_hash(np.zeros(64, np.uint8), np.zeros(64 + 32 - 1, np.uint8), 32)


def first_key(case: Case, distance_km: float, target_bits: int, *, max_events: float,
              seed: int, start_pulses: int | None = None, log=print) -> FirstKey:
    res = FirstKey(case.name, case.protocol, distance_km, target_bits, found=False)
    try:
        params = link(case, distance_km)
        det = theory.expected_link(params).detection_probability
    except Exception as exc:      # a protocol the simulator cannot produce yet
        res.error = f"the simulator cannot run it: {type(exc).__name__}: {exc}"
        return res
    budget = int(max_events / det)
    res.budget_pulses = budget
    n = start_pulses or int(2e5 / det)
    below: Attempt | None = None
    tried: list[Attempt] = []
    k = 0
    while True:
        try:
            a = distill_block(case, params, n, seed + k)
        except Exception as exc:  # the node refuses the protocol or its inputs
            res.error = f"the node refuses: {type(exc).__name__}: {exc}"
            return res
        k += 1
        res.attempts.append(asdict(a))
        res.last_reasons, res.last_qber = a.reasons, a.qber
        log(f"    {case.name} {distance_km:g} km: {n:.3g} pulses -> {a.key_bits} bits "
            f"{'(' + ', '.join(a.reasons) + ')' if a.reasons else ''}")
        tried.append(a)
        if a.key_bits >= target_bits:
            break
        below = a
        res.never = _why_never(case, tried)
        if res.never or n >= budget:
            return res
        n = min(budget, 2 * n)
    hit = a
    for _ in range(2):     # regula falsi on the raw length, which is near-linear in N
        if below is None or math.isnan(below.raw_length) or math.isnan(hit.raw_length):
            break
        if hit.raw_length <= below.raw_length:
            break
        frac = (target_bits - below.raw_length) / (hit.raw_length - below.raw_length)
        guess = int(math.ceil(1.01 * (below.pulses + frac * (hit.pulses - below.pulses))))
        if not below.pulses < guess < hit.pulses:
            break
        a = distill_block(case, params, guess, seed + k)
        k += 1
        res.attempts.append(asdict(a))
        log(f"    {case.name} {distance_km:g} km: {guess:.3g} pulses -> {a.key_bits} bits")
        if a.key_bits >= target_bits:
            hit = a
        else:
            below = a
    res.found = True
    res.pulses, res.key_bits, res.host_s = hit.pulses, hit.key_bits, hit.host_s
    res.acquisition_s = hit.pulses / params.clock_hz
    res.last_reasons, res.last_qber = hit.reasons, hit.qber
    return res


def run(*, distances, targets, max_events: float, seed: int, log=print) -> list[FirstKey]:
    out = []
    warm_up()
    for i, case in enumerate(cases()):
        for j, d in enumerate(distances):
            start = None
            for t in sorted(targets):
                r = first_key(case, d, t, max_events=max_events, seed=seed + 1000 * i + 100 * j,
                              start_pulses=start, log=log)
                out.append(r)
                if not r.found:    # a larger target cannot be reached either
                    for t2 in sorted(targets):
                        if t2 > t:
                            out.append(FirstKey(case.name, case.protocol, d, t2, False,
                                                budget_pulses=r.budget_pulses,
                                                last_reasons=r.last_reasons,
                                                last_qber=r.last_qber, error=r.error,
                                                never=r.never))
                    break
                start = r.pulses
    return out


def to_dict(results: list[FirstKey]) -> list[dict]:
    return [dict(asdict(r), total_s=r.total_s) for r in results]

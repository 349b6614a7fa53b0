"""Does the node notice Eve, and after how many bits? Simulated blocks beside the analytic curve.

Link: the GYS preset at 10 km with ideal optics (no misalignment, no dark counts, no dead time,
one intensity), so that every error in Bob's sifted key is Eve's: this is the setting of the
paper's claim. Each attack model of the simulator runs at 75 % and 100 % of the pulses.

Two abort tests on a sample of m sifted bits, both evaluated on the same simulated samples:
- ``any error``: the textbook test (abort on one wrong bit). With per-bit error probability e,
  P_abort(m) = 1 - (1 - e)^m; for BB84 intercept-resend e = 1/4 gives Eve's escape (3/4)^m.
- ``node rule``: what ``postprocessing.block.decisions`` enforces, basis by basis -- a basis
  whose finite-size upper bound on the QBER (Serfling, ``estimation.estimate_qber_upper``)
  exceeds the threshold, or (BB84) whose sampled rate exceeds Q_tol, aborts, as does a sample
  below the minimum size. With the Z count k ~ Binomial(m, p_Z) and c(k) the largest error count
  a k-bit basis sample may hold, P_abort(m) = 1 - sum_k P(k) P(E_Z <= c(k)) P(E_X <= c(m - k)).
  For B92 this is the node's eavesdropper alarm: the node grants B92 no key at all
  (``no_security_proof`` on every block), but still flags a block whose QBER bound exceeds
  ``finite_key.B92_QBER_CEILING``.
Unambiguous discrimination (``usd``) causes no errors; the node sees it as a drop of the
conclusive yield per pulse (``estimation.check_conclusive_yield``). Its curve is indexed by the
conclusive bits an honest link would deliver, m = N p_0 for N pulses:
P_abort = P(Binomial(N, p_eve) < T(N)), T the node's threshold.

The per-bit error e and the yields p come from ``exact_rates``: the simulator's stated physics
(Poisson clicks per detector, Eve's single-photon resend tables from ``physics.eve``) with the
node's squashing of multi-clicks enumerated exactly -- a cross-basis double click of an honest
multi-photon pulse becomes a random basis and bit, so even an honest ideal link shows about
0.3 % errors at mu = 0.5, which ``theory.expected_link`` (first order) leaves out. The simulated
curves come from ``LinkSimulator`` events sifted by ``postprocessing.sifting``. Samples are nested prefixes of each block (pulses are independent,
so a prefix is a uniform sample); each point's Clopper-Pearson interval is valid on its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from paper import binomial
from paper.node_rules import (QberRule, YieldRule, accepted_kwargs, p_abort_by_basis,
                               protocol_rng)
from postprocessing import distill as dist
from postprocessing import sifting
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.physics import detectors, eve, source

DISTANCE_KM = 10.0
FRACTIONS = (0.75, 1.0)
ATTACKS = (("bb84", "none"), ("b92", "none"), ("bb84", "intercept-resend"), ("b92", "intercept-resend"), ("b92", "b92-resend"),
           ("b92", "helstrom"), ("b92", "usd"))
N_DETECTORS = 4
DETECT_TARGET = 1e-6
"""Eve's escape probability at which the 'bits needed' column is read."""


def link_params(protocol: str, model: str, fraction: float) -> LinkParams:
    """The ideal-optics detection link (every error is Eve's)."""
    eve = {} if model == "none" else dict(eve=model, eve_fraction=fraction)
    return LinkParams.preset("gys", protocol=protocol, distance_km=DISTANCE_KM,
                             misalignment=0.0, dark_count_probability=0.0, dead_time_ns=0.0,
                             jitter_ps=0.0, p_signal=1.0, p_decoy1=0.0, **eve)


def _outcomes(click_set: int) -> list[tuple[int, int, float]]:
    """(basis, bit, weight) Bob records for a set of clicked detectors (bit k = detector k),
    following the node's squashing: same-basis double -> random bit; cross-basis -> random
    basis and random bit."""
    dets = [d for d in range(N_DETECTORS) if click_set >> d & 1]
    if len(dets) == 1:
        return [(dets[0] >> 1, dets[0] & 1, 1.0)]
    bases = {d >> 1 for d in dets}
    if len(bases) == 1:
        b = bases.pop()
        return [(b, 0, 0.5), (b, 1, 0.5)]
    return [(b, v, 0.25) for b in (0, 1) for v in (0, 1)]


def _kept_and_wrong(protocol: str, value: int, alice_basis: int, basis: int, bit: int
                    ) -> tuple[bool, bool]:
    if protocol == "b92":          # conclusive: V (+, bit 1) -> key 1, A (x, bit 1) -> key 0
        if bit != 1:
            return False, False
        key = 1 if basis == 0 else 0
        return True, key != value
    if basis != alice_basis:
        return False, False
    return True, bit != value


def exact_rates_by_basis(params: LinkParams) -> tuple[np.ndarray, np.ndarray]:
    """(sifted bits per pulse, erroneous sifted bits per pulse), each split by Bob's basis
    (index 0 = Z, 1 = X; the node tests each basis on its own), on the ideal-optics link.

    Requires no dark counts, no dead time, no misalignment drift: the detection link of this
    module. Unattacked pulses: independent Poisson clicks of mean mu eta_d q_d per detector,
    squashed; attacked pulses: Eve catches a non-empty pulse (1 - e^-mu) and resends one photon
    per ``eve.resend_probabilities``, which makes at most one click.
    """
    if params.dark_count_probability or params.dead_time_ns or params.afterpulse_probability:
        raise ValueError("exact_rates needs a link without dark counts, dead time, afterpulses")
    mu, proto = params.mu, params.protocol
    eta = params.channel_transmittance * np.full(4, params.detector_efficiency)
    if proto == "b92":
        states = [(source.STOKES_H, 0, 0, 0.5), (source.STOKES_D, 1, 0, 0.5)]
    else:
        states = [(source.STOKES_H, 0, 0, 0.25), (source.STOKES_V, 1, 0, 0.25),
                  (source.STOKES_D, 0, 1, 0.25), (source.STOKES_A, 1, 1, 0.25)]
    f = params.eve_fraction if params.eve_active else 0.0
    resent_q = detectors.port_probabilities(source.BB84_STATES, params.misalignment)
    sifted, wrong = np.zeros(2), np.zeros(2)
    for stokes, value, abasis, weight in states:
        q = detectors.port_probabilities(stokes[None, :], params.misalignment)[0]
        m = mu * eta * q
        p_click = -np.expm1(-m)
        for s in range(1, 1 << N_DETECTORS):
            p = 1.0
            for d in range(N_DETECTORS):
                p *= p_click[d] if s >> d & 1 else 1.0 - p_click[d]
            for b, v, w in _outcomes(s):
                kept, err = _kept_and_wrong(proto, value, abasis, b, v)
                sifted[b] += weight * (1 - f) * p * w * kept
                wrong[b] += weight * (1 - f) * p * w * err
        if f > 0:
            resend = eve.resend_probabilities(params.eve, stokes)[0]
            caught = -math.expm1(-mu)
            for r in range(4):
                for d in range(N_DETECTORS):
                    p = caught * resend[r] * eta[d] * resent_q[r, d]
                    kept, err = _kept_and_wrong(proto, value, abasis, d >> 1, d & 1)
                    sifted[d >> 1] += weight * f * p * kept
                    wrong[d >> 1] += weight * f * p * err
    return sifted, wrong


def exact_rates(params: LinkParams) -> tuple[float, float]:
    """(sifted bits per pulse, erroneous sifted bits per pulse), both bases together."""
    s, w = exact_rates_by_basis(params)
    return float(s.sum()), float(w.sum())


def basis_split(params: LinkParams) -> tuple[float, float, float]:
    """(P(a sifted bit is in basis Z), error rate in Z, error rate in X)."""
    s, w = exact_rates_by_basis(params)
    e = [w[b] / s[b] if s[b] > 0 else 0.0 for b in (0, 1)]
    return float(s[0] / s.sum()), e[0], e[1]


def sifted_per_pulse(params: LinkParams) -> float:
    return exact_rates(params)[0]


def error_per_bit(params: LinkParams) -> float:
    s, w = exact_rates(params)
    return w / s


def bit_grid(m_max: int) -> list[int]:
    """Sample sizes: 1, 2, 3, 4, 6, 8, 12, ... (two per octave) up to m_max."""
    out, m = [], 1
    while m <= m_max:
        out.append(m)
        if m * 3 // 2 > m and m * 3 // 2 <= m_max and (m & (m - 1)) == 0 and m >= 2:
            out.append(m * 3 // 2)
        m *= 2
    return sorted(set(out))


@dataclass
class Curve:
    """One abort test for one attack: analytic and simulated P_abort per sample size."""

    test: str                      # "any error", "node rule", "yield drop"
    bits: list[int]
    analytic: list[float]
    simulated: list[float]
    ci_low: list[float]
    ci_high: list[float]
    blocks: int
    confidence: float


@dataclass
class AttackResult:
    protocol: str
    model: str
    fraction: float
    error_per_bit: float           # e, analytic
    error_per_bit_measured: float
    sifted_per_pulse: float        # with Eve
    honest_sifted_per_pulse: float
    curves: list[Curve] = field(default_factory=list)
    bits_for_detection: int | None = None   # any-error test, P_escape <= DETECT_TARGET
    seconds_for_detection: float | None = None
    decision: dict = field(default_factory=dict)   # one node block: pulses, wall time, reasons

    @property
    def label(self) -> str:
        if self.model == "none":
            return f"{self.protocol.upper()}, no Eve"
        return f"{self.protocol.upper()}, {self.model} on {self.fraction:.0%}"


def _sift(protocol: str):
    return sifting.sift_b92 if protocol == "b92" else sifting.sift_bb84


def simulate_sifted(params: LinkParams, n_bits: int, seed: int, max_chunk_slots: int = 1 << 26
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(error flag, slot, Bob's basis) per sifted bit, >= n_bits rows, in slot order."""
    sim = LinkSimulator(params, seed=seed)
    rng = protocol_rng(seed + 1)
    per_pulse = max(sifted_per_pulse(params), 1e-12)
    chunk = int(min(max_chunk_slots, max(1 << 16, math.ceil(min(n_bits, 4_000_000) / per_pulse))))
    errors, slots, bases, total = [], [], [], 0
    while total < n_bits:
        ev = sim.run_slots(chunk)
        keep = ev.channels < N_DETECTORS
        res = _sift(params.protocol)(ev.true_slots[keep], ev.channels[keep], sim.alice_pattern,
                                     rng)
        errors.append(res.alice.bits != res.bob.bits)
        slots.append(res.alice.slots.copy())
        bases.append(res.bob.basis.copy())
        total += res.alice.bits.size
        res.alice.bits.fill(0)
        res.bob.bits.fill(0)
    return np.concatenate(errors), np.concatenate(slots), np.concatenate(bases)


def _curve(test: str, grid: list[int], analytic: list[float], aborted: np.ndarray,
           confidence: float) -> Curve:
    """aborted: bool (blocks, len(grid))."""
    blocks = aborted.shape[0]
    sims, lows, highs = [], [], []
    for j in range(len(grid)):
        x = int(aborted[:, j].sum())
        lo, hi = binomial.clopper_pearson(x, blocks, 1.0 - confidence)
        sims.append(x / blocks)
        lows.append(lo)
        highs.append(hi)
    return Curve(test, list(grid), analytic, sims, lows, highs, blocks, confidence)


def qber_attack(protocol: str, model: str, fraction: float, *, blocks: int, m_max_any: int,
                m_max_node: int, seed: int, confidence: float) -> AttackResult:
    params = link_params(protocol, model, fraction)
    honest = link_params(protocol, "none", 0.0)
    e = error_per_bit(params)
    rule = QberRule.for_protocol(protocol)
    m_max = max(m_max_any, m_max_node)
    flags, _, basis = simulate_sifted(params, blocks * m_max, seed)
    per_block = flags[:blocks * m_max].reshape(blocks, m_max)
    cum = np.cumsum(per_block, axis=1)
    in_z = basis[:blocks * m_max].reshape(blocks, m_max) == 0
    cum_kz = np.cumsum(in_z, axis=1)
    cum_ez = np.cumsum(per_block & in_z, axis=1)
    res = AttackResult(protocol, model, fraction, e, float(flags.mean()),
                       sifted_per_pulse(params), sifted_per_pulse(honest))

    grid = bit_grid(m_max_any)
    analytic = [1.0 - (1.0 - e) ** m for m in grid]
    aborted = np.stack([cum[:, m - 1] > 0 for m in grid], axis=1)
    res.curves.append(_curve("any error", grid, analytic, aborted, confidence))

    grid = bit_grid(m_max_node)
    table = rule.critical_table(m_max_node)
    p_z, e_z, e_x = basis_split(params)
    analytic = [p_abort_by_basis(rule, m, p_z, e_z, e_x, table) for m in grid]
    cols = []
    for m in grid:
        kz, ez = cum_kz[:, m - 1], cum_ez[:, m - 1]
        kx, ex = m - kz, cum[:, m - 1] - ez
        cols.append((m < rule.min_sample_size) | (kz == 0) | (kx == 0)
                    | (ez > table[kz]) | (ex > table[kx]))
    aborted = np.stack(cols, axis=1)
    res.curves.append(_curve("node rule", grid, analytic, aborted, confidence))

    if e > 0 and model != "none":
        res.bits_for_detection = math.ceil(math.log(DETECT_TARGET) / math.log1p(-e))
        res.seconds_for_detection = (res.bits_for_detection / res.sifted_per_pulse
                                     / params.clock_hz)
    return res


def usd_attack(fraction: float, *, blocks: int, m_max: int, seed: int,
               confidence: float) -> AttackResult:
    """Yield-drop test: conclusive counts of nested pulse prefixes against the node's monitor."""
    params = link_params("b92", "usd", fraction)
    honest = link_params("b92", "none", 0.0)
    p_eve, p_0 = sifted_per_pulse(params), sifted_per_pulse(honest)
    rule = YieldRule.from_node()
    grid = bit_grid(m_max)
    pulses = [max(1, round(m / p_0)) for m in grid]
    n_block = pulses[-1]
    res = AttackResult("b92", "usd", fraction, 0.0, math.nan, p_eve, p_0)
    # enough conclusive bits to cover `blocks` blocks of n_block pulses (mean + 8 sigma)
    need = blocks * n_block * p_eve
    flags, slots, _ = simulate_sifted(params, int(need + 8 * math.sqrt(need) + 64), seed)
    res.error_per_bit_measured = float(flags.mean())
    if slots[-1] < blocks * n_block:
        raise RuntimeError("usd simulation ended before the last block")
    starts = np.arange(blocks, dtype=np.int64) * n_block
    counts = np.stack([np.searchsorted(slots, starts + n, side="left")
                       - np.searchsorted(slots, starts, side="left") for n in pulses], axis=1)
    crit = [rule.max_dropping_count(n, p_0) for n in pulses]
    analytic = [binomial.cdf(c, n, p_eve) for c, n in zip(crit, pulses)]
    aborted = np.stack([counts[:, j] <= crit[j] for j in range(len(grid))], axis=1)
    res.curves.append(_curve("yield drop", grid, analytic, aborted, confidence))
    # bits the honest link would have delivered when the node aborts with P >= 1 - target
    for m, n, c in zip(grid, pulses, crit):
        if binomial.cdf(c, n, p_eve) >= 1.0 - DETECT_TARGET:
            res.bits_for_detection = m
            res.seconds_for_detection = n / params.clock_hz
            break
    return res


def node_decision(res: AttackResult, seed: int) -> dict:
    """One block through ``distill`` at the smallest size the node will judge (its minimum test
    sample): pulses, acquisition time at the link's clock, host time, the node's reasons."""
    params = link_params(res.protocol, res.model, res.fraction)
    honest = link_params(res.protocol, "none", 0.0)
    rule = QberRule.for_protocol(res.protocol)
    n_sifted = math.ceil(rule.min_sample_size / rule.sample_fraction) + 1
    n_pulses = math.ceil(1.1 * n_sifted / sifted_per_pulse(honest))
    sim = LinkSimulator(params, seed=seed)
    ev = sim.run_slots(n_pulses)
    keep = ev.channels < N_DETECTORS
    kwargs = dict(protocol=res.protocol, slots=ev.true_slots[keep], channels=ev.channels[keep],
                  alice_pattern=sim.alice_pattern, n_pulses=n_pulses,
                  rng=protocol_rng(seed + 1))
    if res.protocol == "b92":
        kwargs.update(expected_conclusive_per_pulse=sifted_per_pulse(honest),
                      mean_photon_number=params.mu, bob_efficiency=params.detector_efficiency)
    t0 = time.perf_counter()
    out = dist.distill(**accepted_kwargs(dist.distill, kwargs))
    host_s = time.perf_counter() - t0
    out.alice_key.fill(0)
    out.bob_key.fill(0)
    st = out.stats
    return {"pulses": n_pulses, "acquisition_s": n_pulses / params.clock_hz,
            "host_s": host_s, "sifted_bits": st.sifted_bits, "sample_bits": st.sample_bits,
            "aborted": bool(st.aborted), "reasons": list(st.abort_reasons),
            "qber_estimate": st.qber_estimate}


def run(*, blocks: int, m_max_any: int, m_max_node: int, m_max_usd: int, seed: int,
        confidence: float = 0.99, with_decisions: bool = True,
        attacks=ATTACKS, fractions=FRACTIONS, log=print) -> list[AttackResult]:
    out = []
    if with_decisions:     # first call loads the numba kernels: keep it out of the timings
        node_decision(AttackResult("bb84", "none", 0.0, 0.0, 0.0, 0.0, 0.0), seed)
    for i, (protocol, model) in enumerate(attacks):
        for j, f in enumerate((0.0,) if model == "none" else fractions):
            t0 = time.perf_counter()
            s = seed + 1000 * i + 10 * j
            if model == "usd":
                r = usd_attack(f, blocks=blocks, m_max=m_max_usd, seed=s, confidence=confidence)
            else:
                r = qber_attack(protocol, model, f, blocks=blocks, m_max_any=m_max_any,
                                m_max_node=m_max_node, seed=s, confidence=confidence)
            if with_decisions:
                r.decision = node_decision(r, s + 5)
            out.append(r)
            log(f"  {r.label}: e = {r.error_per_bit:.4f} ({time.perf_counter() - t0:.1f} s)")
    return out


def to_dict(results: list[AttackResult]) -> list[dict]:
    return [dict(asdict(r), label=r.label) for r in results]

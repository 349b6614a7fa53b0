"""Closed-form expectations for the simulated link (docs/physics.md sections 1 and 2).

The GYS-model formulas (gain, error rate, single-photon yield and error, decoy-state key rate)
are written as the reference states them. ``expected_link`` extends them to what this simulator
adds (dead time, B92 conclusive results, rotations, eavesdroppers, decoy intensities) to first
order in the click probability per slot; ``eve_signature`` gives the exact figures of each
eavesdropper model for ideal optics (no misalignment, no dark counts) under the assumptions
stated in ``physics.eve``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_backend.physics import detectors, eve, source

E0 = 0.5
"""Error rate of a dark count (random outcome)."""
GLLP_BASIS_SIFT = 0.5


def gain(mu: float, eta: float, y0: float) -> float:
    """Q_mu = Y0 + 1 - exp(-eta mu): detection probability per pulse."""
    return y0 + 1.0 - math.exp(-eta * mu)


def error_rate(mu: float, eta: float, y0: float, e_det: float) -> float:
    """E_mu from E_mu Q_mu = e0 Y0 + e_det (1 - exp(-eta mu))."""
    return (E0 * y0 + e_det * (1.0 - math.exp(-eta * mu))) / gain(mu, eta, y0)


def single_photon_yield(eta: float, y0: float) -> float:
    return y0 + eta


def single_photon_error(eta: float, y0: float, e_det: float) -> float:
    return (E0 * y0 + e_det * eta) / single_photon_yield(eta, y0)


def single_photon_gain(mu: float, eta: float, y0: float) -> float:
    return single_photon_yield(eta, y0) * mu * math.exp(-mu)


def binary_entropy(x: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -x * math.log2(x) - (1.0 - x) * math.log2(1.0 - x)


def decoy_key_rate(mu: float, eta: float, y0: float, e_det: float, f: float = 1.22,
                   q: float = GLLP_BASIS_SIFT) -> float:
    """Asymptotic GLLP rate with infinitely many decoys, per pulse (may be negative: no key)."""
    q_mu = gain(mu, eta, y0)
    return q * (-q_mu * f * binary_entropy(error_rate(mu, eta, y0, e_det))
                + single_photon_gain(mu, eta, y0)
                * (1.0 - binary_entropy(single_photon_error(eta, y0, e_det))))


def dead_time_live_fraction(click_probability: float, dead_slots: int) -> float:
    """Fraction of slots a detector is live when each click blinds it for ``dead_slots`` slots.

    Renewal argument for i.i.d. slots with click probability p: a cycle is D dead slots plus a
    geometric wait of mean 1/p, so the registered rate is p / (1 + D p).
    """
    return 1.0 / (1.0 + dead_slots * click_probability)


def drifted_alignment(sigma_rad_per_sqrt_s: float, t_s: float) -> float:
    """E[s . R(t) s] for the fibre's Brownian rotation: exp(-sigma^2 t)."""
    return math.exp(-sigma_rad_per_sqrt_s ** 2 * t_s)


def afterpulse_total_factor(afterpulse_probability: float) -> float:
    """Clicks per primary click when every click may cascade one afterpulse: 1 / (1 - P)."""
    return 1.0 / (1.0 - afterpulse_probability)


@dataclass(frozen=True)
class EveSignature:
    detection_probability: float
    qber: float
    conclusive_fraction: float | None


# Per detected photon of each attack, with ideal optics: (sifted, erroneous) fractions of the
# detections. BB84 keeps half of the detections (Bob's passive basis = Alice's); B92 keeps the
# conclusive ones (docs/physics.md section 2, derived in physics/eve.py's model).
_PER_DETECTION = {
    ("bb84", "none"): (0.5, 0.0),
    ("bb84", "intercept-resend"): (0.5, 0.125),
    ("bb84", "blinding"): (0.5, 0.0),
    ("b92", "none"): (0.25, 0.0),
    ("b92", "intercept-resend"): (0.375, 0.125),
    ("b92", "b92-resend"): (0.25, 0.0625),
    ("b92", "helstrom"): (0.25, 0.25 * (1.0 - math.sqrt(0.5)) / 2.0),
    ("b92", "usd"): (0.25, 0.0),
    ("b92", "blinding"): (0.25, 0.0),
}


def eve_signature(protocol: str, model: str, fraction: float, mu: float,
                  eta: float) -> EveSignature:
    """Detection probability, QBER and conclusive fraction under attack, ideal optics.

    Attacked pulses are detected with probability (1 - exp(-mu)) * eta * s, s = 1 - 1/sqrt(2)
    for unambiguous discrimination (its success probability) and 1 otherwise; unattacked ones
    with 1 - exp(-eta mu). For mu -> 0 these agree and BB84 intercept-resend gives f/4.
    """
    caught = 1.0 - math.exp(-mu)
    success = 1.0 - math.sqrt(0.5) if model == "usd" else 1.0
    attacked = caught * (eve.blinding_fire_probability(eta) if model == "blinding"
                         else eta) * success
    clean = 1.0 - math.exp(-eta * mu)
    w_att, w_clean = fraction * attacked, (1.0 - fraction) * clean
    s_att, e_att = _PER_DETECTION[(protocol, model)]
    s_clean, _ = _PER_DETECTION[(protocol, "none")]
    sifted = w_att * s_att + w_clean * s_clean
    detections = w_att + w_clean
    return EveSignature(detection_probability=detections,
                        qber=w_att * e_att / sifted if sifted else float("nan"),
                        conclusive_fraction=sifted / detections if protocol == "b92" else None)


@dataclass(frozen=True)
class LinkExpectation:
    detection_probability: float
    gains: tuple[float, float, float]
    error_rates: tuple[float, float, float]
    qber: float
    conclusive_fraction: float | None
    live_fraction: float
    key_rate_per_pulse: float | None

    def to_dict(self) -> dict:
        return {"detection_probability": self.detection_probability,
                "gains": list(self.gains), "error_rates": list(self.error_rates),
                "qber": self.qber, "conclusive_fraction": self.conclusive_fraction,
                "dead_time_live_fraction": self.live_fraction,
                "decoy_key_rate_per_pulse": self.key_rate_per_pulse}


def expected_link(params, net_rotation: np.ndarray | None = None) -> LinkExpectation:
    """Expected figures of ``simulate`` for ``params`` (first order in clicks per slot).

    Photon clicks follow the prepared state through ``net_rotation`` (identity: perfect
    compensation) and the misalignment; dark counts and afterpulses spread evenly over the
    four detectors; an
    eavesdropper uses ``eve_signature``'s detection weights; dead time scales each detector's
    clicks by that detector's own live fraction. ``usd-multiphoton`` (multi-photon resends,
    squashed multi-clicks) comes from ``b92_expectation`` (one intensity only).
    """
    rot = np.eye(3) if net_rotation is None else np.asarray(net_rotation, dtype=float)
    p = params
    if p.eve == "usd-multiphoton" and p.eve_active:
        if p.protocol == "lt3":
            raise ValueError("no closed-form expectation for usd-multiphoton on LT3 "
                             "(multi-photon resends, squashed multi-clicks)")
        return _expected_usd_multiphoton(p)
    eta = p.transmittance
    f = p.eve_fraction if p.eve_active else 0.0
    y0 = p.dark_count_probability * (1.0 - f if p.eve == "blinding" else 1.0)
    eta_k = detectors.detector_efficiencies(p.detector_efficiency, p.efficiency_mismatch,
                                            np.full(4, detectors.NOMINAL_EFFICIENCY_PCT),
                                            np.ones(4, bool)) * p.channel_transmittance
    bob_states = source.BB84_STATES @ rot.T
    q_resent = detectors.port_probabilities(bob_states, p.misalignment)      # (4 r, 4 det)
    bright = detectors.blinded_click_mask(bob_states, p.misalignment, np.ones(4, bool))
    bright_bits = (bright[:, None] >> np.arange(4)[None, :]) & 1            # (4 r, 4 det)

    if p.protocol == "b92":
        states = [(source.STOKES_H, 0, 0, 0.5), (source.STOKES_D, 1, 0, 0.5)]
    elif p.protocol == "lt3":   # sifted = key rows: Z state, Z detector
        pz, px = 1.0 - p.p_basis_x, p.p_basis_x
        states = [(source.STOKES_H, 0, 0, pz / 2), (source.STOKES_V, 1, 0, pz / 2),
                  (source.STOKES_D, 0, 1, px)]
    else:
        pz, px = 1.0 - p.p_basis_x, p.p_basis_x
        states = [(source.STOKES_H, 0, 0, pz / 2), (source.STOKES_V, 1, 0, pz / 2),
                  (source.STOKES_D, 0, 1, px / 2), (source.STOKES_A, 1, 1, px / 2)]

    def per_intensity(y0: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per intensity: detections, sifted and erroneous sifted clicks, split by the
        detector that fired (so each can be scaled by its own dead-time live fraction)."""
        rows = []
        for mu in p.intensities:
            det_p, sifted, errors = np.zeros(4), np.zeros(4), np.zeros(4)
            for stokes, value, basis, weight in states:
                q_alice = detectors.port_probabilities(rot @ stokes, p.misalignment)[0]
                m = mu * eta_k * q_alice                                        # per detector
                attacked = np.zeros(4)
                if f > 0:
                    resend = eve.resend_probabilities(p.eve, stokes)[0]
                    caught = 1.0 - math.exp(-mu)
                    if p.eve == "blinding":
                        fire = eve.blinding_fire_probability(eta)
                        attacked = caught * fire * (resend @ bright_bits)
                    else:
                        attacked = caught * (resend @ (q_resent * eta_k[None, :]))
                clicks = (1.0 - f) * -np.expm1(-m) + f * attacked + y0 / 4.0
                # Unattacked: independent Poisson detectors; attacked: one photon or bright pulse.
                detected = ((1.0 - f) * (1.0 - (1.0 - y0) * math.exp(-m.sum()))
                            + f * (1.0 - (1.0 - y0) * (1.0 - attacked.sum())))
                share = clicks / clicks.sum() if clicks.sum() > 0 else np.zeros(4)
                if p.protocol == "b92":
                    keep = np.array([0.0, 1.0, 0.0, 1.0])                     # V, A conclusive
                    wrong = np.array([0.0, 1.0, 0.0, 0.0]) if value == 0 else np.array(
                        [0.0, 0.0, 0.0, 1.0])
                else:
                    keep = np.array([1.0, 1.0, 0.0, 0.0]) if basis == 0 else np.array(
                        [0.0, 0.0, 1.0, 1.0]) * (p.protocol == "bb84")
                    wrong = keep * np.array([value == 1, value == 0, value == 1, value == 0])
                det_p += weight * detected * share
                sifted += weight * detected * share * keep
                errors += weight * detected * share * wrong
            rows.append((det_p, sifted, errors))
        return rows

    # Afterpulses land on slots unrelated to the pulse that caused them: to first order they
    # are extra background clicks (random outcome, e0 = 1/2) at P/(1-P) times the click rate.
    per_int = per_intensity(y0)
    probs = p.intensity_probabilities
    if p.afterpulse_probability > 0:
        raw = sum(pk * float(d.sum()) for pk, (d, _, _) in zip(probs, per_int))
        ap = p.afterpulse_probability
        per_int = per_intensity(y0 + raw * ap / (1.0 - ap))
    # Each detector is dead after its own clicks: B92 loads H and D three times as much as V
    # and A, so one shared live fraction would misstate the conclusive fraction.
    raw_k = sum(pk * d for pk, (d, _, _) in zip(probs, per_int))
    dead = detectors.dead_slots(p.dead_time_ns, p.clock_hz)
    live_k = np.array([dead_time_live_fraction(float(c), dead) for c in raw_k])
    raw_total = float(raw_k @ live_k)
    live = raw_total / float(raw_k.sum()) if raw_k.sum() > 0 else 1.0
    gains = tuple(float(d @ live_k) for d, _, _ in per_int)
    err_rates = tuple(float(e @ live_k) / float(s @ live_k) if s @ live_k > 0 else float("nan")
                      for _, s, e in per_int)
    sift_total = sum(pk * float(s @ live_k) for pk, (_, s, _) in zip(probs, per_int))
    err_total = sum(pk * float(e @ live_k) for pk, (_, _, e) in zip(probs, per_int))
    key_rate = None
    if p.protocol == "bb84" and not p.eve_active:
        key_rate = decoy_key_rate(p.mu, eta, p.dark_count_probability, p.misalignment)
    return LinkExpectation(
        detection_probability=raw_total, gains=gains, error_rates=err_rates,
        qber=err_total / sift_total if sift_total > 0 else float("nan"),
        conclusive_fraction=(sift_total / raw_total if p.protocol == "b92" and raw_total > 0
                             else None),
        live_fraction=live, key_rate_per_pulse=key_rate)


# -- B92 with squashed multi-clicks: exact per-slot figures (the usd-multiphoton attack) -------

_MASKS = np.arange(16)
_IN_MASK = ((_MASKS[:, None] >> np.arange(4)[None, :]) & 1).astype(bool)   # (16 masks, 4 det)


def _squash_table() -> np.ndarray:
    """(16, 4): P(the squashing rule reports detector d | detectors in mask clicked).

    The node's rule (postprocessing.sifting): one detector reports itself; both detectors of
    one analyser give that analyser and a random bit; clicks in both analysers give a random
    analyser and a random bit.
    """
    out = np.zeros((16, 4))
    for m in range(1, 16):
        plus, cross = m & 3, (m >> 2) & 3
        if m in (1, 2, 4, 8):
            out[m, int(np.log2(m))] = 1.0
        elif cross == 0:
            out[m, :2] = 0.5
        elif plus == 0:
            out[m, 2:] = 0.5
        else:
            out[m, :] = 0.25
    return out


SQUASH = _squash_table()


def poisson_mask_distribution(means: np.ndarray) -> np.ndarray:
    """(16,): P(exactly the detectors in mask click) for independent Poisson light of
    per-detector mean photon numbers ``means`` (coherent light, Poisson splitting)."""
    p_click = -np.expm1(-np.asarray(means, dtype=float))
    return np.prod(np.where(_IN_MASK, p_click[None, :], 1.0 - p_click[None, :]), axis=1)


def fock_mask_distribution(n_photons: int, probs: np.ndarray) -> np.ndarray:
    """(16,): P(exactly the detectors in mask click) when each of ``n_photons`` photons goes to
    detector d with probability probs[d] (lost with the rest), independently (inclusion-
    exclusion over the subsets T of the mask: sum (-1)^{|M|-|T|} (p_lost + p_T)^n)."""
    probs = np.asarray(probs, dtype=float)
    lost = 1.0 - probs.sum()
    out = np.zeros(16)
    for m in range(16):
        total = 0.0
        t = m
        while True:                       # every subset t of m
            sign = (-1) ** (bin(m).count("1") - bin(t).count("1"))
            total += sign * (lost + probs[_IN_MASK[t]].sum()) ** n_photons
            if t == 0:
                break
            t = (t - 1) & m
        out[m] = total
    return np.clip(out, 0.0, 1.0)


def _or_dark(mask_p: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Mask distribution after OR-ing independent dark clicks (per-detector probability)."""
    dark_p = np.prod(np.where(_IN_MASK, dark[None, :], 1.0 - dark[None, :]), axis=1)
    out = np.zeros(16)
    for a in range(16):
        for b in range(16):
            out[a | b] += mask_p[a] * dark_p[b]
    return out


@dataclass(frozen=True)
class B92Expectation:
    """Per-pulse figures of a B92 link after the node's squashing (see ``b92_expectation``)."""

    detection_probability: float      # slots with >= 1 registered click
    conclusive_per_pulse: float       # squashed outcome V or A
    qber: float                       # wrong conclusive results / conclusive results
    multi_click_per_pulse: float      # slots where >= 2 detectors registered a click
    eve_known_conclusive_per_pulse: float   # conclusive results in slots Eve's light clicked
    live_fractions: tuple[float, float, float, float]

    @property
    def multi_click_per_conclusive(self) -> float:
        return self.multi_click_per_pulse / self.conclusive_per_pulse

    @property
    def eve_known_fraction(self) -> float:
        return self.eve_known_conclusive_per_pulse / self.conclusive_per_pulse

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["live_fractions"] = list(self.live_fractions)
        d["multi_click_per_conclusive"] = self.multi_click_per_conclusive
        d["eve_known_fraction"] = self.eve_known_fraction
        return d


def b92_expectation(params) -> B92Expectation:
    """Exact per-slot B92 figures under ``none`` or ``usd-multiphoton``, squashing included.

    Per slot: Alice's pulse (independent Poisson clicks) or, on the attacked fraction, Eve's
    USD success 1 - exp(-mu (1 - 1/sqrt 2)) followed by her Fock state or coherent pulse in
    the identified state (each photon split by Bob's passive analysers, misalignment and
    detector efficiencies; through the fibre or not), nothing on failures; then independent
    dark clicks OR-ed in; then the node's squashing rule. Dead time enters to first order:
    each detector's clicks are thinned by its renewal live fraction 1 / (1 + D c_d), c_d its
    raw click probability per slot. Afterpulsing is left out (``afterpulse_probability``
    must be 0). Perfect polarization compensation is assumed.
    """
    p = params
    if p.protocol != "b92" or p.eve not in ("none", "usd-multiphoton"):
        raise ValueError("b92_expectation covers protocol b92 with eve none or usd-multiphoton")
    if p.afterpulse_probability > 0:
        raise ValueError("b92_expectation leaves afterpulsing out: afterpulse_probability "
                         "must be 0")
    f = p.eve_fraction if p.eve_active else 0.0
    eta_d = detectors.detector_efficiencies(p.detector_efficiency, p.efficiency_mismatch,
                                            np.full(4, detectors.NOMINAL_EFFICIENCY_PCT),
                                            np.ones(4, bool))
    dark = np.full(4, detectors.detector_dark_probability(p.dark_count_probability))
    eta_eve = 1.0 if p.eve_bypass_fibre else p.channel_transmittance
    # Per (intensity, Alice's state): mask distributions of the honest and attacked slots, and
    # of the attacked slots where Eve's light clicked (for what she knows).
    rows = []
    for mu, weight in zip(p.intensities, p.intensity_probabilities):
        if weight <= 0:
            continue
        for stokes, value, r in ((source.STOKES_H, 0, 0), (source.STOKES_D, 1, 2)):
            q = detectors.port_probabilities(stokes, p.misalignment)[0]
            honest = poisson_mask_distribution(mu * p.channel_transmittance * eta_d * q)
            success = float(eve.usd_success_probability(mu)) if f > 0 else 0.0
            pi = eta_eve * eta_d * detectors.port_probabilities(source.BB84_STATES[r],
                                                                p.misalignment)[0]
            if p.eve_resend_mu > 0:
                eve_light = poisson_mask_distribution(p.eve_resend_mu * pi)
            else:
                eve_light = fock_mask_distribution(p.eve_resend_photons, pi)
            blocked = np.zeros(16)
            blocked[0] = 1.0
            attacked = success * eve_light + (1.0 - success) * blocked
            raw = (1.0 - f) * honest + f * attacked
            known = f * success * eve_light * (_MASKS > 0)
            rows.append((weight / 2, value, raw, known))
    # Dead time: live fraction of each detector from its raw click probability (darks in).
    raw_click = sum(w * (_or_dark(raw, dark)[:, None] * _IN_MASK).sum(axis=0)
                    for w, _, raw, _ in rows)
    dead = detectors.dead_slots(p.dead_time_ns, p.clock_hz)
    live = np.array([dead_time_live_fraction(float(c), dead) for c in raw_click])
    # thin[m, m2] = P(registered mask m2 | raw mask m), detectors thinned independently
    keep = np.where(_IN_MASK[:, None, :] & _IN_MASK[None, :, :], live[None, None, :],
                    np.where(_IN_MASK[:, None, :] & ~_IN_MASK[None, :, :],
                             1.0 - live[None, None, :],
                             np.where(~_IN_MASK[:, None, :] & ~_IN_MASK[None, :, :], 1.0, 0.0)))
    thin = np.prod(keep, axis=2)
    detect = conclusive = wrong = multi = known_conc = 0.0
    n_clicks = _IN_MASK.sum(axis=1)
    for w, value, raw, known in rows:
        reg = _or_dark(raw, dark) @ thin
        reg_known = _or_dark(known, dark) @ thin     # Eve's light clicked in the raw slot
        conc = SQUASH[:, 1] + SQUASH[:, 3]           # V or A
        err = SQUASH[:, 1] if value == 0 else SQUASH[:, 3]   # V says D, A says H
        detect += w * reg[1:].sum()
        conclusive += w * reg @ conc
        wrong += w * reg @ err
        multi += w * reg[n_clicks >= 2].sum()
        known_conc += w * reg_known @ conc
    return B92Expectation(detection_probability=float(detect),
                          conclusive_per_pulse=float(conclusive),
                          qber=float(wrong / conclusive) if conclusive > 0 else float("nan"),
                          multi_click_per_pulse=float(multi),
                          eve_known_conclusive_per_pulse=float(known_conc),
                          live_fractions=tuple(float(x) for x in live))


def usd_multiphoton_matching_mu(params, target_conclusive_per_pulse: float) -> float:
    """Eve's coherent resend brightness (``eve_resend_mu``) at which Bob's conclusive yield per
    pulse under ``usd-multiphoton`` equals ``target_conclusive_per_pulse`` (bisection on the
    monotone ``b92_expectation``). Raises ValueError when no brightness up to the parameter
    range's ceiling reaches it."""
    from sim_backend.params import MAX_EVE_RESEND_MU

    def conc(mu_e: float) -> float:
        q = params.replace(eve="usd-multiphoton", eve_fraction=1.0, eve_resend_photons=1,
                           eve_resend_mu=mu_e)
        return b92_expectation(q).conclusive_per_pulse

    lo, hi = 1e-9, MAX_EVE_RESEND_MU
    if conc(hi) < target_conclusive_per_pulse:
        raise ValueError(f"no eve_resend_mu up to {hi:g} reaches a conclusive yield of "
                         f"{target_conclusive_per_pulse:.3g} per pulse")
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if conc(mid) < target_conclusive_per_pulse:
            lo = mid
        else:
            hi = mid
    return hi


def _expected_usd_multiphoton(p) -> LinkExpectation:
    """``expected_link``'s figures for ``usd-multiphoton`` from ``b92_expectation``."""
    if p.p_signal < 1.0:
        raise ValueError("the usd-multiphoton expectation covers one intensity (p_signal = 1)")
    e = b92_expectation(p)
    nan = float("nan")
    raw = np.array(e.live_fractions)
    return LinkExpectation(
        detection_probability=e.detection_probability,
        gains=(e.detection_probability, nan, nan), error_rates=(e.qber, nan, nan),
        qber=e.qber, conclusive_fraction=e.conclusive_per_pulse / e.detection_probability,
        live_fraction=float(raw.mean()), key_rate_per_pulse=None)

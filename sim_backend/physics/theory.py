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
    clicks by that detector's own live fraction.
    """
    rot = np.eye(3) if net_rotation is None else np.asarray(net_rotation, dtype=float)
    p = params
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
                        [0.0, 0.0, 1.0, 1.0])
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

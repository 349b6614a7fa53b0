"""Bob's receiver: passive basis choice, two polarization analysers, four detectors.

A photon reaching Bob goes to the + analyser (H, V) or the x analyser (D, A) with probability
1/2 each. In an analyser it leaves by the port its Stokes component says, except that with
probability e_det (misalignment) it leaves by the wrong one: a visibility V = 1 - 2 e_det.
Detector order is the channel order: 0 = H, 1 = V, 2 = D, 3 = A.
"""

from __future__ import annotations

import math

import numpy as np

from sim_backend.physics.eve import BLINDING_THRESHOLD

NOMINAL_EFFICIENCY_PCT = 10.0
"""The detector setting that stands for the link's ``detector_efficiency`` (linear scaling)."""


def analyser_fractions(stokes_at_bob: np.ndarray, misalignment: float) -> np.ndarray:
    """(n, 4): fraction of the light entering each analyser that leaves by each detector's port."""
    s = np.atleast_2d(np.asarray(stokes_at_bob, dtype=float))
    vis = 1.0 - 2.0 * misalignment
    out = np.empty((s.shape[0], 4))
    out[:, 0] = (1 + vis * s[:, 0]) / 2
    out[:, 1] = (1 - vis * s[:, 0]) / 2
    out[:, 2] = (1 + vis * s[:, 1]) / 2
    out[:, 3] = (1 - vis * s[:, 1]) / 2
    return out


def port_probabilities(stokes_at_bob: np.ndarray, misalignment: float) -> np.ndarray:
    """(n, 4): probability that a photon arriving at Bob heads for each detector (sums to 1)."""
    return analyser_fractions(stokes_at_bob, misalignment) / 2


def detector_dark_probability(dark_count_probability: float) -> float:
    """Per-detector dark probability per slot such that the four together give Y0."""
    return -math.expm1(math.log1p(-dark_count_probability) / 4)


def dead_slots(dead_time_ns: float, clock_hz: float) -> int:
    """Slots after a click in which the same detector cannot click (t' - t < dead time)."""
    x = dead_time_ns * 1e-9 * clock_hz
    return max(0, math.ceil(x - 1e-9) - 1)


def detector_efficiencies(detector_efficiency: float, efficiency_mismatch: float,
                          efficiency_pct: np.ndarray, enabled: np.ndarray) -> np.ndarray:
    """(4,) efficiency of each detector: eta_Bob x setting / 10 %, V and A x (1 - mismatch)."""
    eta = detector_efficiency * np.asarray(efficiency_pct, dtype=float) / NOMINAL_EFFICIENCY_PCT
    eta = eta * np.array([1.0, 1.0 - efficiency_mismatch, 1.0, 1.0 - efficiency_mismatch])
    return np.where(np.asarray(enabled, dtype=bool), np.clip(eta, 0.0, 1.0), 0.0)


def blinded_click_mask(stokes_at_bob: np.ndarray, misalignment: float,
                       enabled: np.ndarray) -> np.ndarray:
    """(n,) uint8: detectors (bit k) a bright faked-state pulse makes click when blinded."""
    frac = analyser_fractions(stokes_at_bob, misalignment)
    bits = (frac > BLINDING_THRESHOLD) & np.asarray(enabled, dtype=bool)[None, :]
    return (bits * (1 << np.arange(4))).sum(axis=1).astype(np.uint8)

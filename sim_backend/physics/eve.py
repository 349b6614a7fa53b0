"""What an eavesdropper resends, per prepared state.

Assumptions (the figures in ``theory`` and the tests follow from them):
- Eve sits at Alice's output and is lossless: she catches every non-empty pulse, P(n >= 1) =
  1 - exp(-mu), and measures one photon of it (she gains nothing more from multi-photon pulses
  in these attacks).
- She then resends ONE photon in the state her result suggests, through the whole fibre and
  Bob's optics, so her photon is subject to the same loss, rotation and misalignment as Alice's.
  Bob's detection probability for it is eta (Alice's pulse: 1 - exp(-eta mu)); so for mu -> 0
  the attacked and unattacked pulses are detected equally often.
- ``blinding`` (faked states): Eve measures in a random basis and, with probability
  ``blinding_fire_probability`` = eta on each caught pulse (so Bob's click rate looks normal),
  sends a bright pulse in the state she found. Bob's detectors are blinded (linear mode): a
  detector clicks iff it receives more than 3/4 of the light entering its analyser, so only the
  detector matching Eve's state clicks, regardless of the detector efficiency. Blinded
  detectors have no dark counts.

Resend probabilities are tables over Bob's four states (H, V, D, A in channel order); a row sums
to less than 1 when Eve forwards nothing on some outcomes (unambiguous discrimination).
"""

from __future__ import annotations

import numpy as np

SQRT_HALF = np.sqrt(0.5)

BLINDING_THRESHOLD = 0.75
"""Fraction of an analyser's light a blinded detector needs to click (between 1/2 and 1)."""

HELSTROM_GUESS_H = np.array([SQRT_HALF, -SQRT_HALF, 0.0])
"""Stokes vector of the Helstrom projector that guesses H (polarization -22.5 degrees)."""

USD_WEIGHT = 1.0 / (1.0 + SQRT_HALF)
"""Scale c of the optimal USD POVM c|A><A|, c|V><V| for the B92 pair |H>, |D>."""


def resend_probabilities(model: str, stokes: np.ndarray) -> np.ndarray:
    """(n, 4) float64: P(Eve resends H, V, D, A | she measured a photon in state ``stokes``)."""
    s = np.atleast_2d(np.asarray(stokes, dtype=float))
    s1, s2 = s[:, 0], s[:, 1]
    out = np.zeros((s.shape[0], 4))
    if model in ("intercept-resend", "blinding"):
        # Random + or x basis, projective measurement, resend the eigenstate found.
        out[:, 0] = (1 + s1) / 4
        out[:, 1] = (1 - s1) / 4
        out[:, 2] = (1 + s2) / 4
        out[:, 3] = (1 - s2) / 4
    elif model == "b92-resend":
        # Passive B92 measurement; H or A point to |H>, V or D point to |D>: resend that.
        out[:, 0] = (1 + s1) / 4 + (1 - s2) / 4
        out[:, 2] = (1 - s1) / 4 + (1 + s2) / 4
    elif model == "helstrom":
        p_guess_h = (1 + s @ HELSTROM_GUESS_H) / 2
        out[:, 0] = p_guess_h
        out[:, 2] = 1 - p_guess_h
    elif model == "usd":
        # Outcome A excludes |D> (so it was H); outcome V excludes |H> (so it was D).
        out[:, 0] = USD_WEIGHT * (1 - s2) / 2
        out[:, 2] = USD_WEIGHT * (1 - s1) / 2
    elif model != "none":
        raise ValueError(f"eve model {model!r} unknown")
    return out


def blinding_fire_probability(transmittance: float) -> float:
    """Chance that Eve fakes a click on a caught pulse: eta, so Bob's rate stays near eta*mu."""
    return min(1.0, transmittance)

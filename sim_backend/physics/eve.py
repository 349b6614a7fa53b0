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

- ``usd-multiphoton`` (the attack of security issue 13 on B92 with weak coherent pulses): Eve
  at Alice's output discriminates the whole pulse |a,H> vs |a,D> unambiguously. For a
  phase-randomised pulse she may count its photons first; n copies of the pair overlap
  s^n, s = 1/sqrt 2, so her success is sum_n Poisson(n; mu) (1 - s^n) = 1 - exp(-mu (1 - s))
  per pulse (``usd_success_probability``). She blocks every failure and on each success
  resends the identified state (|H> or |D>, so a lone photon never gives Bob a wrong
  conclusive result) as a Fock state of ``eve_resend_photons`` photons or a coherent pulse
  of mean ``eve_resend_mu``, optionally straight into Bob's receiver (``eve_bypass_fibre``).
  More photons raise Bob's conclusive yield; the price is multi-clicks across the two
  analysers, which the squashing rule turns into a random outcome (1/4 of them wrong
  conclusive results). She knows Alice's bit in every slot she resends.

- ``usd-multiphoton`` on LT3 (states H, V, D): three states of a qubit are linearly dependent,
  so one photon admits no unambiguous discrimination; n >= 2 photons in mode psi_j form the
  states |psi_j>^(x)n with Gram matrix [[1, 0, c], [0, 1, c], [c, c, 1]], c = 2^(-n/2), and an
  unambiguous measurement with equal success p exists iff G - p 1 >= 0 (Eldar, IEEE Trans. Inf.
  Theory 49, 446 (2003)), i.e. p = 1 - sqrt(2) c = 1 - 2^((1-n)/2). Eve counts photons, blocks
  every pulse she cannot identify (all single photons) and resends the identified state as
  above. Decoys see this: her clicks grow like mu^2, not mu.

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


def usd_success_probability(mean_photons) -> np.ndarray:
    """P(Eve's unambiguous discrimination of a whole phase-randomised pulse succeeds):
    1 - exp(-mu (1 - 1/sqrt 2)), per pulse of mean photon number ``mean_photons``."""
    return -np.expm1(-np.asarray(mean_photons, dtype=float) * (1.0 - SQRT_HALF))


def usd3_success_probability(mean_photons) -> np.ndarray:
    """P(Eve unambiguously identifies which of H, V, D a phase-randomised pulse carries):
    sum_{n>=2} Poisson(n; mu) (1 - 2^((1-n)/2)) = 1 - e^-mu (1 + mu) - sqrt 2 e^-mu
    (e^(mu/sqrt 2) - 1 - mu/sqrt 2)."""
    mu = np.asarray(mean_photons, dtype=float)
    r2 = np.sqrt(2.0)
    two_plus = -np.expm1(-mu) - mu * np.exp(-mu)
    return two_plus - r2 * np.exp(-mu) * (np.expm1(mu / r2) - mu / r2)


def attack_probabilities(model: str, stokes: np.ndarray, mean_photons: np.ndarray, *,
                         protocol: str = "b92") -> np.ndarray:
    """(n, 4): P(Eve resends H, V, D, A | Alice sent ``stokes`` at ``mean_photons``), per pulse.

    Single-photon models catch a non-empty pulse (1 - exp(-mu)) and measure one photon of it;
    ``usd-multiphoton`` succeeds with ``usd_success_probability`` (B92: H vs D) or
    ``usd3_success_probability`` (``protocol="lt3"``: H, V, D) and resends the state found.
    """
    s = np.atleast_2d(np.asarray(stokes, dtype=float))
    mu = np.broadcast_to(np.asarray(mean_photons, dtype=float), (s.shape[0],))
    if model != "usd-multiphoton":
        return -np.expm1(-mu)[:, None] * resend_probabilities(model, s)
    if protocol == "lt3":
        out = np.zeros((s.shape[0], 4))
        success = usd3_success_probability(mu)
        known = np.zeros(s.shape[0], dtype=bool)
        for col, ref in ((0, (1.0, 0.0)), (1, (-1.0, 0.0)), (2, (0.0, 1.0))):
            hit = np.isclose(s[:, 0], ref[0]) & np.isclose(s[:, 1], ref[1])
            out[:, col] = np.where(hit, success, 0.0)
            known |= hit
        if not np.all(known):
            raise ValueError("usd-multiphoton on LT3 discriminates |H>, |V>, |D> only")
        return out
    is_h = np.isclose(s[:, 0], 1.0) & np.isclose(s[:, 1], 0.0)
    is_d = np.isclose(s[:, 1], 1.0) & np.isclose(s[:, 0], 0.0)
    if not np.all(is_h | is_d):
        raise ValueError("usd-multiphoton discriminates the B92 pair |H>, |D> only")
    out = np.zeros((s.shape[0], 4))
    success = usd_success_probability(mu)
    out[:, 0] = np.where(is_h, success, 0.0)
    out[:, 2] = np.where(is_d, success, 0.0)
    return out


def blinding_fire_probability(transmittance: float) -> float:
    """Chance that Eve fakes a click on a caught pulse: eta, so Bob's rate stays near eta*mu."""
    return min(1.0, transmittance)

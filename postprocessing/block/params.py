"""What a link fixes before any block: protocol, epsilons, tolerances, thresholds, calibration.

Everything here is decided per link in advance (config), never from the block being judged:
Tomamichel et al.'s theorem needs the tolerated QBER Q_tol fixed before the test sample is seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from postprocessing.reconciliation.schedules import SCHEDULES

PROTOCOLS = ("bb84", "b92", "lt3")

QBER_TOL_MARGIN = 0.015
"""Drift allowance of ``qber_tol_for``: Q_tol sits 1.5 percentage points above the QBER the
link is expected to run at, so slow drift does not abort every block."""

DEFAULT_QBER_TOL = 0.05
"""``qber_tol_for(0.035)``: a link expected at up to 3.5 % QBER (GYS misalignment 3.3 %)."""


DEFAULT_FRAME_BITS = 200_000
"""Cascade frame length the node uses (``frame_bits``): a block's key cut into frames of about
this many bits, reconciled side by side (one request per round covers every frame). Against
one frame per block (4 Mbit at QBER 2 %): about 2/3 of the round trips (~700 against ~1000),
the same disclosed parities, and one shared layout (shuffles) of 0.2 Mbit instead of one of the
whole block. Kept clear of powers of two: frames of two lengths straddling one would get two
layouts, and ``_split_frames`` would then fall back to one frame."""


class BlockParamsError(ValueError):
    """A block parameter is missing or outside its accepted range."""


def qber_tol_for(expected_qber: float, margin: float = QBER_TOL_MARGIN) -> float:
    """The documented default Q_tol of a link from its expected (calibrated) QBER."""
    if not (isinstance(expected_qber, (int, float)) and 0.0 <= expected_qber < 0.5):
        raise BlockParamsError(f"expected_qber={expected_qber!r} must lie in [0, 0.5)")
    return min(0.11, float(expected_qber) + margin)


def _unit(name: str, v, lo_open: bool = True, hi: float = 1.0) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not ((0.0 < v) if lo_open else (0.0 <= v)) or not v < hi:
        interval = f"({'0' if lo_open else '[0'}, {hi})" if lo_open else f"[0, {hi})"
        raise BlockParamsError(f"{name}={v!r} must lie in {interval}")


@dataclass(frozen=True)
class BlockParams:
    """Per-link block settings.

    qber_tol: Tomamichel's Q_tol, fixed per link (``qber_tol_for(expected QBER)`` is the
    documented default); a block aborts when any basis's sampled error rate exceeds it, and the
    bound is evaluated at it. qber_threshold: ceiling on the finite-size upper bound of the QBER
    (B92 also uses ``finite_key.B92_QBER_CEILING``). intensities/intensity_probabilities: decoy
    BB84 (Lim 2014). expected_conclusive_per_pulse: B92's calibrated conclusive yield (its USD
    alarm); max_multi_click_fraction: calibrated ceiling on multi-click slots per detected slot
    (a multi-photon resend attack raises it). frame_bits: Cascade frame size (None: the whole
    key is one frame). LT3 (loss-tolerant three-state, ``finite_key_lt``): intensities (mu, nu,
    0) and their probabilities, alice_state_probabilities (Z0, Z1, X0), the characterised
    bloch_vectors ((P_X, P_Z) of Z0, Z1, X0; default ideal H, V, D), bob_z_probability (the
    passive splitter's Z share) and max_basis_efficiency_deviation (calibrated tolerance on each
    state's Z-click fraction around it).
    """

    protocol: str
    qber_tol: float
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    schedule: str = "yan"
    qber_threshold: float = 0.11
    sample_fraction: float = 0.1
    min_sample_size: int = 1000
    intensities: tuple | None = None
    intensity_probabilities: tuple | None = None
    expected_conclusive_per_pulse: float | None = None
    max_multi_click_fraction: float = 0.01
    yield_eps: float = 1e-9
    yield_rel_tolerance: float = 0.1
    holdoff_slots: int = 0
    frame_bits: int | None = None
    alice_state_probabilities: tuple | None = None
    bloch_vectors: tuple | None = None
    bob_z_probability: float = 0.5
    max_basis_efficiency_deviation: float = 0.02

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise BlockParamsError(f"protocol={self.protocol!r} must be one of {PROTOCOLS}")
        _unit("eps_sec", self.eps_sec)
        _unit("eps_cor", self.eps_cor)
        _unit("qber_tol", self.qber_tol, lo_open=False, hi=0.5)
        _unit("qber_threshold", self.qber_threshold, hi=0.5)
        _unit("sample_fraction", self.sample_fraction)
        _unit("max_multi_click_fraction", self.max_multi_click_fraction, hi=1.0 + 1e-12)
        _unit("yield_eps", self.yield_eps)
        _unit("yield_rel_tolerance", self.yield_rel_tolerance, lo_open=False)
        if self.schedule not in SCHEDULES:
            raise BlockParamsError(f"schedule={self.schedule!r} must be one of "
                                   f"{sorted(SCHEDULES)}")
        for name in ("min_sample_size", "holdoff_slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name[0] == "m" else 0):
                raise BlockParamsError(f"{name}={v!r} must be an integer >= "
                                       f"{1 if name[0] == 'm' else 0}")
        if self.frame_bits is not None and (isinstance(self.frame_bits, bool)
                                            or not isinstance(self.frame_bits, int)
                                            or self.frame_bits < 64):
            raise BlockParamsError(f"frame_bits={self.frame_bits!r} must be None or an "
                                   f"integer >= 64")
        if self.protocol == "lt3":
            self._check_lt3()
        if self.decoy:
            if self.protocol == "b92" or self.intensity_probabilities is None:
                raise BlockParamsError("intensities= needs protocol 'bb84' or 'lt3' and "
                                       "intensity_probabilities=")
            if len(self.intensities) != 3 or len(self.intensity_probabilities) != 3:
                raise BlockParamsError("intensities and intensity_probabilities must hold 3 "
                                       "values each (mu, nu1, nu2)")
            object.__setattr__(self, "intensities", tuple(float(x) for x in self.intensities))
            object.__setattr__(self, "intensity_probabilities",
                               tuple(float(x) for x in self.intensity_probabilities))
        if self.protocol == "b92":
            y = self.expected_conclusive_per_pulse
            if y is None:
                raise BlockParamsError("B92 needs expected_conclusive_per_pulse= (the calibrated "
                                       "conclusive yield): the USD attack shows only as a yield "
                                       "drop")
            _unit("expected_conclusive_per_pulse", y, hi=1.0 + 1e-12)

    def _check_lt3(self) -> None:
        from postprocessing import finite_key_lt as fkl
        if self.intensities is None or self.alice_state_probabilities is None:
            raise BlockParamsError("LT3 needs intensities=(mu, nu, 0), intensity_probabilities= "
                                   "and alice_state_probabilities=(Z0, Z1, X0)")
        _unit("bob_z_probability", self.bob_z_probability)
        _unit("max_basis_efficiency_deviation", self.max_basis_efficiency_deviation, hi=0.5)
        bloch = fkl.IDEAL_BLOCH if self.bloch_vectors is None else self.bloch_vectors
        try:
            setup = fkl.Lt3Setup(self.intensities, self.intensity_probabilities or (),
                                 self.alice_state_probabilities, self.bob_z_probability, bloch)
        except (fkl.FiniteKeyInputError, TypeError, ValueError, IndexError) as exc:
            raise BlockParamsError(f"LT3 setup: {exc}") from None
        object.__setattr__(self, "alice_state_probabilities", setup.state_probabilities)
        object.__setattr__(self, "bloch_vectors", setup.bloch)

    @property
    def decoy(self) -> bool:
        return self.intensities is not None

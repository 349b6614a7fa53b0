"""Physical parameters of one simulated QKD link, validated once at construction.

Everything the link physics needs is here, with units in the field names, so that a run can be
reproduced from ``LinkParams.to_dict()`` alone (the CLI prints it beside every result). The
``gys`` preset is the parameter set of Gobby, Yuan and Shields (APL 84, 3762 (2004)) as
tabulated by Ma, Qi, Zhao and Lo (PRA 72, 012326 (2005)), run at a 1 GHz clock with decoys
mu = 0.5, nu1 = 0.1, nu2 = 0 (vacuum) and the detector details that paper leaves open (dead
time, jitter, afterpulsing) set to values typical of gated InGaAs detectors at GHz rates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("bb84", "b92", "lt3")
EVE_MODELS = ("none", "intercept-resend", "b92-resend", "helstrom", "usd", "blinding",
              "usd-multiphoton")
B92_ONLY_EVE_MODELS = ("b92-resend", "helstrom", "usd", "usd-multiphoton")
LT3_EVE_MODELS = ("none", "intercept-resend", "blinding", "usd-multiphoton")
"""Models that attack the loss-tolerant three-state protocol (H, V, D): usd-multiphoton
discriminates the three states unambiguously on pulses of two or more photons."""
MAX_EVE_RESEND_PHOTONS = 50
MAX_EVE_RESEND_MU = 100.0
MAX_CLOCK_DRIFT_PPM = 10.0


class ParameterError(ValueError):
    """A link parameter outside its physical or supported range."""


def _check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ParameterError(f"{name} = {value!r} is not a number")
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        suffix = f" {unit}" if unit else ""
        raise ParameterError(f"{name} = {value!r}{suffix} is outside the accepted range "
                             f"{lb}{lo:g}, {hi:g}{rb}{suffix}")


@dataclass(frozen=True)
class LinkParams:
    """One link: source, fibre, Bob's detectors, clocks, and an optional eavesdropper.

    Conventions the physics relies on:
    - ``dark_count_probability`` (Y0) is per pulse over all four detectors together; each
      detector gets an equal share.
    - ``detector_efficiency`` (eta_Bob) is Bob's total transmittance x efficiency; it is the
      value that a detector's ``efficiency_pct = 10`` setting stands for (linear scaling).
    - ``efficiency_mismatch``: detectors V and A have efficiency eta_Bob x (1 - mismatch).
    - ``protocol = "lt3"`` (loss-tolerant three-state): basis Z sends H/V, basis X always D
      (the value bit is ignored); ``p_basis_x`` is Alice's X0 probability, decoys as for BB84.
    - ``misalignment`` (e_det): probability that a photon reaching an analyser leaves by the
      wrong port, so E*Q = Y0/2 + e_det*(1 - exp(-eta*mu)) with perfect compensation.
    - ``eve_fraction``: fraction of pulses the eavesdropper attacks (see physics/eve.py).
    - ``eve_resend_photons`` / ``eve_resend_mu`` / ``eve_bypass_fibre``: what ``usd-multiphoton``
      resends on each success: a Fock state of that many photons, or (``eve_resend_mu`` > 0) a
      coherent pulse of that mean photon number instead; with ``eve_bypass_fibre`` her light
      reaches Bob without the fibre loss (she owns the fibre). Other models resend one photon
      through the fibre and take only the defaults.
    """

    protocol: str = "bb84"
    mu: float = 0.5
    nu1: float = 0.1
    nu2: float = 0.0
    p_signal: float = 0.8
    p_decoy1: float = 0.1
    p_basis_x: float = 0.5
    distance_km: float = 50.0
    loss_db_per_km: float = 0.21
    detector_efficiency: float = 0.045
    dark_count_probability: float = 1.7e-6
    misalignment: float = 0.033
    dead_time_ns: float = 10.0
    afterpulse_probability: float = 0.0
    afterpulse_time_constant_ns: float = 20.0
    jitter_ps: float = 50.0
    clock_hz: float = 1e9
    clock_offset_ps: int = 0
    clock_drift_ppm: float = 0.0
    efficiency_mismatch: float = 0.0
    polarization_drift_rad_per_sqrt_s: float = 0.0
    sync_period: int = 10_000
    eve: str = "none"
    eve_fraction: float = 0.0
    eve_resend_photons: int = 1
    eve_resend_mu: float = 0.0
    eve_bypass_fibre: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ParameterError(f"protocol = {self.protocol!r} is not one of "
                                 f"{', '.join(PROTOCOLS)}")
        _check_range("mu", self.mu, 0.0, 100.0, lo_open=True, unit="photons/pulse")
        _check_range("nu1", self.nu1, 0.0, self.mu, unit="photons/pulse")
        _check_range("nu2", self.nu2, 0.0, self.nu1, unit="photons/pulse")
        _check_range("p_signal", self.p_signal, 0.0, 1.0, lo_open=True)
        _check_range("p_decoy1", self.p_decoy1, 0.0, 1.0 - self.p_signal + 1e-12)
        _check_range("p_basis_x", self.p_basis_x, 0.0, 1.0)
        _check_range("distance_km", self.distance_km, 0.0, 1000.0, unit="km")
        _check_range("loss_db_per_km", self.loss_db_per_km, 0.0, 10.0, unit="dB/km")
        _check_range("detector_efficiency", self.detector_efficiency, 0.0, 1.0, lo_open=True)
        _check_range("dark_count_probability", self.dark_count_probability, 0.0, 0.5)
        _check_range("misalignment", self.misalignment, 0.0, 0.5)
        _check_range("dead_time_ns", self.dead_time_ns, 0.0, 1e6, unit="ns")
        _check_range("afterpulse_probability", self.afterpulse_probability, 0.0, 0.9)
        _check_range("afterpulse_time_constant_ns", self.afterpulse_time_constant_ns, 0.0, 1e6,
                     lo_open=True, unit="ns")
        _check_range("jitter_ps", self.jitter_ps, 0.0, 1e6, unit="ps")
        _check_range("clock_hz", self.clock_hz, 1e3, 1e11, unit="Hz")
        _check_range("clock_offset_ps", self.clock_offset_ps, -1e15, 1e15, unit="ps")
        _check_range("clock_drift_ppm", self.clock_drift_ppm, -MAX_CLOCK_DRIFT_PPM,
                     MAX_CLOCK_DRIFT_PPM, unit="ppm")
        _check_range("efficiency_mismatch", self.efficiency_mismatch, 0.0, 1.0, hi_open=True)
        _check_range("polarization_drift_rad_per_sqrt_s", self.polarization_drift_rad_per_sqrt_s,
                     0.0, 100.0, unit="rad/sqrt(s)")
        if isinstance(self.sync_period, bool) or not isinstance(self.sync_period, int):
            raise ParameterError(f"sync_period = {self.sync_period!r} is not an integer")
        _check_range("sync_period", self.sync_period, 2, 2**40, unit="slots")
        if self.eve not in EVE_MODELS:
            raise ParameterError(f"eve = {self.eve!r} is not one of {', '.join(EVE_MODELS)}")
        if self.protocol == "lt3" and self.eve not in LT3_EVE_MODELS:
            raise ParameterError(f"eve = {self.eve!r} does not attack LT3; use one of "
                                 f"{', '.join(LT3_EVE_MODELS)}")
        if self.eve in B92_ONLY_EVE_MODELS and self.protocol == "bb84":
            raise ParameterError(f"eve = {self.eve!r} attacks B92 states only; protocol is "
                                 f"{self.protocol!r} (use intercept-resend or blinding)")
        _check_range("eve_fraction", self.eve_fraction, 0.0, 1.0)
        if (isinstance(self.eve_resend_photons, bool)
                or not isinstance(self.eve_resend_photons, int)):
            raise ParameterError(f"eve_resend_photons = {self.eve_resend_photons!r} is not an "
                                 f"integer")
        _check_range("eve_resend_photons", self.eve_resend_photons, 1, MAX_EVE_RESEND_PHOTONS,
                     unit="photons")
        _check_range("eve_resend_mu", self.eve_resend_mu, 0.0, MAX_EVE_RESEND_MU,
                     unit="photons/pulse")
        if not isinstance(self.eve_bypass_fibre, bool):
            raise ParameterError(f"eve_bypass_fibre = {self.eve_bypass_fibre!r} is not a bool")
        if self.eve_resend_photons != 1 and self.eve_resend_mu > 0.0:
            raise ParameterError(f"eve_resend_photons = {self.eve_resend_photons} and "
                                 f"eve_resend_mu = {self.eve_resend_mu!r}: give one (a Fock "
                                 f"state or a coherent pulse), not both")
        custom = (self.eve_resend_photons != 1 or self.eve_resend_mu > 0.0
                  or self.eve_bypass_fibre)
        if custom and self.eve != "usd-multiphoton":
            raise ParameterError(f"eve_resend_photons, eve_resend_mu and eve_bypass_fibre apply "
                                 f"to eve = 'usd-multiphoton' only; eve is {self.eve!r}")

    @property
    def p_decoy2(self) -> float:
        return max(0.0, 1.0 - self.p_signal - self.p_decoy1)

    @property
    def intensities(self) -> tuple[float, float, float]:
        """Mean photon numbers by pattern intensity index (0 signal, 1 decoy nu1, 2 decoy nu2)."""
        return (self.mu, self.nu1, self.nu2)

    @property
    def intensity_probabilities(self) -> tuple[float, float, float]:
        return (self.p_signal, self.p_decoy1, self.p_decoy2)

    @property
    def channel_transmittance(self) -> float:
        """Fibre transmittance 10^(-alpha L / 10), without Bob's detectors."""
        return 10.0 ** (-self.loss_db_per_km * self.distance_km / 10.0)

    @property
    def transmittance(self) -> float:
        """eta = eta_Bob x fibre transmittance (docs/physics.md section 1)."""
        return self.detector_efficiency * self.channel_transmittance

    @property
    def slot_ps(self) -> float:
        return 1e12 / self.clock_hz

    @property
    def eve_active(self) -> bool:
        return self.eve != "none" and self.eve_fraction > 0.0

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "LinkParams":
        """A named parameter set with some fields replaced (``preset("gys", distance_km=80)``).

        For B92 the presets' decoy intensities are switched off (p_signal = 1) unless given.
        """
        if name not in PRESETS:
            raise ParameterError(f"preset = {name!r} is not one of {', '.join(PRESETS)}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ParameterError(f"unknown link parameter(s) {', '.join(unknown)}")
        values = dict(PRESETS[name])
        if overrides.get("protocol") == "b92":
            # B92 has no decoy analysis: every pulse carries the signal intensity unless the
            # caller asks otherwise.
            values.update(p_signal=1.0, p_decoy1=0.0)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "LinkParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["p_decoy2"] = self.p_decoy2
        d["transmittance"] = self.transmittance
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # GYS 2004 as tabulated in Ma et al. 2005: alpha, e_det, Y0, eta_Bob.
    "gys": dict(loss_db_per_km=0.21, misalignment=0.033, dark_count_probability=1.7e-6,
                detector_efficiency=0.045, mu=0.5, nu1=0.1, nu2=0.0, p_signal=0.8,
                p_decoy1=0.1, clock_hz=1e9, dead_time_ns=10.0, jitter_ps=50.0,
                afterpulse_probability=0.0, distance_km=50.0),
    # A short metro link with superconducting-class detectors (60 % system efficiency, low
    # dark counts, negligible dead time): LT3's Azuma-bound blocks (~3e8 pulses) finish in
    # seconds here (tests/postprocessing/test_distill_lt3.py runs the same link in process).
    "snspd": dict(loss_db_per_km=0.21, misalignment=0.01, dark_count_probability=1e-7,
                  detector_efficiency=0.6, mu=0.3, nu1=0.1, nu2=0.0, p_signal=0.6,
                  p_decoy1=0.2, p_basis_x=0.3, clock_hz=1e9, dead_time_ns=0.0, jitter_ps=10.0,
                  afterpulse_probability=0.0, distance_km=2.0),
}

"""General Photonics / Luna polarization synthesizer (PSY-201 style) over SCPI.

Dialect (docs/physics.md §8): ``:CONT:SOP s1,s2,s3`` and ``:CONT:ANGL theta,phi`` lock the output
state of polarization to a target on the Poincare sphere; ``:MEAS:SOP?`` reads the built-in
polarimeter; ``*IDN?`` and ``SYST:ERR?`` as in IEEE 488.2/SCPI. It runs over RS-232, a TCP
socket or VISA (``TCPIP::host::port::SOCKET``). Bob's drift-compensation loop reads
``measure_sop`` and re-issues the target when the measured state wanders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from drivers.polarization.stokes import StokesVector
from drivers.registry import register
from drivers.scpi import ScpiInstrument, ScpiProperty, format_floats, parse_floats

_parse3 = parse_floats(3)


def _parse_stokes(reply: str) -> StokesVector:
    return StokesVector(*_parse3(reply))


def _stokes_components(value) -> tuple[float, float, float]:
    if isinstance(value, StokesVector):
        return value.as_tuple()
    components = tuple(float(v) for v in value)
    if len(components) != 3:
        raise ValueError(f"a Stokes vector has 3 components, got {len(components)}")
    return components  # type: ignore[return-value]


@dataclass(frozen=True)
class PolarizationStatus:
    """What a drift-compensation loop needs in one read."""

    target: StokesVector
    measured: StokesVector
    error_deg: float           # angle between target and measured state on the sphere


@register("gp-polarization")
class GpPolarizationController(ScpiInstrument):
    TRANSPORT_DEFAULTS: ClassVar[dict] = {"baudrate": 9600}
    WRITE_TERMINATION = b"\r\n"
    READ_TERMINATION = b"\n"

    MIN_THETA_DEG: ClassVar[float] = 0.0
    MAX_THETA_DEG: ClassVar[float] = 360.0
    MIN_PHI_DEG: ClassVar[float] = -90.0
    MAX_PHI_DEG: ClassVar[float] = 90.0
    # A target must be a (nearly) unit Stokes vector; the instrument normalises it.
    SOP_NORM_TOLERANCE: ClassVar[float] = 0.05

    @classmethod
    def _check_sop(cls, value) -> None:
        components = _stokes_components(value)
        if not all(math.isfinite(c) and -1.0 <= c <= 1.0 for c in components):
            raise ValueError("each component must lie in [-1, 1]")
        norm = math.sqrt(sum(c * c for c in components))
        if abs(norm - 1.0) > cls.SOP_NORM_TOLERANCE:
            raise ValueError(f"|s| = {norm:.3f}, must be 1 +- {cls.SOP_NORM_TOLERANCE}")

    @classmethod
    def _check_angles(cls, value) -> None:
        theta, phi = (float(v) for v in value)
        if not cls.MIN_THETA_DEG <= theta < cls.MAX_THETA_DEG:
            raise ValueError(f"theta {theta} deg outside [{cls.MIN_THETA_DEG}, "
                             f"{cls.MAX_THETA_DEG}) deg")
        if not cls.MIN_PHI_DEG <= phi <= cls.MAX_PHI_DEG:
            raise ValueError(f"phi {phi} deg outside [{cls.MIN_PHI_DEG}, {cls.MAX_PHI_DEG}] deg")

    target_sop = ScpiProperty(
        ":CONT:SOP?", ":CONT:SOP {}", parse=_parse_stokes,
        format=lambda v: format_floats(4)(_stokes_components(v)),
        validate=lambda v: GpPolarizationController._check_sop(v),
        memory_key="target", doc="Target output SOP (unit Stokes vector).")
    target_angles_deg = ScpiProperty(
        ":CONT:ANGL?", ":CONT:ANGL {}", parse=parse_floats(2), format=format_floats(2),
        validate=lambda v: GpPolarizationController._check_angles(v), units="deg",
        memory_key="target", doc="Target output SOP as (theta, phi) on the Poincare sphere.")
    measured_sop = ScpiProperty(":MEAS:SOP?", parse=_parse_stokes,
                                doc="SOP measured by the internal polarimeter.")

    def set_sop(self, sop: StokesVector | tuple[float, float, float]) -> None:
        """Lock the output to ``sop``; the error queue is checked so a refusal is not silent."""
        with self._io_lock:
            self.target_sop = sop
            self.check_errors(":CONT:SOP")

    def set_angles(self, theta_deg: float, phi_deg: float) -> None:
        with self._io_lock:
            self.target_angles_deg = (theta_deg, phi_deg)
            self.check_errors(":CONT:ANGL")

    def measure_sop(self) -> StokesVector:
        return self.measured_sop

    def status(self) -> PolarizationStatus:
        with self._io_lock:
            target, measured = self.target_sop, self.measured_sop
        return PolarizationStatus(target, measured, target.angle_to_deg(measured))

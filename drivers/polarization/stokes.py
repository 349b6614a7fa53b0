"""Stokes vectors as polarization drivers report them, with the Poincare-sphere angles.

Convention (shared with the simulator): H = +S1, V = -S1, D = +S2, A = -S2, R = +S3; the angles
are longitude ``theta_deg`` = atan2(S2, S1) in [0, 360) and latitude ``phi_deg`` = asin(S3) in
[-90, 90], so ``s = (cos phi cos theta, cos phi sin theta, sin phi)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StokesVector:
    """Normalised Stokes vector (s1, s2, s3), dimensionless; |s| = 1 for fully polarized light."""

    s1: float
    s2: float
    s3: float

    @classmethod
    def from_angles(cls, theta_deg: float, phi_deg: float) -> StokesVector:
        th, ph = math.radians(theta_deg), math.radians(phi_deg)
        return cls(math.cos(ph) * math.cos(th), math.cos(ph) * math.sin(th), math.sin(ph))

    @property
    def norm(self) -> float:
        return math.sqrt(self.s1 ** 2 + self.s2 ** 2 + self.s3 ** 2)

    def normalised(self) -> StokesVector:
        n = self.norm
        if n == 0:
            raise ValueError("the zero vector has no polarization state")
        return StokesVector(self.s1 / n, self.s2 / n, self.s3 / n)

    def angles_deg(self) -> tuple[float, float]:
        """(theta_deg, phi_deg) of the normalised vector."""
        s = self.normalised()
        theta = math.degrees(math.atan2(s.s2, s.s1)) % 360.0
        return theta, math.degrees(math.asin(max(-1.0, min(1.0, s.s3))))

    def angle_to_deg(self, other: StokesVector) -> float:
        """Angle between two states on the Poincare sphere (twice the angle between fields)."""
        a, b = self.normalised(), other.normalised()
        dot = a.s1 * b.s1 + a.s2 * b.s2 + a.s3 * b.s3
        return math.degrees(math.acos(max(-1.0, min(1.0, dot))))

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.s1, self.s2, self.s3)


H = StokesVector(1.0, 0.0, 0.0)
D = StokesVector(0.0, 1.0, 0.0)

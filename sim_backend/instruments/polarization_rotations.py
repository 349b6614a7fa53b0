"""Poincare-sphere rotations the simulated polarization controllers apply (3x3, float64).

Same convention as ``sim_backend.controls``: H = +S1, D = +S2, R = +S3; a waveplate of
retardance delta with its fast axis at Stokes direction ``a`` rotates the sphere by delta about
``a``.
"""

from __future__ import annotations

import numpy as np

H = np.array([1.0, 0.0, 0.0])


def rotation_about(axis, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by ``angle_rad`` about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1.0 - np.cos(angle_rad)) * (k @ k)


def rotation_taking(src, dst) -> np.ndarray:
    """The smallest rotation that maps direction ``src`` onto direction ``dst``."""
    u = np.asarray(src, dtype=float) / np.linalg.norm(src)
    v = np.asarray(dst, dtype=float) / np.linalg.norm(dst)
    axis = np.cross(u, v)
    s, c = np.linalg.norm(axis), float(np.dot(u, v))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # antiparallel: half turn about any axis perpendicular to u
        helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        return rotation_about(np.cross(u, helper), np.pi)
    return rotation_about(axis, np.arctan2(s, c))


def stokes_from_angles(theta_deg: float, phi_deg: float) -> np.ndarray:
    """(longitude, latitude) in degrees -> unit Stokes vector."""
    th, ph = np.radians(theta_deg), np.radians(phi_deg)
    return np.array([np.cos(ph) * np.cos(th), np.cos(ph) * np.sin(th), np.sin(ph)])


def angles_from_stokes(s) -> tuple[float, float]:
    s = np.asarray(s, dtype=float) / np.linalg.norm(s)
    return float(np.degrees(np.arctan2(s[1], s[0])) % 360.0), \
        float(np.degrees(np.arcsin(np.clip(s[2], -1.0, 1.0))))


def squeezer_rotation(retardances_rad, axes) -> np.ndarray:
    """Rotation of a chain of fibre squeezers: the first in the list acts first."""
    total = np.eye(3)
    for delta, axis in zip(retardances_rad, axes):
        total = rotation_about(axis, delta) @ total
    return total

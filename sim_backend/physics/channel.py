"""The fibre: loss, and the slow random walk of its polarization rotation.

The rotation acts on Stokes vectors (3x3, SO(3)). Its drift is a Brownian motion on SO(3): over
a time dt the fibre picks up a rotation by the vector omega ~ N(0, sigma^2 dt I3), sigma in
rad/sqrt(s). For a fixed Stokes vector s this gives E[s . R(t) s] = exp(-sigma^2 t), which is
what ``theory.drifted_alignment`` states and the tests check.
"""

from __future__ import annotations

import numpy as np


def fibre_transmittance(distance_km: float, loss_db_per_km: float) -> float:
    return 10.0 ** (-loss_db_per_km * distance_km / 10.0)


def rotation_from_vector(omega: np.ndarray) -> np.ndarray:
    """Rotation by |omega| radians about omega (Rodrigues), identity for omega = 0."""
    omega = np.asarray(omega, dtype=float)
    angle = float(np.linalg.norm(omega))
    if angle == 0.0:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def rotation_about(axis: str | np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation by ``angle_rad`` on the sphere about a Stokes axis ("s1", "s2", "s3", vector)."""
    if isinstance(axis, str):
        axis = {"s1": np.array([1.0, 0, 0]), "s2": np.array([0, 1.0, 0]),
                "s3": np.array([0, 0, 1.0])}[axis]
    axis = np.asarray(axis, dtype=float)
    return rotation_from_vector(axis / np.linalg.norm(axis) * angle_rad)


def drift_step(rng: np.random.Generator, sigma_rad_per_sqrt_s: float, dt_s: float) -> np.ndarray:
    """Random rotation the fibre accumulates in ``dt_s`` seconds.

    Composed of sub-steps with sigma^2 dt <= 0.01 each, so that a long chunk still follows the
    Brownian law (one big Gaussian step would not).
    """
    var = sigma_rad_per_sqrt_s ** 2 * dt_s
    if var <= 0.0:
        return np.eye(3)
    n_sub = int(min(np.ceil(var / 0.01), 10_000))
    out = np.eye(3)
    for omega in rng.normal(0.0, np.sqrt(var / n_sub), (n_sub, 3)):
        out = rotation_from_vector(omega) @ out
    return reorthonormalize(out)


def reorthonormalize(r: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (polar decomposition): keeps a long random walk inside SO(3)."""
    u, _, vt = np.linalg.svd(r)
    out = u @ vt
    if np.linalg.det(out) < 0:
        u[:, -1] = -u[:, -1]
        out = u @ vt
    return out

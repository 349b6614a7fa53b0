"""Alice's weak-coherent source: the prepared polarization and mean photon number per pattern byte.

Tables are indexed by the full pattern byte (16 entries: value, basis and intensity bits, see
``firmware_protocol.wire_facts``) so that a kernel can look a slot's state up with one load.
Stokes convention of ``sim_backend.controls``: H = +S1, V = -S1, D = +S2, A = -S2.
"""

from __future__ import annotations

import numpy as np

from firmware_protocol.wire_facts import (N_PATTERN_BYTES, PATTERN_BASIS_BIT,
                                          PATTERN_BASIS_SHIFT, PATTERN_INTENSITY_SHIFT,
                                          PATTERN_VALUE_BIT)

STOKES_H = np.array([1.0, 0.0, 0.0])
STOKES_V = np.array([-1.0, 0.0, 0.0])
STOKES_D = np.array([0.0, 1.0, 0.0])
STOKES_A = np.array([0.0, -1.0, 0.0])
BB84_STATES = np.array([STOKES_H, STOKES_V, STOKES_D, STOKES_A])
"""Stokes vectors in Bob's detector order (channel 0 = H, 1 = V, 2 = D, 3 = A)."""


def prepared_stokes(protocol: str) -> np.ndarray:
    """(16, 3) float64: Stokes vector Alice prepares for each pattern byte.

    BB84: basis Z sends H (0) / V (1), basis X sends D (0) / A (1). B92 ignores the basis bit
    and sends H for bit 0, D for bit 1 (docs/physics.md section 2). LT3 (loss-tolerant
    three-state): basis Z sends H / V, basis X sends D whatever the value bit.
    """
    out = np.empty((N_PATTERN_BYTES, 3))
    for b in range(N_PATTERN_BYTES):
        value = b & PATTERN_VALUE_BIT
        basis = (b & PATTERN_BASIS_BIT) >> PATTERN_BASIS_SHIFT
        if protocol == "b92":
            out[b] = STOKES_D if value else STOKES_H
        elif protocol == "lt3" and basis == 1:
            out[b] = STOKES_D
        else:
            out[b] = BB84_STATES[2 * basis + value]
    return out


def mean_photon_numbers(intensities: tuple[float, float, float]) -> np.ndarray:
    """(16,) float64: mean photon number each pattern byte sends (intensity index 3: 0)."""
    table = np.zeros(N_PATTERN_BYTES)
    for b in range(N_PATTERN_BYTES):
        idx = b >> PATTERN_INTENSITY_SHIFT
        table[b] = intensities[idx] if idx < 3 else 0.0
    return table


def nonempty_probability(mean_photons: np.ndarray) -> np.ndarray:
    """P(n >= 1) of a Poisson photon number: what an eavesdropper at Alice's output can catch."""
    return -np.expm1(-np.asarray(mean_photons, dtype=float))

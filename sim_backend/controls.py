"""The knobs and gauges that simulated instruments share with the simulated link.

Simulated devices (polarization controller, optical switch, detector, board) run in server
threads and write their settings here; the link physics reads a consistent snapshot at the start
of every simulated chunk and writes telemetry back. This is the only coupling between the device
simulators and the physics, so a driver's command shows up in the physics (a wrong polarization
setting raises the QBER; a switch on another port stops the clicks) without either side knowing
the other.

Conventions
- Polarization is handled on the Poincare sphere as 3x3 rotation matrices acting on Stokes
  vectors (H = +S1, V = -S1, D = +S2, A = -S2). The fibre applies ``fibre_rotation`` (which the
  link lets drift as a random walk); Bob's polarization controller applies
  ``controller_rotation`` after it. Perfect compensation is ``controller_rotation @
  fibre_rotation == I``.
- ``reference_sop`` is the state Alice launches her classical reference light in, which is what
  Bob's polarimeter sees after the fibre and the controller: H by default. A loop that locks
  two references in turn asks for D as well (Alice's reference frame); the simulated link
  switches at once.
- The optical switch at Bob routes the link to ``switch_port``; only ``link_port`` carries the
  quantum channel. Ports are 1-based as on the instruments.
- Detector settings are per detector channel (0 = H, 1 = V, 2 = D, 3 = A).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from firmware_protocol.wire_facts import N_DETECTORS


def _eye() -> np.ndarray:
    return np.eye(3)


@dataclass
class DetectorSettings:
    enabled: bool = True
    efficiency_pct: float = 10.0      # set efficiency of the detector (scales the link's η_Bob)
    dead_time_ns: float = 100.0
    bias_v: float = 50.0              # nominal avalanche bias; blinding pulls it down
    threshold_mv: float = 50.0


@dataclass
class DetectorTelemetry:
    counts: int = 0                   # clicks since start (monotonic)
    photocurrent_ua: float = 0.01     # a blinded detector shows a large photocurrent
    bias_v: float = 50.0              # measured bias (drops under bright illumination)
    temperature_c: float = -50.0


@dataclass
class LinkControls:
    """Shared, lock-protected state between simulated devices and the link physics."""

    fibre_rotation: np.ndarray = field(default_factory=_eye)
    controller_rotation: np.ndarray = field(default_factory=_eye)
    reference_sop: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    switch_port: int = 1
    link_port: int = 1
    detectors: list[DetectorSettings] = field(
        default_factory=lambda: [DetectorSettings() for _ in range(N_DETECTORS)])
    telemetry: list[DetectorTelemetry] = field(
        default_factory=lambda: [DetectorTelemetry() for _ in range(N_DETECTORS)])
    acquiring: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def net_rotation(self) -> np.ndarray:
        """Rotation from Alice's prepared Stokes vector to what Bob's analysers see."""
        with self.lock:
            return self.controller_rotation @ self.fibre_rotation

    def channel_open(self) -> bool:
        with self.lock:
            return self.switch_port == self.link_port

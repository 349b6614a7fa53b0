"""Long simulated runs in windows: sample each window's clicks, drift the fibre for the rest.

A control loop acts once per window of link time (seconds); simulating every pulse of an hour
at 1 GHz is out of reach, so each window simulates a sample of ``sample_slots`` pulses (its QBER
and gains are those of the whole window, with the statistical spread of the sample: a real node
sees more bits, so a loop that copes here copes there) and then lets the fibre drift over the
window's remaining time with the same Brownian law the link uses (``physics.channel``).
For tests and benchmarks of the daemon's control loops; the daemon itself never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_backend.link import LinkSimulator, bob_outcomes
from firmware_protocol.wire_facts import PATTERN_INTENSITY_SHIFT
from sim_backend.physics import channel


@dataclass(frozen=True)
class WindowCounts:
    """Sifted bits and errors per basis (z = H/V, x = D/A) and the signal-intensity figures."""

    pulses: int
    detections: int
    multi_clicks: int
    sifted_z: int
    errors_z: int
    sifted_x: int
    errors_x: int
    signal_pulses: float      # expected n * p_signal
    signal_detections: int
    signal_sifted: int
    signal_errors: int

    @property
    def sifted(self) -> int:
        return self.sifted_z + self.sifted_x

    @property
    def errors(self) -> int:
        return self.errors_z + self.errors_x

    @property
    def qber(self) -> float:
        return self.errors / self.sifted if self.sifted else float("nan")


def sample_window(sim: LinkSimulator, sample_slots: int, rng: np.random.Generator
                  ) -> WindowCounts:
    """Simulate ``sample_slots`` pulses and sift them per basis as the node would (BB84)."""
    chunk = sim.run_slots(sample_slots)
    slots, det, n_clicked = bob_outcomes(chunk.true_slots, chunk.channels, rng)
    pat = sim.alice_pattern(slots)
    analyser, port = det >> 1, det & 1
    basis = (pat >> 1) & 1
    sifted = analyser == basis
    error = sifted & (port != (pat & 1))
    signal = (pat >> PATTERN_INTENSITY_SHIFT) == 0
    z, x = sifted & (basis == 0), sifted & (basis == 1)
    return WindowCounts(
        pulses=sample_slots, detections=int(slots.size),
        multi_clicks=int(np.count_nonzero(n_clicked >= 2)),
        sifted_z=int(z.sum()), errors_z=int((error & z).sum()),
        sifted_x=int(x.sum()), errors_x=int((error & x).sum()),
        signal_pulses=sample_slots * sim.params.p_signal,
        signal_detections=int(signal.sum()), signal_sifted=int((sifted & signal).sum()),
        signal_errors=int((error & signal).sum()))


def drift_fibre(sim: LinkSimulator, dt_s: float, rng: np.random.Generator) -> None:
    """Let the fibre's polarization drift for ``dt_s`` more seconds (the link's own law)."""
    sigma = sim.params.polarization_drift_rad_per_sqrt_s
    if sigma <= 0 or dt_s <= 0:
        return
    step = channel.drift_step(rng, sigma, dt_s)
    c = sim.controls
    with c.lock:
        c.fibre_rotation = channel.reorthonormalize(step @ c.fibre_rotation)

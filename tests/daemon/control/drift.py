"""A long drifting link in windows with Bob's polarization loop in it (tests only).

The devices are the simulator's sans-I/O instrument models, spoken to in their own dialect
(``handle_line``), acting on the link's shared controls; the loop sees only what the daemon
would: the polarimeter's reply (GP) or each window's QBER (OZ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from daemon.control.common import QberWindow
from daemon.control.polarization import GpLoop, OzLoop, SopReading
from sim_backend.controls import LinkControls
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_oz import OzEpcSim
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.windows import drift_fibre, sample_window

OZ_START_MV = (0, 1000, 0, -1000)
"""Alternate squeezers at a quarter wave: the identity, with all three rotation axes in reach."""


@dataclass
class DriftRun:
    qber: np.ndarray
    qber_z: np.ndarray
    qber_x: np.ndarray
    sifted: np.ndarray
    windows: list = field(default_factory=list)
    alarms_seen: set = field(default_factory=set)


def run(params: LinkParams, dialect: str, loop_on: bool, n_windows: int, window_s: float,
        sample_slots: int, seed: int, loop=None) -> DriftRun:
    controls = LinkControls()
    sim = LinkSimulator(params, controls, seed=seed)
    drift_rng = np.random.default_rng([seed, 1])
    sift_rng = np.random.default_rng([seed, 2])
    if dialect == "oz":
        dev = OzEpcSim(controls)
        for ch, v in enumerate(OZ_START_MV, 1):
            dev.handle_line(f"V{ch},{v}")
        loop = loop or OzLoop()
        state = loop.initial_state(OZ_START_MV)
    else:
        dev = GpPolarizationSim(controls)
        loop = loop or GpLoop()
        state = loop.initial_state()
        refs = [np.array(r, float) for r in loop.config.references]
        controls.reference_sop = refs[state.reference]
    q, qz, qx, n = (np.zeros(n_windows) for _ in range(4))
    t = 0.0
    out = DriftRun(q, qz, qx, n)
    for k in range(n_windows):
        w = sample_window(sim, sample_slots, sift_rng)
        drift_fibre(sim, window_s - sample_slots / params.clock_hz, drift_rng)
        window = QberWindow(t, t + window_s, w.sifted, w.errors, w.sifted_z, w.errors_z,
                            w.sifted_x, w.errors_x)
        t += window_s
        q[k], qz[k], qx[k], n[k] = window.qber, window.qber_z, window.qber_x, window.sifted
        out.windows.append(w)
        if not loop_on:
            continue
        if dialect == "oz":
            state, action = loop.step(state, window)
            if action is not None:
                for ch, v in enumerate(action.voltages_mv, 1):
                    assert dev.handle_line(f"V{ch},{v}")[-1] == "Done"
        else:
            measured = tuple(float(x) for x in dev.handle_line(":MEAS:SOP?").split(","))
            state, action = loop.step(state, SopReading(t, measured, window))
            if action is not None and action.target is not None:
                dev.handle_line(":CONT:SOP {:.6f},{:.6f},{:.6f}".format(*action.target))
            if action is not None and action.next_reference is not None:
                controls.reference_sop = refs[action.next_reference]   # Alice's reference frame
        out.alarms_seen |= set(loop.status(state)["alarms"])
    return out

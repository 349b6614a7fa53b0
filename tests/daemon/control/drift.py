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
    status: dict = field(default_factory=dict)


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
            for waypoint in action.via if action is not None else ():
                dev.handle_line(":CONT:SOP {:.6f},{:.6f},{:.6f}".format(*waypoint))
            if action is not None and action.target is not None:
                dev.handle_line(":CONT:SOP {:.6f},{:.6f},{:.6f}".format(*action.target))
            if action is not None and action.next_reference is not None:
                controls.reference_sop = refs[action.next_reference]   # Alice's reference frame
        out.alarms_seen |= set(loop.status(state)["alarms"])
    return out


class LinkTime:
    """The link's clock, stepped by the run (the supervisor's and the windows' clock)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def block_stats(w) -> dict:
    """A finished block's stats as the engine hands them over (per basis [Z, X])."""
    return {"sample_bits": w.sifted, "qber_estimate": w.qber,
            "qber_by_basis": [w.errors_z / w.sifted_z, w.errors_x / w.sifted_x],
            "sample_by_basis": [w.sifted_z, w.sifted_x]}


def run_node_gp(params: LinkParams, loop_on: bool, n_windows: int, window_s: float,
                sample_slots: int, seed: int, settings=None, latency_blocks: int = 1
                ) -> DriftRun:
    """The GP loop as a node runs it: ``ControlSupervisor.for_node`` builds the link's loops
    from its devices (here the GP driver over TCP to the simulated synthesizer), Alice's
    reference light stays H, each window is a block whose stats reach ``block_finished``
    ``latency_blocks`` windows after it ends (post-processing runs while the next block is
    collected), and the supervisor ticks at the end of every window. Loop off: the same link
    with no supervisor."""
    import asyncio
    from types import SimpleNamespace

    from daemon.control.supervisor import ControlSettings, ControlSupervisor
    from drivers import registry
    from sim_backend.instruments.base import TcpServer

    controls = LinkControls()
    sim = LinkSimulator(params, controls, seed=seed)
    drift_rng = np.random.default_rng([seed, 1])
    sift_rng = np.random.default_rng([seed, 2])
    n = n_windows
    out = DriftRun(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
    clock = LinkTime()
    config = SimpleNamespace(links=(SimpleNamespace(id="alice-bob", role="bob"),))

    async def main():
        with TcpServer(GpPolarizationSim(controls)) as server:
            driver = registry.create("gp-polarization", server.url, timeout_s=2.0)
            try:
                sup = ControlSupervisor.for_node(
                    config, {"alice-bob": {"polarization": driver}},
                    settings=settings or ControlSettings(polarization_period_s=window_s),
                    clock=clock)
                link = sup.links["alice-bob"]
                done = []
                for k in range(n):
                    t0 = clock.t
                    w = sample_window(sim, sample_slots, sift_rng)
                    drift_fibre(sim, window_s - sample_slots / params.clock_hz, drift_rng)
                    clock.t = round(t0 + window_s, 9)
                    out.qber[k], out.sifted[k] = w.qber, w.sifted
                    out.qber_z[k] = w.errors_z / w.sifted_z
                    out.qber_x[k] = w.errors_x / w.sifted_x
                    out.windows.append(w)
                    done.append((t0, clock.t, w))
                    if loop_on:
                        if len(done) > latency_blocks:
                            b0, b1, bw = done.pop(0)
                            sup.block_finished("alice-bob", b0, b1, block_stats(bw))
                        await link.tick_once()
                        out.alarms_seen |= set(link.alarms())
                out.status = link.status()
            finally:
                driver.close()

    asyncio.run(main())
    return out

"""Polarization control loops over one simulated hour of link time with drift.

GYS parameters at 10 km, 1 GHz, decoy BB84; fibre drift sigma = 0.0167 rad/sqrt(s) (alignment
E[s.R s] = exp(-sigma^2 t) falls to 1/e within the hour: about 1 rad on the Poincare sphere per
hour, a buried fibre's pace). The hour is 1800 windows of 2 s; each window simulates a sample of
2e6 pulses (about 9 000 sifted bits, ``sim_backend.windows``) whose QBER the loop sees, and the
fibre drifts over the rest of the window. Figures (one JSON line each):

- key rate with the loop on / off as a fraction of the drift-free rate of the same run
  (baseline): the asymptotic decoy-state rate with infinitely many decoys (GLLP, reference
  figures: q = 1/2, f = 1.22), from each window's measured signal gain Q_mu and QBER E_mu, with
  the single-photon error e1 from the misalignment those imply; a window with a negative rate
  gives no key;
  The OZ loop steers on those sampled bits, a node on about 2 000 times more: its figure is
  noise-limited here (with 5e5-pulse samples it keeps 82 % instead of 91 %);
- dialects: ``oz`` (QBER dither), ``gp-node`` (what a node runs: the loop exactly as
  ``ControlSupervisor.for_node`` builds it for a GP synthesizer, one reference (Alice's H), the
  twist about H steered on the X-basis QBER of blocks whose stats arrive one window after they
  end), ``gp`` (two references, H and D, locked in turn; Alice's reference light switched in
  the simulator's controls, which a real node cannot do), ``gp1`` (one reference, twist
  steering off: what the steering buys);
- CPU the loops' steps cost per hour of link time, and the supervisor's cost per tick (adapter,
  lock, executor hop, status) at its default periods, with stub drivers (the device I/O itself
  is a few lines of serial text per tick and not included).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np

from bench.common import emit, progress
from daemon.control.common import QberWindow
from daemon.control.adapters import DetectorAdapter, GpAdapter
from daemon.control.polarization import H_REF, GpConfig, GpLoop, OzLoop, SopReading
from daemon.control.supervisor import ControlSettings, ControlSupervisor, LinkSupervisor
from drivers.detector.telemetry import Telemetry
from drivers.polarization.stokes import StokesVector
from sim_backend.controls import LinkControls
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_oz import OzEpcSim
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.physics.theory import binary_entropy
from sim_backend.windows import drift_fibre, sample_window

SIGMA = 0.0167
HOUR_S = 3600.0
WINDOW_S = 2.0
SAMPLE = 2_000_000
F_EC = 1.22
OZ_START_MV = (0, 1000, 0, -1000)


def window_key_rate(p: LinkParams, w) -> float:
    """GLLP asymptotic key per pulse from one window's signal gain and QBER (>= 0)."""
    q_mu = w.signal_detections / w.signal_pulses
    if w.signal_sifted == 0:
        return 0.0
    e_mu = w.signal_errors / w.signal_sifted
    eta, y0, mu = p.transmittance, p.dark_count_probability, p.mu
    e_eff = max(0.0, (e_mu * q_mu - y0 / 2) / -math.expm1(-eta * mu))
    y1 = y0 + eta
    e1 = min(0.5, (y0 / 2 + e_eff * eta) / y1)
    q1 = y1 * mu * math.exp(-mu)
    return max(0.0, 0.5 * (-q_mu * F_EC * binary_entropy(e_mu) + q1 * (1 - binary_entropy(e1))))


def run(dialect: str | None, sigma: float, seed: int) -> dict:
    p = LinkParams.preset("gys", distance_km=10.0, polarization_drift_rad_per_sqrt_s=sigma)
    controls = LinkControls()
    sim = LinkSimulator(p, controls, seed=seed)
    drift_rng, sift_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    if dialect == "oz":
        dev, loop = OzEpcSim(controls), OzLoop()
        for ch, v in enumerate(OZ_START_MV, 1):
            dev.handle_line(f"V{ch},{v}")
        state = loop.initial_state(OZ_START_MV)
    elif dialect in ("gp", "gp1"):
        dev = GpPolarizationSim(controls)
        loop = GpLoop(GpConfig(references=(H_REF,), steer_twist=False)) if dialect == "gp1" \
            else GpLoop()
        state = loop.initial_state()
        refs = [np.array(r, float) for r in loop.config.references]
        controls.reference_sop = refs[0]
    elif dialect == "gp-node":
        link_time = [0.0]
        sup = ControlSupervisor.for_node(
            _ONE_BOB_LINK, {"l": {"polarization": _SimGp(GpPolarizationSim(controls))}},
            settings=ControlSettings(polarization_period_s=WINDOW_S),
            clock=lambda: link_time[0])
        adapter, finished = sup.links["l"].polarization, []
    n = int(HOUR_S / WINDOW_S)
    rates, qbers, cpu, t = np.zeros(n), np.zeros(n), 0.0, 0.0
    errors_zx, sifted_zx = np.zeros(2), np.zeros(2)
    for k in range(n):
        w = sample_window(sim, SAMPLE, sift_rng)
        drift_fibre(sim, WINDOW_S - SAMPLE / p.clock_hz, drift_rng)
        rates[k], qbers[k] = window_key_rate(p, w), w.qber
        errors_zx += (w.errors_z, w.errors_x)
        sifted_zx += (w.sifted_z, w.sifted_x)
        window = QberWindow(t, t + WINDOW_S, w.sifted, w.errors, w.sifted_z, w.errors_z,
                            w.sifted_x, w.errors_x)
        t += WINDOW_S
        if dialect == "oz":
            c0 = time.process_time()
            state, action = loop.step(state, window)
            cpu += time.process_time() - c0
            if action is not None:
                for ch, v in enumerate(action.voltages_mv, 1):
                    dev.handle_line(f"V{ch},{v}")
        elif dialect == "gp-node":
            link_time[0] = t
            finished.append(window)
            block = finished.pop(0) if len(finished) > 1 else None   # one window's latency
            c0 = time.process_time()
            adapter.tick(t, block)                   # includes the simulated unit's replies
            cpu += time.process_time() - c0
        elif dialect in ("gp", "gp1"):
            measured = tuple(float(x) for x in dev.handle_line(":MEAS:SOP?").split(","))
            c0 = time.process_time()
            state, action = loop.step(state, SopReading(t, measured, window))
            cpu += time.process_time() - c0
            if action is not None and action.target is not None:
                dev.handle_line(":CONT:SOP {:.6f},{:.6f},{:.6f}".format(*action.target))
            if action is not None and action.next_reference is not None:
                controls.reference_sop = refs[action.next_reference]
    return {"key_per_pulse": float(rates.mean()), "qber_mean": float(qbers.mean()),
            "qber_z": float(errors_zx[0] / sifted_zx[0]),
            "qber_x": float(errors_zx[1] / sifted_zx[1]),
            "qber_p95": float(np.percentile(qbers, 95)), "loop_cpu_s": cpu, "steps": n}


class _StubDetector:
    clock = staticmethod(time.monotonic)

    def read_telemetry(self) -> Telemetry:
        return Telemetry(self.clock(), (0,) * 4, (1e4,) * 4, 50.0, (50.0,) * 4, (0.01,) * 4,
                         (-50.0,) * 4)


class _SimGp:
    """The simulated synthesizer spoken to in its own dialect, without a socket."""

    def __init__(self, dev: GpPolarizationSim):
        self.dev = dev

    def measure_sop(self) -> StokesVector:
        return StokesVector(*(float(x) for x in self.dev.handle_line(":MEAS:SOP?").split(",")))

    def set_sop(self, target) -> None:
        self.dev.handle_line(":CONT:SOP {:.6f},{:.6f},{:.6f}".format(*target))


_ONE_BOB_LINK = SimpleNamespace(links=(SimpleNamespace(id="l", role="bob"),))


class _StubGp:
    def measure_sop(self) -> StokesVector:
        return StokesVector(1.0, 0.0, 0.0)

    def set_sop(self, target) -> None:
        pass


def supervisor_overhead(ticks: int) -> dict:
    """CPU of one supervisor round (detector + GP tick through the control thread)."""
    import asyncio
    sup = LinkSupervisor("bench", detector=DetectorAdapter("d", _StubDetector()),
                         polarization=GpAdapter("p", _StubGp(), select_reference=lambda k: None))

    async def rounds():
        for _ in range(ticks):
            await sup.tick_once()
            sup.status()
    c0 = time.process_time()
    asyncio.run(rounds())
    cpu = time.process_time() - c0
    sup.close()
    s = ControlSettings()
    per_round = cpu / ticks
    # per hour at the default periods: a detector tick every 0.5 s, a GP tick every 1 s
    per_hour = per_round / 2 * (HOUR_S / s.detector_period_s + HOUR_S / s.polarization_period_s)
    return {"cpu_us_per_round": 1e6 * per_round, "cpu_s_per_link_hour": per_hour}


def main() -> None:
    seed = 2026
    progress("control: drift-free baseline hour")
    base = run(None, 0.0, seed)
    progress("control: drift, no loop")
    off = run(None, SIGMA, seed)
    emit("control", figure="baseline_drift_free", link_time_s=HOUR_S,
         key_per_pulse=base["key_per_pulse"], qber_mean=base["qber_mean"],
         qber_z=base["qber_z"], qber_x=base["qber_x"])
    emit("control", figure="drift_loop_off", sigma_rad_per_sqrt_s=SIGMA,
         key_fraction_of_drift_free=off["key_per_pulse"] / base["key_per_pulse"],
         key_lost_fraction=1 - off["key_per_pulse"] / base["key_per_pulse"],
         qber_mean=off["qber_mean"], qber_p95=off["qber_p95"], qber_z=off["qber_z"],
         qber_x=off["qber_x"])
    for dialect in ("oz", "gp-node", "gp", "gp1"):
        progress(f"control: drift, {dialect} loop on")
        on = run(dialect, SIGMA, seed)
        emit("control", figure=f"drift_loop_on_{dialect.replace('-', '_')}",
             sigma_rad_per_sqrt_s=SIGMA,
             key_fraction_of_drift_free=on["key_per_pulse"] / base["key_per_pulse"],
             key_lost_fraction=1 - on["key_per_pulse"] / base["key_per_pulse"],
             qber_mean=on["qber_mean"], qber_p95=on["qber_p95"], qber_z=on["qber_z"],
             qber_x=on["qber_x"],
             loop_cpu_s_per_link_hour=on["loop_cpu_s"],
             loop_cpu_us_per_step=1e6 * on["loop_cpu_s"] / on["steps"],
             loop_cpu_fraction_of_core=on["loop_cpu_s"] / HOUR_S)
    progress("control: supervisor overhead")
    ov = supervisor_overhead(2000)
    emit("control", figure="supervisor_overhead", ticks=2000,
         cpu_us_per_round=ov["cpu_us_per_round"],
         cpu_s_per_link_hour=ov["cpu_s_per_link_hour"],
         cpu_fraction_of_core=ov["cpu_s_per_link_hour"] / HOUR_S)


if __name__ == "__main__":
    main()

"""The supervisor runs the loops against the simulated devices and answers the engine.

Blinding: the simulator's ``blinding`` attack through the real ID120 driver over TCP, link time
stepped by the test (``tick_once``), so every time below is exact. Stated time to alarm: one
detector period: the simulator writes the blinded photocurrent (40 uA against the 1 uA ceiling)
into the telemetry of every chunk it simulates, so the first reading after the attack begins
shows it. Then the engine with the supervisor's veto: no key from a blinded window, key output
resumes when the attack stops.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from daemon.control.adapters import DetectorAdapter, SwitchAdapter
from daemon.control.supervisor import (VETO_ALARM, VETO_UNVERIFIED, ControlSettings,
                                       ControlSupervisor, LinkSupervisor, _rate_from,
                                       qber_window)
from daemon.control.switch import SwitchConfig, SwitchLoop
from daemon.engine.figures import LinkFigures
from daemon.runtime.status import render
from drivers import registry
from drivers.detector.telemetry import Telemetry
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import TcpServer
from sim_backend.instruments.spd import serve_spd
from sim_backend.instruments.switch_dicon import DiconMemsSim
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams

PERIOD = 0.1                     # detector period = link-time step of the simulated runs
ATTACK = (2.0, 4.0)


class LinkTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_blinding_trips_the_alarm_within_one_period_vetoes_the_window_and_resumes(caplog):
    controls = LinkControls()
    clean = LinkParams.preset("gys", distance_km=10.0)
    attacked = clean.replace(eve="blinding", eve_fraction=1.0)
    sim = LinkSimulator(clean, controls, seed=7)
    clock = LinkTime()
    settings = ControlSettings(detector_period_s=PERIOD, veto_wait_s=0.0)

    async def main():
        with serve_spd(controls) as server:
            driver = registry.create("id120", server.url, timeout_s=2.0)
            try:
                sup = ControlSupervisor.for_node(
                    _config("bob"), {"alice-bob": {"detector": driver}}, settings=settings,
                    clock=clock)
                link = sup.links["alice-bob"]
                assert driver.clock is clock          # readings stamped in the engine's clock
                first_alarm = None
                statuses = []
                for _ in range(60):
                    sim.params = attacked if ATTACK[0] <= clock.t < ATTACK[1] else clean
                    sim.run_slots(100_000)
                    clock.t = round(clock.t + PERIOD, 9)
                    await link.tick_once()
                    st = link.status()["loops"]["alice-bob.detector"]
                    if st["state"] == "alarm" and first_alarm is None:
                        first_alarm = clock.t
                        figures = LinkFigures("alice-bob", "bob", "bb84-decoy").to_dict()
                        statuses.append(sup.annotate([figures])[0])
                verdicts = {w: await sup.key_veto("alice-bob", *w)
                            for w in [(0.5, 1.5), (1.5, 2.5), (2.5, 3.0), (3.5, 4.5),
                                      (4.5, 5.0), (5.0, 5.9)]}
                final = link.status()
                assert link.healthy()
            finally:
                driver.close()
        return first_alarm, statuses, verdicts, final

    with caplog.at_level(logging.INFO, logger="qkd.control"):
        first_alarm, statuses, verdicts, final = asyncio.run(main())
    assert ATTACK[0] < first_alarm <= ATTACK[0] + PERIOD + 1e-9
    alarms = statuses[0]["alarms"]
    assert any(k.startswith("control.alice-bob.detector.photocurrent_high") for k in alarms)
    assert statuses[0]["control"]["loops"]["alice-bob.detector"]["state"] == "alarm"
    table = render({"node": "bob", "pid": 1, "uptime_s": 3.0, "links": statuses})
    assert "alice-bob: ALARM control.alice-bob.detector.photocurrent_high:0: photocurrent_high" \
        in table                                      # what `qkd-node status` prints
    assert "alice-bob: loop alice-bob.detector (detector): alarm; last action: alarm raised" \
        in table                                      # and the loop's own line
    assert verdicts[(0.5, 1.5)] is None
    assert verdicts[(1.5, 2.5)] == verdicts[(2.5, 3.0)] == verdicts[(3.5, 4.5)] == VETO_ALARM
    assert verdicts[(4.5, 5.0)] is None and verdicts[(5.0, 5.9)] is None   # output resumes
    assert verdicts and final["loops"]["alice-bob.detector"]["state"] == "ok"
    logged = [r.getMessage() for r in caplog.records]
    assert any("ALARM detector alarm raised" in m for m in logged)
    assert any("alarm cleared: no key from" in m for m in logged)


def test_a_window_without_a_clean_reading_after_it_is_refused_after_the_wait():
    class Silent:                      # a detector that has not been read past the window
        pass

    async def main():
        det = DetectorAdapter("d", Silent(), clock=lambda: 0.0)
        sup = LinkSupervisor("l", detector=det, settings=ControlSettings(veto_wait_s=0.1))
        t0 = time.monotonic()
        verdict = await sup.key_veto(0.0, 1.0)
        return verdict, time.monotonic() - t0
    verdict, waited = asyncio.run(main())
    assert verdict == VETO_UNVERIFIED and waited >= 0.1


def test_qber_window_from_block_stats():
    w = qber_window(1.0, 2.0, {"sample_bits": 2000, "qber_estimate": 0.03,
                               "qber_by_basis": [0.02, 0.04],
                               "sample_by_basis": [1000, 1000]})
    assert (w.sifted, w.errors, w.errors_z, w.errors_x) == (2000, 60, 20, 40)
    # Decoy BB84 before error correction: the X (test) basis only.
    w = qber_window(1.0, 2.0, {"sample_bits": 1000, "qber_estimate": 0.04,
                               "qber_by_basis": [float("nan"), 0.04],
                               "sample_by_basis": [0, 1000]})
    assert (w.sifted_z, w.sifted_x, w.errors_x) == (None, 1000, 40) and w.qber_x == 0.04
    assert qber_window(1.0, 2.0, {"qber_estimate": 0.03}) is None
    assert qber_window(1.0, 2.0, None) is None


# -- the engine with the veto ------------------------------------------------------------------

class ScriptedDetector:
    """A detector unit whose photocurrent the test sets (blinded or not); real-time stamps."""

    def __init__(self):
        self.blinded = False
        self.clock = time.monotonic

    def read_telemetry(self) -> Telemetry:
        current = 40.0 if self.blinded else 0.01
        return Telemetry(timestamp_s=self.clock(), counts=(0,) * 4,
                         count_rate_hz=(1e4,) * 4, bias_setpoint_v=50.0, bias_v=(50.0,) * 4,
                         photocurrent_ua=(current,) * 4, temperature_c=(-50.0,) * 4)


def test_engine_stores_no_key_from_a_blinded_window_and_output_resumes(tmp_path, monkeypatch):
    from daemon.engine import link as link_mod
    from tests.daemon.test_engine import KEYS_PER_BLOCK, Pair
    monkeypatch.setattr(link_mod, "HELLO_REPEAT_S", 0.05)
    monkeypatch.setattr(link_mod, "STORE_POLL_S", 0.05)
    det = ScriptedDetector()
    settings = ControlSettings(detector_period_s=0.02, veto_wait_s=2.0)
    sup = LinkSupervisor("alice-bob", detector=DetectorAdapter("alice-bob.detector", det),
                         settings=settings)
    control = ControlSupervisor({"alice-bob": sup})
    seen = []                                  # (window, verdict) of every block Bob finished
    veto = control.key_veto

    async def spy(link_id, t0, t1):
        verdict = await veto(link_id, t0, t1)
        seen.append(((t0, t1), verdict))
        return verdict
    control.key_veto = spy
    signals = []                               # the engine's acquiring(link, on) calls
    acquiring = control.acquiring

    def acquiring_spy(link_id, on):
        signals.append((link_id, on, time.monotonic()))
        acquiring(link_id, on)
    control.acquiring = acquiring_spy

    async def main():
        pair = Pair(tmp_path)
        pair.bob.control = control
        pair.acquisition.keywords["interval_s"] = 0.05
        ctl = asyncio.create_task(control.run())
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok >= 3)
        on = time.monotonic()
        det.blinded = True
        await pair.until(lambda: pair.bob.figures.abort_reasons[VETO_ALARM] >= 3)
        det.blinded = False
        off = time.monotonic()
        ok_at_off = pair.bob.figures.blocks_ok
        await pair.until(lambda: pair.bob.figures.blocks_ok >= ok_at_off + 3)
        await pair.stop()
        ctl.cancel()
        await asyncio.gather(ctl, return_exceptions=True)
        return pair, on, off
    pair, on, off = asyncio.run(asyncio.wait_for(main(), 30))
    pair.close()
    # Every window that touches the attack was refused; key came only from approved windows.
    touching = [(w, v) for w, v in seen if w[0] <= off and w[1] >= on]
    assert touching and all(v == VETO_ALARM for _, v in touching)
    approved = [w for w, v in seen if v is None]
    assert all(w[1] < on or w[0] > off for w in approved)
    bob, alice = pair.bob.status(), pair.alice.status()
    assert bob["blocks_ok"] == len(approved)
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(b) == bob["blocks_ok"] * KEYS_PER_BLOCK and a == b      # Alice kept none either
    assert alice["abort_reasons"].get(f"peer: {VETO_ALARM}", 0) >= 3
    # Bob's engine says when it collects: on, off, on, off ... around every block it cut, and
    # every block window ends at an "off".
    ons = [on for _, on, _ in signals]
    assert ons[:2] == [True, False] and all(a != b for a, b in zip(ons, ons[1:]))
    assert {link for link, _, _ in signals} == {"alice-bob"}
    offs = [t for _, on, t in signals if not on]
    assert len(offs) >= len(seen)
    assert all(any(abs(t - w[1]) < 0.01 for t in offs) for w, _ in seen)   # same instant


# -- switch ------------------------------------------------------------------------------------

def test_switch_wrong_port_is_detected_by_no_light_and_corrected():
    """The link's fibre is on port 3. A power glitch drops the non-latching switch back to
    port 1: the detectors go dark (the simulator's channel is closed) and the switch reports
    port 1. The next tick reselects port 3 and, once the mirror has settled (a gate that began
    after the switching), the loop sees light again and clears its alarms."""
    controls = LinkControls()
    controls.link_port = controls.switch_port = 3
    sim = LinkSimulator(LinkParams.preset("gys", distance_km=10.0), controls, seed=3)
    switch_sim = DiconMemsSim(controls)
    clock = LinkTime()
    settings = ControlSettings(detector_period_s=PERIOD, switch_period_s=PERIOD,
                               switch_port=3)
    floor = SwitchConfig(port=3).light_floor_hz

    async def main():
        with serve_spd(controls) as spd, TcpServer(switch_sim) as sw_server:
            det = registry.create("id120", spd.url, timeout_s=2.0)
            sw = registry.create("dicon-mems", sw_server.url, timeout_s=2.0)
            try:
                sup = ControlSupervisor.for_node(
                    _config("bob"), {"alice-bob": {"detector": det, "switch": sw}},
                    settings=settings, clock=clock)
                link = sup.links["alice-bob"]
                sup.acquiring("alice-bob", True)            # the engine collects throughout
                trace = []
                for k in range(30):
                    if k == 10:
                        switch_sim.power_on()               # falls back to port 1
                    sim.run_slots(1_000_000)
                    clock.t = round(clock.t + PERIOD, 9)
                    await link.tick_once()
                    st = link.status()["loops"]["alice-bob.switch"]
                    rate = sum(link.detector.last_readings()[0].count_rate_hz)
                    trace.append((controls.switch_port, st["state"], dict(st["alarms"]),
                                  st["corrections"], rate))
            finally:
                det.close()
                sw.close()
        return trace
    trace = asyncio.run(main())
    assert all(s == "ok" and r > floor for _, s, _, _, r in trace[2:10])
    port, _, alarms, corrections, rate = trace[10]
    assert rate < floor                               # no light on the wrong port ...
    assert "wrong_port" in alarms and port == 3 and corrections == 1   # ... reselected at once
    assert trace[-1][1] == "ok" and trace[-1][2] == {} and trace[-1][4] > floor
    assert trace[-1][3] == 1                          # one correction in all


def test_switch_on_the_right_port_without_light_alarms_only_while_the_link_acquires():
    """Port 1 stays dark. While the engine collects no block (no peer, held, store full) no
    light is expected and none is judged; once it collects, the gates inside the run show the
    dark port, which is called dark once they have for ``dark_confirm_s``."""
    controls = LinkControls()
    controls.link_port = 3             # the fibre arrives on another port: port 1 stays dark
    sim = LinkSimulator(LinkParams.preset("gys", distance_km=10.0), controls, seed=4)
    clock = LinkTime()

    async def main():
        with serve_spd(controls) as spd, TcpServer(DiconMemsSim(controls)) as sw_server:
            det = registry.create("id120", spd.url, timeout_s=2.0)
            sw = registry.create("dicon-mems", sw_server.url, timeout_s=2.0)
            try:
                detector = DetectorAdapter("d", det, clock=clock)
                det.clock = clock
                switch = SwitchAdapter("s", sw, SwitchLoop(SwitchConfig(port=1, settle_s=0.05,
                                                               dark_confirm_s=0.25)),
                                       _rate_from(detector), clock=clock)
                link = LinkSupervisor("l", detector=detector, switch=switch, clock=clock)
                states = []
                for k in range(12):
                    if k == 6:
                        link.acquiring(True)
                    sim.run_slots(1_000_000)
                    clock.t = round(clock.t + PERIOD, 9)
                    await link.tick_once()
                    states.append(switch.status())
                return states
            finally:
                det.close()
                sw.close()
    states = asyncio.run(main())
    assert all(st["alarms"] == {} and st["state"] == "verifying" for st in states[:6])
    # Acquiring from t = 0.6: the gate 0.6..0.7 (readings at 0.6 and 0.7) lies inside the run
    # and is judged dark at the tick that ends it; so are the gates after it, and at t = 0.9
    # the port has been dark for 0.3 s >= 0.25 s: no_light.
    assert all(st["alarms"] == {} and st["dark_since_s"] == pytest.approx(0.6)
               for st in states[6:8])
    assert all(st["state"] == "no_light" and "no_light" in st["alarms"] for st in states[8:])


@pytest.mark.parametrize("confirm_s, false_alarm", [(0.0, True), (SwitchConfig(port=1)
                                                                   .dark_confirm_s, False)])
def test_a_stalled_stream_at_a_block_boundary_is_no_dark_port(confirm_s, false_alarm):
    """What every two-process run on the simulator did: the simulator's world advances only
    while Bob drains the event stream, so between two blocks (Bob aligning one, then waiting
    to read the next) the detectors count nothing, yet the pause is shorter than
    ``acquisition_gap_s`` and the gate over it is judged. Judged on that one gate, a healthy
    port was called dark; with the default ``dark_confirm_s`` it is not, and the switch ends
    ``ok`` with no alarm."""
    controls = LinkControls()
    sim = LinkSimulator(LinkParams.preset("gys", distance_km=10.0), controls, seed=5)
    clock = LinkTime()

    async def main():
        with serve_spd(controls) as spd, TcpServer(DiconMemsSim(controls)) as sw_server:
            det = registry.create("id120", spd.url, timeout_s=2.0)
            sw = registry.create("dicon-mems", sw_server.url, timeout_s=2.0)
            try:
                detector = DetectorAdapter("d", det, clock=clock)
                det.clock = clock
                switch = SwitchAdapter("s", sw, SwitchLoop(SwitchConfig(
                    port=1, settle_s=0.05, dark_confirm_s=confirm_s)), _rate_from(detector),
                    clock=clock)
                link = LinkSupervisor("l", detector=detector, switch=switch, clock=clock,
                                      settings=ControlSettings(acquisition_gap_s=1.0))
                alarmed = False
                for k in range(30):
                    if k == 0:
                        link.acquiring(True)
                    elif k == 10:
                        link.acquiring(False)       # block handed on; the stream stalls
                    elif k == 14:
                        link.acquiring(True)        # the next block, 0.4 s later
                    if not 10 <= k <= 14:           # the world stands still for 0.5 s
                        sim.run_slots(1_000_000)
                    clock.t = round(clock.t + PERIOD, 9)
                    await link.tick_once()
                    alarmed |= "no_light" in switch.status()["alarms"]
                return alarmed, switch.status()
            finally:
                det.close()
                sw.close()
    alarmed, final = asyncio.run(main())
    assert alarmed is false_alarm
    if not false_alarm:
        assert final["state"] == "ok" and final["alarms"] == {} and final["dark_since_s"] is None


def test_acquisition_runs_bridge_short_pauses_and_end_after_a_long_one():
    clock = LinkTime()
    sup = LinkSupervisor("l", settings=ControlSettings(acquisition_gap_s=1.0), clock=clock)
    assert not sup.acquiring_over(0.0)                   # never acquired: idle
    clock.t = 1.0
    sup.acquiring(True)
    clock.t = 1.5
    assert sup.acquiring_over(1.2) and not sup.acquiring_over(0.9)   # gate began before
    assert sup.acquiring_over(None)                      # unknown gate: collecting now
    clock.t = 2.0
    sup.acquiring(False)                                 # a block handed to post-processing
    clock.t = 2.3
    sup.acquiring(True)                                  # the next one: the same run
    clock.t = 2.8
    sup.acquiring(False)
    clock.t = 3.5
    assert sup.acquiring_over(1.2) and not sup.acquiring_over(None)
    clock.t = 3.9
    assert not sup.acquiring_over(1.2)                   # paused longer than the gap: idle
    sup.acquiring(True)                                  # a new run from 3.9
    clock.t = 4.2
    assert not sup.acquiring_over(3.5) and sup.acquiring_over(3.9)


def _config(role: str):
    from types import SimpleNamespace
    return SimpleNamespace(links=(SimpleNamespace(id="alice-bob", role=role),))


def test_alice_links_get_no_loops():
    sup = ControlSupervisor.for_node(_config("alice"), {"alice-bob": {}})
    assert sup.links == {} and sup.healthy()


def test_settings_refuse_a_zero_period():
    from daemon.control.common import ControlConfigError
    with pytest.raises(ControlConfigError, match="detector_period_s"):
        ControlSettings(detector_period_s=0.0)



def test_block_qber_reaches_the_oz_loop_which_dithers_the_epc():
    """The engine's ``block_finished`` feeds the OZ loop: its first window asks for +dither on
    squeezer 1, applied to the simulated EPC over TCP; a window begun before that took effect
    is not charged to the new setting."""
    from daemon.control.adapters import OzAdapter
    from sim_backend.instruments.polarization_oz import OzEpcSim
    controls = LinkControls()
    epc = OzEpcSim(controls)
    clock = LinkTime()

    async def main():
        with TcpServer(epc) as server:
            driver = registry.create("oz-epc", server.url, timeout_s=2.0)
            try:
                oz = OzAdapter("alice-bob.polarization", driver, clock=clock)
                sup = ControlSupervisor({"alice-bob": LinkSupervisor(
                    "alice-bob", polarization=oz, clock=clock,
                    settings=ControlSettings(probe_period_s=0.01))})
                ctl = asyncio.create_task(sup.run())
                await asyncio.sleep(0.05)                   # the probe has read the unit
                healthy = sup.healthy()
                clock.t = 1.0
                sup.block_finished("alice-bob", 0.0, 1.0,
                                    {"sample_bits": 5000, "qber_estimate": 0.04})
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    if oz.state.windows_used:
                        break
                after_first = tuple(epc.voltages_mv)
                sup.block_finished("alice-bob", 0.5, 1.5,     # began before the dither
                                   {"sample_bits": 5000, "qber_estimate": 0.2})
                await asyncio.sleep(0.1)
                used = oz.state.windows_used
                ctl.cancel()
                await asyncio.gather(ctl, return_exceptions=True)
                return healthy, after_first, used, oz.status()
            finally:
                driver.close()
    healthy, after_first, used, status = asyncio.run(main())
    assert healthy
    assert after_first == (50, 0, 0, 0)
    assert used == 1 and status["last_action"] == "set voltages 50,0,0,0 mV"

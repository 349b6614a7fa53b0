"""Switch loop: pure steps, then the simulated DiCon switch over its real byte path (TCP)."""

import numpy as np
import pytest

from daemon.control.adapters import SwitchAdapter
from daemon.control.common import ControlConfigError
from daemon.control.switch import SelectPort, SwitchConfig, SwitchLoop, SwitchReading
from drivers import registry
from sim_backend.controls import N_DETECTORS, LinkControls
from sim_backend.instruments.base import TcpServer
from sim_backend.instruments.switch_dicon import DiconMemsSim
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams

LOOP = SwitchLoop(SwitchConfig(port=3, light_floor_hz=1e4, settle_s=0.05, retry_s=1.0,
                               dark_confirm_s=0.0))
CONFIRMED = SwitchLoop(SwitchConfig(port=3, light_floor_hz=1e4, settle_s=0.05, retry_s=1.0,
                                    dark_confirm_s=2.0))


def test_wrong_port_is_corrected_then_light_verified():
    st, act = LOOP.step(LOOP.initial_state(), SwitchReading(0.0, 1, 0.0, None))
    assert act == SelectPort(3) and "wrong_port" in LOOP.status(st)["alarms"]
    st, act = LOOP.step(st, SwitchReading(0.02, 3, 5e6, 0.0))     # gate began before switching
    assert act is None and st.mode == "verifying"
    st, act = LOOP.step(st, SwitchReading(0.2, 3, 5e6, 0.06))
    assert act is None and st.mode == "ok" and LOOP.status(st)["alarms"] == {}
    assert st.corrections == 1


def test_dark_port_alarms_and_is_reselected_every_retry():
    st, _ = LOOP.step(LOOP.initial_state(), SwitchReading(0.0, 3, 100.0, None))
    assert st.mode == "no_light" and "no_light" in LOOP.status(st)["alarms"]
    st, act = LOOP.step(st, SwitchReading(0.5, 3, 100.0, 0.0))
    assert act is None
    st, act = LOOP.step(st, SwitchReading(1.0, 3, 100.0, 0.5))
    assert act == SelectPort(3)
    st, act = LOOP.step(st, SwitchReading(1.5, 3, 2e6, 1.1))
    assert st.mode == "ok" and LOOP.status(st)["alarms"] == {}


def test_one_dark_gate_at_a_block_boundary_raises_nothing():
    """Lit, then one gate that straddles a stalled stream (no clicks), then lit again: the
    link was never dark."""
    st, _ = CONFIRMED.step(CONFIRMED.initial_state(), SwitchReading(0.5, 3, 5e6, 0.0))
    assert st.mode == "ok"
    st, act = CONFIRMED.step(st, SwitchReading(1.5, 3, 0.0, 0.5))
    assert act is None and "no_light" not in CONFIRMED.status(st)["alarms"]
    assert CONFIRMED.status(st)["dark_since_s"] == 0.5
    st, act = CONFIRMED.step(st, SwitchReading(2.5, 3, 5e6, 1.5))
    assert act is None and st.mode == "ok" and CONFIRMED.status(st)["alarms"] == {}
    assert st.dark_since_s is None


def test_a_port_dark_for_the_confirmation_time_alarms():
    st, _ = CONFIRMED.step(CONFIRMED.initial_state(), SwitchReading(0.5, 3, 5e6, 0.0))
    for t in (1.0, 1.5, 2.0):                         # dark from 0.5: 0.5 .. 1.5 s so far
        st, act = CONFIRMED.step(st, SwitchReading(t, 3, 100.0, t - 0.5))
        assert act is None and "no_light" not in CONFIRMED.status(st)["alarms"]
    st, act = CONFIRMED.step(st, SwitchReading(2.5, 3, 100.0, 2.0))    # dark for 2.0 s
    assert st.mode == "no_light" and "no_light" in CONFIRMED.status(st)["alarms"]
    assert act == SelectPort(3)                       # selected at -0.05, retry 1 s: due


def test_a_gate_not_judged_breaks_the_dark_run():
    """Dark at the end of one run of collection and at the start of the next, with the link
    idle in between: two separate dark gates, not a dark port."""
    st, _ = CONFIRMED.step(CONFIRMED.initial_state(), SwitchReading(0.5, 3, 5e6, 0.0))
    st, _ = CONFIRMED.step(st, SwitchReading(1.0, 3, 0.0, 0.5))
    st, _ = CONFIRMED.step(st, SwitchReading(5.0, 3, 0.0, 1.0, acquiring=False))
    assert st.dark_since_s is None
    st, act = CONFIRMED.step(st, SwitchReading(5.5, 3, 0.0, 5.0))
    assert act is None and "no_light" not in CONFIRMED.status(st)["alarms"]
    assert st.dark_since_s == 5.0


def test_no_light_judgement_while_not_acquiring():
    st, act = LOOP.step(LOOP.initial_state(), SwitchReading(0.0, 3, 0.0, None, acquiring=False))
    assert act is None and "no_light" not in LOOP.status(st)["alarms"]


@pytest.mark.parametrize("kw", [{"port": 0}, {"port": 9}, {"port": 2, "n_ports": 1},
                                {"port": 1, "light_floor_hz": -1.0}])
def test_config_errors(kw):
    with pytest.raises(ControlConfigError):
        SwitchConfig(**kw)


def test_wrong_port_detected_and_corrected_on_the_simulated_switch():
    """Link on port 3; the switch loses power and falls back to port 1 (no light reaches Bob).
    The loop, reading the switch over TCP and the click rate of the simulated link, puts it
    back on port 3 and sees the light return."""
    controls = LinkControls()
    controls.link_port = controls.switch_port = 3
    sim = LinkSimulator(LinkParams.preset("gys", distance_km=10.0), controls, seed=3)
    dicon = DiconMemsSim(controls)
    clock = {"t": 0.0, "gate": 0.0, "counts": 0, "rate": None}

    def advance(dt=0.01, slots=1_000_000):
        before = sum(tel.counts for tel in controls.telemetry)
        sim.run_slots(slots)
        after = sum(tel.counts for tel in controls.telemetry)
        clock["rate"], clock["gate"] = (after - before) / (slots / 1e9), clock["t"]
        clock["t"] += dt

    with TcpServer(dicon) as server:
        driver = registry.create("dicon-mems", server.url, timeout_s=2.0)
        try:
            adapter = SwitchAdapter("switch", driver,
                                    SwitchLoop(SwitchConfig(port=3, settle_s=0.005)),
                                    lambda: (clock["rate"], clock["gate"]))
            advance()
            assert adapter.tick(clock["t"]) is None and adapter.state.mode == "ok"
            light = clock["rate"]
            dicon.power_on()                          # power glitch: back to port 1
            advance()
            assert clock["rate"] < 1e-3 * light       # dark counts only (Y0 ~ 1.7 kHz)
            act = adapter.tick(clock["t"])
            assert act == SelectPort(3) and controls.switch_port == 3
            assert "wrong_port" in adapter.status()["alarms"]
            advance()                                 # this gate straddles the switching:
            assert adapter.tick(clock["t"]) is None   # not judged
            assert adapter.state.mode == "verifying"
            advance()
            assert adapter.tick(clock["t"]) is None
            status = adapter.status()
            assert status["state"] == "ok" and status["alarms"] == {}
            assert status["corrections"] == 1 and clock["rate"] > 0.5 * light
        finally:
            driver.close()

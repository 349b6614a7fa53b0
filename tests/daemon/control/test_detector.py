"""Detector health: pure checks and ledger, then the simulator's blinding attack end to end."""

import numpy as np
import pytest

from daemon.control.adapters import DetectorAdapter
from daemon.control.detector import (AlarmCleared, AlarmRaised, DetectorConfig, DetectorLoop,
                                     DetectorSample, TaggerCounts)
from drivers import registry
from drivers.detector.telemetry import BlindingLimits, Telemetry
from sim_backend.controls import LinkControls
from sim_backend.instruments.spd import serve_spd
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams


def reading(t, rate=1e5, current=0.01, bias=50.0, temp=-50.0):
    return Telemetry(timestamp_s=t, counts=(0,) * 4, count_rate_hz=(rate,) * 4,
                     bias_setpoint_v=50.0, bias_v=(bias,) * 4,
                     photocurrent_ua=(current,) * 4, temperature_c=(temp,) * 4)


LOOP = DetectorLoop(DetectorConfig(limits=BlindingLimits(click_rate_floor_hz=1e3),
                                   dead_time_ns=100.0, max_dead_fraction=0.2))


@pytest.mark.parametrize("kw,name", [({"current": 5.0}, "photocurrent_high:0"),
                                     ({"bias": 45.0}, "bias_sag:0"),
                                     ({"rate": 1e7}, "click_rate_high:0"),
                                     ({"rate": 10.0}, "click_rate_low:0"),
                                     ({"rate": 3e6}, "dead_time_saturation:0"),
                                     ({"temp": -20.0}, "temperature_high:0")])
def test_each_check_trips_on_its_own(kw, name):
    assert name in LOOP.check(DetectorSample(reading(0.0, **kw)))
    assert LOOP.check(DetectorSample(reading(0.0))) == {}


def test_rate_floor_applies_only_while_acquiring():
    assert LOOP.check(DetectorSample(reading(0.0, rate=10.0), acquiring=False)) == {}


def test_multi_clicks_from_the_tagger():
    many = TaggerCounts(0.0, 1.0, detections=1000, multi_clicks=100)
    few = TaggerCounts(0.0, 1.0, detections=1000, multi_clicks=10)
    assert "multi_clicks" in LOOP.check(DetectorSample(reading(1.0), many))
    assert "multi_clicks" not in LOOP.check(DetectorSample(reading(1.0), few))


def test_ledger_covers_last_clean_to_first_clean_and_answers_windows():
    st = LOOP.initial_state()
    for t, kw in [(0.0, {}), (1.0, {}), (2.0, {"current": 9.0}), (3.0, {"current": 9.0}),
                  (4.0, {}), (5.0, {})]:
        st, act = LOOP.step(st, DetectorSample(reading(t, **kw)))
        if t == 2.0:
            assert isinstance(act, AlarmRaised) and act.since_s == 1.0
        if t == 4.0:
            assert isinstance(act, AlarmCleared)
            assert (act.interval.start_s, act.interval.end_s) == (1.0, 4.0)
    v = DetectorLoop.window_verdict
    assert v(st, 0.0, 0.9) == "ok"
    assert v(st, 0.5, 1.5) == "alarm"          # touches the suspect interval
    assert v(st, 3.5, 3.6) == "alarm"
    assert v(st, 4.1, 5.0) == "ok"
    assert v(st, 4.1, 5.5) == "pending"        # no clean reading after 5.5 yet
    assert [(i.start_s, i.end_s) for i in DetectorLoop.alarm_intervals(st)] == [(1.0, 4.0)]


def test_ongoing_alarm_blocks_everything_after_it():
    st = LOOP.initial_state()
    st, _ = LOOP.step(st, DetectorSample(reading(0.0)))
    st, _ = LOOP.step(st, DetectorSample(reading(1.0, current=9.0)))
    assert DetectorLoop.window_verdict(st, 100.0, 101.0) == "alarm"
    assert LOOP.status(st)["state"] == "alarm"
    assert DetectorLoop.alarm_intervals(st)[-1].end_s is None


def test_out_of_order_readings_are_refused():
    st, _ = LOOP.step(LOOP.initial_state(), DetectorSample(reading(5.0)))
    with pytest.raises(ValueError, match="time order"):
        LOOP.step(st, DetectorSample(reading(4.0)))


def test_blinding_attack_trips_the_alarm_flags_the_window_and_output_resumes():
    """The simulator's ``blinding`` attack, seen through the real ID120 driver over TCP.

    Link time runs in 0.1 s steps (1e5 pulses simulated per step, the telemetry of the step);
    the detector unit is read once per step, with the driver's clock set to link time. The
    attack starts at t = 2.0 s and stops at t = 4.0 s. Stated time to alarm: one reading
    period (0.1 s): the first reading after the attack begins shows the blinded photocurrent
    (40 uA against a 1 uA ceiling), since the simulator writes telemetry every step.
    """
    controls = LinkControls()
    clean = LinkParams.preset("gys", distance_km=10.0)
    attacked = clean.replace(eve="blinding", eve_fraction=1.0)
    sim = LinkSimulator(clean, controls, seed=5)
    period, t = 0.1, 0.0
    with serve_spd(controls) as server:
        driver = registry.create("id120", server.url, timeout_s=2.0)
        try:
            driver.clock = lambda: t
            adapter = DetectorAdapter("det", driver, DetectorLoop())
            raised = cleared = None
            for k in range(60):
                sim.params = attacked if 2.0 <= t < 4.0 else clean
                sim.run_slots(100_000)
                t = round(t + period, 9)
                act = adapter.tick()
                if isinstance(act, AlarmRaised) and raised is None:
                    raised = (t, act)
                if isinstance(act, AlarmCleared):
                    cleared = (t, act)
            assert raised is not None and cleared is not None
            t_alarm, act = raised
            assert 2.0 < t_alarm <= 2.0 + period + 1e-9          # within one reading period
            assert act.since_s <= 2.0                             # from the last clean reading
            assert any("photocurrent_high" in r for r in act.reasons)
            interval = cleared[1].interval
            assert interval.start_s <= 2.0 and 4.0 <= interval.end_s <= 4.0 + period + 1e-9
            # No key from any block acquired during the attack; blocks after it are fine.
            assert not adapter.window_ok(2.0, 2.5) and not adapter.window_ok(3.5, 4.0)
            assert adapter.window_verdict(2.5, 3.0) == "alarm"
            assert adapter.window_ok(0.5, 1.5)
            assert adapter.window_ok(4.3, 5.5)
            status = adapter.status()
            assert status["state"] == "ok" and status["healthy"]
            assert status["no_key_intervals"][-1]["start_s"] == interval.start_s
        finally:
            driver.close()


def test_lost_detector_unit_is_reported_and_unhealthy():
    controls = LinkControls()
    with serve_spd(controls) as server:
        driver = registry.create("id120", server.url, timeout_s=0.3)
        try:
            adapter = DetectorAdapter("det", driver)
            adapter.tick()
            assert adapter.healthy()
            server.unplug()
            assert adapter.tick() is None
            assert not adapter.healthy()
            assert "device_lost" in adapter.status()["alarms"]
        finally:
            driver.close()

"""Id120 over real byte paths: pyvisa-py to the simulated unit on TCP, and the pyvisa-sim YAML.

Timeouts are short (0.2 s) so the fault-injection cases stay fast.
"""

from __future__ import annotations

import os
import time

import pytest

from drivers import registry
from drivers.detector.id120 import Id120, StatusAlarm
from drivers.detector.telemetry import BlindingLimits, Indicator, blinding_indicators
from drivers.errors import (DeviceDisconnected, DeviceProtocolError, DeviceReportedError,
                            DeviceTimeout, SettingOutOfRange)
from sim_backend.controls import LinkControls
from sim_backend.instruments import spd

TIMEOUT_S = 0.2
YAML = os.path.join(os.path.dirname(spd.__file__), "id120.yaml")
YAML_RESOURCE = "TCPIP::127.0.0.1::7110::SOCKET"


@pytest.fixture
def controls():
    return LinkControls()


@pytest.fixture
def server(controls):
    srv = spd.serve_spd(controls)
    yield srv
    srv.close()


@pytest.fixture(params=["visa", "socket"])
def det(request, server):
    # The same unit as a VISA socket resource (pyvisa-py) and as a raw socket:// URL.
    url = server.visa_resource + "@py" if request.param == "visa" else server.url
    driver = registry.create("id120", url, timeout_s=TIMEOUT_S)
    yield driver
    driver.close()


def test_identity_over_pyvisa_py(det):
    assert det.identify().model == "ID120"


def test_settings_act_on_the_link_controls(det, controls):
    det.efficiency_pct = 25
    det.dead_time_ns = 5000
    det.bias_v = 48.0
    det.threshold_mv = 80
    det.enabled = False
    for d in controls.detectors:
        assert (d.efficiency_pct, d.dead_time_ns, d.bias_v, d.threshold_mv, d.enabled) == \
            (25.0, 5000.0, 48.0, 80.0, False)
    assert (det.efficiency_pct, det.dead_time_ns, det.bias_v, det.threshold_mv, det.enabled) == \
        (25, 5000, 48.0, 80.0, False)


def test_out_of_range_is_refused_before_the_unit_sees_it(det, server, controls):
    with pytest.raises(SettingOutOfRange, match=r"bias_v=80 outside \[30.0, 70.0\] V"):
        det.bias_v = 80
    assert not any(line.startswith("BIAS") for line in server.instrument.history)
    assert controls.detectors[0].bias_v == 50.0


def test_the_error_queue_surfaces_as_device_reported_error(det, server):
    with pytest.raises(DeviceReportedError) as info:
        det.write("EFFICIENCY 12")              # bypasses the driver's own check on purpose
    assert info.value.code == -224 and info.value.command == "EFFICIENCY 12"
    assert server.instrument.errors == type(server.instrument.errors)()   # drained


def test_blinding_shows_in_telemetry_status_and_indicators(det, controls):
    clean = det.read_telemetry()
    with controls.lock:      # what the link physics writes under a bright-light attack on V
        controls.telemetry[1].photocurrent_ua = 40.0
        controls.telemetry[1].bias_v = 41.0
        controls.telemetry[1].counts += 5
    blinded = det.read_telemetry()
    assert blinded.photocurrent_ua[1] == 40.0 and blinded.bias_v[1] == 41.0
    assert blinded.counts == (0, 5, 0, 0)
    assert blinded.timestamp_s >= clean.timestamp_s
    status = det.status()
    assert not status.bias_ok
    assert status.alarms == StatusAlarm.BIAS | StatusAlarm.PHOTOCURRENT
    alarms = blinding_indicators([clean, blinded], BlindingLimits())
    assert [(a.indicator, a.channel, a.ongoing) for a in alarms] == [
        (Indicator.PHOTOCURRENT_HIGH, 1, True), (Indicator.BIAS_SAG, 1, True)]
    assert alarms[0].start_s == clean.timestamp_s


def test_count_rate_is_counts_over_the_gate_between_two_reads(det, controls):
    t0 = time.monotonic()
    det.detection_counts()                      # opens the gate
    t1 = time.monotonic()
    with controls.lock:
        controls.telemetry[0].counts += 20000
    time.sleep(0.05)
    t2 = time.monotonic()
    counts, rates = det.detection_counts()      # closes it
    t3 = time.monotonic()
    assert counts[0] == 20000
    # The unit stamps the gate somewhere inside each query's round trip, so its length lies
    # in [t2 - t1, t3 - t0]; the reply is rounded to 0.1 Hz.
    assert 20000 / (t3 - t0) - 0.05 <= rates[0] <= 20000 / (t2 - t1) + 0.05
    assert rates[1:] == (0.0, 0.0, 0.0)


# -- fault injection ---------------------------------------------------------------------------

def test_a_mute_unit_times_out_and_is_usable_again_afterwards(det, server):
    server.instrument.faults.silent = True
    with pytest.raises(DeviceTimeout, match="EFFICIENCY"):
        det.efficiency_pct
    server.instrument.faults.clear()
    assert det.efficiency_pct == 10


def test_close_mid_reply_never_yields_a_half_parsed_value(det, server):
    det.dead_time_ns = 12345
    server.instrument.faults.close_mid_reply = True      # "12345\n" would arrive as "123"
    with pytest.raises((DeviceDisconnected, DeviceTimeout)):
        det.dead_time_ns
    server.instrument.faults.clear()
    assert det.dead_time_ns == 12345


def test_garbage_reply_is_a_protocol_error(det, server):
    server.instrument.faults.garbage = True
    with pytest.raises(DeviceProtocolError):
        det.efficiency_pct
    server.instrument.faults.clear()
    assert det.efficiency_pct == 10


def test_unit_comes_back_after_power_cycle_and_gets_its_settings_again(det, server, controls):
    det.efficiency_pct = 20
    det.dead_time_ns = 2000
    det.bias_v = 52.5
    server.unplug()
    server.instrument.power_cycle()                 # back to factory settings while away
    assert controls.detectors[0].efficiency_pct == 10.0
    server.replug()
    assert det.efficiency_pct == 20                  # reconnected, settings re-applied
    for d in controls.detectors:
        assert (d.efficiency_pct, d.dead_time_ns, d.bias_v) == (20.0, 2000.0, 52.5)


def test_unit_that_stays_away_ends_in_device_disconnected(det, server):
    det.RECONNECT_ATTEMPTS = 2
    server.unplug()
    with pytest.raises(DeviceDisconnected, match="did not come back after 2 reconnect"):
        det.efficiency_pct


# -- the static pyvisa-sim definition ---------------------------------------------------------

@pytest.fixture
def yaml_det():
    driver = Id120.from_url(YAML_RESOURCE, timeout_s=TIMEOUT_S, visa_backend=YAML + "@sim")
    yield driver
    driver.close()


def test_pyvisa_sim_yaml_speaks_the_same_dialect(yaml_det):
    assert yaml_det.identify().serial == "SPD-YAML-0"
    t = yaml_det.read_telemetry()            # static replies, measured bias near 50 V
    assert t.n_channels == 4 and t.counts == (1200, 1180, 1215, 1190)
    assert t.bias_setpoint_v == 50.0
    assert blinding_indicators([t], BlindingLimits()) == []
    assert yaml_det.status().alarms == StatusAlarm.NONE
    yaml_det.efficiency_pct = 15
    yaml_det.bias_v = 55.25
    yaml_det.dead_time_ns = 300
    yaml_det.threshold_mv = 60
    yaml_det.enabled = False
    assert (yaml_det.efficiency_pct, yaml_det.bias_v, yaml_det.dead_time_ns,
            yaml_det.threshold_mv, yaml_det.enabled) == (15, 55.25, 300, 60.0, False)
    # pyvisa-sim keeps device state for the whole process (and has no *RST): put it back.
    yaml_det.efficiency_pct, yaml_det.bias_v, yaml_det.dead_time_ns = 10, 50.0, 100
    yaml_det.threshold_mv, yaml_det.enabled = 50.0, True


def test_pyvisa_sim_yaml_queues_errors_for_refused_commands(yaml_det):
    before = yaml_det.efficiency_pct
    with pytest.raises(DeviceReportedError) as info:
        yaml_det.write("EFFICIENCY 12")          # outside the YAML's valid set
    assert info.value.code == -113
    assert yaml_det.efficiency_pct == before

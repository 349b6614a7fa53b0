"""The simulated detector's firmware, sans-I/O: commands in, LinkControls and replies out."""

from __future__ import annotations

import pytest

from sim_backend.controls import LinkControls
from sim_backend.instruments import spd
from sim_backend.instruments.spd import SpdInstrument


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def controls():
    return LinkControls()


@pytest.fixture
def unit(controls):
    return SpdInstrument(controls)


def errors(unit):
    out = []
    while (reply := unit.handle_line("SYST:ERR?")) != '0,"No error"':
        out.append(reply)
    return out


def test_settings_land_in_link_controls_for_every_channel_of_the_unit(unit, controls):
    for line in ["EFFICIENCY 25", "DEADTIME:TIME 5000", "BIAS:VOLTAGE 48.25", "THRESHOLD 80.5",
                 "DETECTOR:STATE 0"]:
        assert unit.handle_line(line) is None
    assert errors(unit) == []
    for d in controls.detectors:
        assert (d.efficiency_pct, d.dead_time_ns, d.bias_v, d.threshold_mv, d.enabled) == \
            (25.0, 5000.0, 48.25, 80.5, False)
    assert [unit.handle_line(q) for q in ["EFFICIENCY?", "DEADTIME:TIME?", "BIAS:VOLTAGE?",
                                          "THRESHOLD?", "DETECTOR:STATE?"]] == \
        ["25", "5000", "48.25", "80.5", "0"]


def test_a_single_channel_unit_touches_only_its_detector(controls):
    unit = SpdInstrument(controls, channels=(2,))
    unit.handle_line("EFFICIENCY 15")
    assert [d.efficiency_pct for d in controls.detectors] == [10.0, 10.0, 15.0, 10.0]
    controls.telemetry[2].photocurrent_ua = 3.25
    assert unit.handle_line("MEASURE:PHOTOCURRENT?") == "3.250"


@pytest.mark.parametrize("line, error", [
    ("FOO 1", '-113,"Undefined header"'),
    ("EFFICIENCY? 3", '-108,"Parameter not allowed"'),
    ("EFFICIENCY", '-109,"Missing parameter"'),
    ("EFFICIENCY twenty", '-104,"Data type error"'),
    ("EFFICIENCY 12", '-224,"Illegal parameter value"'),
    ("DEADTIME:TIME 99", '-222,"Data out of range"'),
    ("DEADTIME:TIME 150.5", '-104,"Data type error"'),
    ("BIAS:VOLTAGE 70.01", '-222,"Data out of range"'),
    ("BIAS:VOLTAGE inf", '-104,"Data type error"'),
    ("THRESHOLD 9.9", '-222,"Data out of range"'),
    ("DETECTOR:STATE 2", '-224,"Illegal parameter value"'),
])
def test_bad_commands_are_dropped_and_queued_as_scpi_errors(unit, controls, line, error):
    before = [vars(d).copy() for d in controls.detectors]
    assert unit.handle_line(line) is None          # never an in-line error reply
    assert errors(unit) == [error]
    assert [vars(d) for d in controls.detectors] == before


def test_error_queue_is_fifo_overflows_like_scpi_and_clears(unit):
    for k in range(20):
        unit.handle_line(f"BOGUS{k}")
    queued = errors(unit)
    # 15 real errors kept (oldest first), the 16th slot says the queue overflowed.
    assert len(queued) == spd.ERROR_QUEUE_LENGTH
    assert queued[:-1] == ['-113,"Undefined header"'] * 15 and queued[-1] == '-350,"Queue overflow"'
    unit.handle_line("BOGUS")
    unit.handle_line("*CLS")
    assert errors(unit) == []


def test_headers_are_case_insensitive_and_long_error_query_is_accepted(unit):
    unit.handle_line("efficiency 20")
    assert unit.handle_line("Efficiency?") == "20"
    unit.handle_line("NOPE")
    assert unit.handle_line("SYSTEM:ERROR?") == '-113,"Undefined header"'


def test_detection_count_reports_counts_and_the_rate_over_the_gate(controls):
    clock = FakeClock(100.0)
    unit = SpdInstrument(controls, channels=(0, 1), clock=clock)
    controls.telemetry[0].counts, controls.telemetry[1].counts = 500, 40
    clock.t = 102.0
    assert unit.handle_line("COUNTERS:DETECTION_COUNT?") == "500,250.0,40,20.0"
    controls.telemetry[0].counts += 1000
    clock.t = 102.5
    assert unit.handle_line("COUNTERS:DETECTION_COUNT?") == "1500,2000.0,40,0.0"
    # Two queries at the same instant: an empty gate reports zero rather than dividing by zero.
    assert unit.handle_line("COUNTERS:DETECTION_COUNT?") == "1500,0.0,40,0.0"


def test_telemetry_and_status_follow_what_the_physics_writes(unit, controls):
    assert unit.handle_line("STATUS?") == "-50.0,1,0"
    # A blinding attack on detector 1 as the physics reports it: bright current, sagging bias.
    with controls.lock:
        controls.telemetry[1].photocurrent_ua = 42.0
        controls.telemetry[1].bias_v = 41.5
    assert unit.handle_line("MEASURE:PHOTOCURRENT?") == "0.010,42.000,0.010,0.010"
    assert unit.handle_line("MEASURE:BIAS?") == "50.000,41.500,50.000,50.000"
    assert unit.handle_line("STATUS?") == \
        f"-50.0,0,{spd.ALARM_BIAS | spd.ALARM_PHOTOCURRENT}"
    controls.telemetry[3].temperature_c = -20.0
    assert unit.handle_line("MEASURE:TEMPERATURE?") == "-50.0,-50.0,-50.0,-20.0"
    assert unit.handle_line("STATUS?").startswith("-20.0,0,7")


def test_measured_bias_follows_the_setpoint_and_keeps_a_sag(unit, controls):
    controls.telemetry[0].bias_v = 47.0                # 3 V of sag imposed by the physics
    unit.handle_line("BIAS:VOLTAGE 55.00")
    assert unit.handle_line("MEASURE:BIAS?") == "52.000,55.000,55.000,55.000"
    unit.handle_line("*RST")
    assert unit.handle_line("MEASURE:BIAS?") == "47.000,50.000,50.000,50.000"
    assert controls.detectors[0].bias_v == 50.0


def test_reset_and_power_cycle_restore_factory_settings(unit, controls):
    unit.handle_line("EFFICIENCY 25")
    unit.handle_line("DETECTOR:STATE 0")
    unit.handle_line("BOGUS")
    unit.power_cycle()
    assert errors(unit) == []
    assert controls.detectors[0] == type(controls.detectors[0])()


def test_identity_and_channel_validation(controls):
    assert SpdInstrument(controls, serial="X7").handle_line("*IDN?") == \
        "qkd-node sim,ID120,X7,1.0"
    for bad in [(), (4,), (1, 1), (-1,)]:
        with pytest.raises(ValueError, match="channels"):
            SpdInstrument(controls, channels=bad)


def test_respond_serves_several_crlf_lines_from_one_buffer(unit):
    buffer = bytearray(b"EFFICIENCY 20\r\nEFFICIENCY?\r\n*IDN?\nDEAD")
    assert unit.respond(buffer) == b"20\nqkd-node sim,ID120,SPD-SIM-0,1.0\n"
    assert buffer == b"DEAD"      # an incomplete line waits for its terminator

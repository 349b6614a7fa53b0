"""Id120 byte for byte: these exchanges are the dialect's documentation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import registry
from drivers.detector.id120 import DetectorStatus, Id120, StatusAlarm
from drivers.errors import DeviceProtocolError, DeviceReportedError, SettingOutOfRange
from drivers.transport.base import Transport
from sim_backend.controls import LinkControls
from sim_backend.instruments import spd
from tests.drivers.expected import expected_protocol

OK = (b"SYST:ERR?\n", b'0,"No error"\n')


def test_identify():
    with expected_protocol(Id120, [(b"*IDN?\n", b"qkd-node sim,ID120,SPD-SIM-0,1.0\n")]) as det:
        idn = det.identify()
    assert (idn.model, idn.serial, idn.firmware) == ("ID120", "SPD-SIM-0", "1.0")


@pytest.mark.parametrize("attr, value, sent, reply, read_back", [
    ("efficiency_pct", 20, b"EFFICIENCY 20\n", b"20\n", 20),
    ("dead_time_ns", 2500, b"DEADTIME:TIME 2500\n", b"2500\n", 2500),
    ("dead_time_ns", 2500.0, b"DEADTIME:TIME 2500\n", b"2500\n", 2500),
    ("bias_v", 55.5, b"BIAS:VOLTAGE 55.50\n", b"55.50\n", 55.5),
    ("threshold_mv", 75, b"THRESHOLD 75.0\n", b"75.0\n", 75.0),
    ("enabled", False, b"DETECTOR:STATE 0\n", b"0\n", False),
])
def test_each_setting_is_sent_confirmed_by_the_error_queue_and_read_back(
        attr, value, sent, reply, read_back):
    query = sent.split(b" ")[0] + b"?\n"
    with expected_protocol(Id120, [(sent, None), OK, (query, reply)]) as det:
        setattr(det, attr, value)
        assert getattr(det, attr) == read_back
    assert det.last_settings[attr] == (value,)


@pytest.mark.parametrize("attr, value, match", [
    ("efficiency_pct", 12, r"efficiency_pct=12 not one of \[10, 15, 20, 25\] %"),
    ("efficiency_pct", 30, "not one of"),
    ("efficiency_pct", 20.5, "not one of"),
    ("dead_time_ns", 99, r"dead_time_ns=99 outside \[100, 25000\] ns"),
    ("dead_time_ns", 25001, "outside"),
    ("dead_time_ns", 150.5, "whole number"),
    ("bias_v", 29.99, r"bias_v=29.99 outside \[30.0, 70.0\] V"),
    ("bias_v", 70.01, "outside"),
    ("bias_v", math.nan, "outside"),
    ("bias_v", "55", "not a number"),
    ("threshold_mv", 5.0, r"threshold_mv=5.0 outside \[10.0, 500.0\] mV"),
    ("enabled", 1, "True or False"),
])
def test_out_of_range_settings_are_refused_before_anything_is_sent(attr, value, match):
    with expected_protocol(Id120, []) as det:      # any write would fail the script
        with pytest.raises(SettingOutOfRange, match=match):
            setattr(det, attr, value)
    assert attr not in det.last_settings


def test_an_error_reported_by_the_unit_is_raised_with_its_code_and_command():
    with expected_protocol(Id120, [
            (b"BIAS:VOLTAGE 55.00\n", None),
            (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
            (b"SYST:ERR?\n", b'-113,"Undefined header"\n'),
            OK]) as det:
        with pytest.raises(DeviceReportedError) as info:
            det.bias_v = 55
    assert info.value.code == -222
    assert info.value.command == "BIAS:VOLTAGE 55.00"
    assert "-222 Data out of range; -113 Undefined header" in str(info.value)


def test_read_telemetry_asks_five_queries_and_stamps_the_reading():
    with expected_protocol(Id120, [
            (b"COUNTERS:DETECTION_COUNT?\n", b"1200,1000.0,7,5.5\n"),
            (b"BIAS:VOLTAGE?\n", b"50.00\n"),
            (b"MEASURE:BIAS?\n", b"49.980,41.200\n"),
            (b"MEASURE:PHOTOCURRENT?\n", b"0.010,35.000\n"),
            (b"MEASURE:TEMPERATURE?\n", b"-50.0,-49.5\n")]) as det:
        det.clock = lambda: 1234.5
        t = det.read_telemetry()
    assert t.timestamp_s == 1234.5
    assert t.counts == (1200, 7) and t.count_rate_hz == (1000.0, 5.5)
    assert t.bias_setpoint_v == 50.0 and t.bias_v == (49.98, 41.2)
    assert t.photocurrent_ua == (0.01, 35.0) and t.temperature_c == (-50.0, -49.5)


@pytest.mark.parametrize("reply", [
    b"1200,1000.0,7\n",          # a rate missing
    b"1200,1000.0,7.5,5.5\n",    # a fractional count
    b"-1,0.0\n",                 # a negative count
    b"12,nan\n",                 # a rate that is not a number
    b"\n",                       # nothing at all
])
def test_malformed_counter_replies_are_protocol_errors_not_values(reply):
    with expected_protocol(Id120, [(b"COUNTERS:DETECTION_COUNT?\n", reply)]) as det:
        with pytest.raises(DeviceProtocolError, match="COUNTERS:DETECTION_COUNT"):
            det.detection_counts()


def test_telemetry_with_a_channel_missing_is_a_protocol_error():
    with expected_protocol(Id120, [
            (b"COUNTERS:DETECTION_COUNT?\n", b"1,1.0,2,2.0\n"),
            (b"BIAS:VOLTAGE?\n", b"50.00\n"),
            (b"MEASURE:BIAS?\n", b"50.000\n"),
            (b"MEASURE:PHOTOCURRENT?\n", b"0.010,0.010\n"),
            (b"MEASURE:TEMPERATURE?\n", b"-50.0,-50.0\n")]) as det:
        with pytest.raises(DeviceProtocolError, match="1 values for 2 channels"):
            det.read_telemetry()


def test_status_decodes_the_alarm_mask():
    with expected_protocol(Id120, [(b"STATUS?\n", b"-49.9,0,6\n"),
                                   (b"STATUS?\n", b"-50.0,1,0\n"),
                                   (b"STATUS?\n", b"-50.0,yes,0\n")]) as det:
        assert det.status() == DetectorStatus(-49.9, False,
                                              StatusAlarm.BIAS | StatusAlarm.PHOTOCURRENT)
        assert det.status().alarms == StatusAlarm.NONE
        with pytest.raises(DeviceProtocolError, match="STATUS"):
            det.status()


def test_garbled_setting_reply_is_a_protocol_error():
    with expected_protocol(Id120, [(b"EFFICIENCY?\n", b"twenty\n")]) as det:
        with pytest.raises(DeviceProtocolError, match="cannot parse reply 'twenty'"):
            det.efficiency_pct


def test_reset_sends_rst_and_forgets_remembered_settings():
    with expected_protocol(Id120, [(b"EFFICIENCY 15\n", None), OK,
                                   (b"*RST\n", None), OK]) as det:
        det.efficiency_pct = 15
        det.reset()
    assert det.last_settings == {}


def test_registered_as_id120():
    assert registry.driver_class("id120") is Id120
    assert "id120" in registry.available()


def test_driver_limits_match_the_simulated_firmware():
    assert Id120.EFFICIENCIES_PCT == spd.EFFICIENCIES_PCT
    assert (Id120.MIN_DEAD_TIME_NS, Id120.MAX_DEAD_TIME_NS) == spd.DEAD_TIME_RANGE_NS
    assert (Id120.MIN_BIAS_V, Id120.MAX_BIAS_V) == spd.BIAS_RANGE_V
    assert (Id120.MIN_THRESHOLD_MV, Id120.MAX_THRESHOLD_MV) == spd.THRESHOLD_RANGE_MV


# -- property: the driver's validation agrees with the instrument's --------------------------------

class InProcessTransport(Transport):
    """The driver wired straight to a simulated instrument's sans-I/O responder (no socket)."""

    def __init__(self, instrument):
        self.instrument, self.name, self.url = instrument, "in-process", "inproc://"
        self._tx, self._rx = bytearray(), bytearray()

    def write(self, data):
        self._tx += data
        self._rx += self.instrument.respond(self._tx)

    def read_until(self, terminator, timeout_s=None, max_bytes=65536):
        end = self._rx.index(terminator) + len(terminator)   # a missing reply is a test bug
        data = bytes(self._rx[:end])
        del self._rx[:end]
        return data

    def read_some(self, max_bytes, timeout_s=None):
        raise AssertionError("Id120 reads lines only")

    read_exact = read_some

    def reset_input(self):
        self._rx.clear()

    def close(self):
        pass

    def reopen(self):
        pass


settings = st.one_of(
    st.tuples(st.just("efficiency_pct"), st.integers(0, 40)),
    st.tuples(st.just("dead_time_ns"), st.integers(0, 30000)),
    st.tuples(st.just("bias_v"), st.floats(20.0, 80.0)),
    st.tuples(st.just("threshold_mv"), st.floats(0.0, 600.0)),
)


@given(settings)
def test_what_the_driver_accepts_the_instrument_accepts_and_applies(setting):
    attr, value = setting
    controls = LinkControls()
    det = Id120(InProcessTransport(spd.SpdInstrument(controls)), name="inproc")
    try:
        setattr(det, attr, value)
    except SettingOutOfRange:
        # Refused by the driver: the instrument saw nothing and nothing changed.
        assert not det.transport.instrument.history
        assert controls.detectors[0] == LinkControls().detectors[0]
        return
    # Accepted: the instrument raised no error (check_errors ran) and applied the sent value.
    applied = getattr(controls.detectors[3], attr)
    assert applied == pytest.approx(value, abs=0.005 if attr == "bias_v" else 0.05)


@pytest.mark.parametrize("attr, query, reply", [
    ("bias_v", b"BIAS:VOLTAGE?\n", b"nan\n"),
    ("threshold_mv", b"THRESHOLD?\n", b"inf\n"),
    ("enabled", b"DETECTOR:STATE?\n", b"ON\n"),
    ("photocurrent_ua", b"MEASURE:PHOTOCURRENT?\n", b"0.01,,0.02\n"),
])
def test_non_numeric_or_non_finite_replies_are_protocol_errors(attr, query, reply):
    with expected_protocol(Id120, [(query, reply)]) as det:
        with pytest.raises(DeviceProtocolError, match=query.decode().strip().replace("?", r"\?")):
            getattr(det, attr)

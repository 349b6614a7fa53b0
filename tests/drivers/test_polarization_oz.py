"""OZ Optics EPC text protocol: byte-exact."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceProtocolError, DeviceReportedError, SettingOutOfRange
from drivers.polarization.oz_epc import EpcStatus, OzEpc
from tests.drivers.expected import expected_protocol


def test_set_voltage_is_confirmed_and_done():
    with expected_protocol(OzEpc, [(b"V1,2200\r\n", b"V1,2200\r\nDone\r\n"),
                                   (b"V3,-1500\r\n", b"V3,-1500\r\nDone\r\n")]) as epc:
        epc.set_voltage(1, 2200)
        epc.set_voltage(3, -1500)
        assert epc.last_settings == {"V1": (1, 2200), "V3": (3, -1500)}


def test_set_voltages_checks_all_before_sending_any():
    with expected_protocol(OzEpc, []) as epc:
        with pytest.raises(SettingOutOfRange, match=r"voltage 6000 mV outside \[-5000, 5000\]"):
            epc.set_voltages([0, 100, 6000, 0])
        with pytest.raises(SettingOutOfRange, match="3 voltages given"):
            epc.set_voltages([0, 0, 0])


@pytest.mark.parametrize("channel,voltage,pattern", [
    (0, 100, r"channel 0 outside 1..4"), (5, 100, "channel 5"), (1, 12.5, "integer millivolts"),
    (1, -5001, r"-5001 mV outside"), (True, 1, "channel True"),
])
def test_out_of_range_refused(channel, voltage, pattern):
    with expected_protocol(OzEpc, []) as epc:
        with pytest.raises(SettingOutOfRange, match=pattern):
            epc.set_voltage(channel, voltage)


def test_read_voltages():
    with expected_protocol(OzEpc, [(b"V?\r\n", b"2200,0,-1500,5000\r\nDone\r\n")]) as epc:
        assert epc.status() == EpcStatus((2200, 0, -1500, 5000))


def test_error_line_and_missing_done():
    with expected_protocol(OzEpc, [
        (b"V2,100\r\n", b"ERROR: voltage 100 out of range\r\nDone\r\n"),
        (b"V2,100\r\n", b"V2,100\r\nOK\r\n"),
        (b"V2,100\r\n", b"V2,999\r\nDone\r\n"),
        (b"V?\r\n", b"1,2,3\r\nDone\r\n"),
    ]) as epc:
        with pytest.raises(DeviceReportedError, match="ERROR: voltage"):
            epc.set_voltage(2, 100)
        with pytest.raises(DeviceProtocolError, match="expected 'Done'"):
            epc.set_voltage(2, 100)
        with pytest.raises(DeviceProtocolError, match="does not match"):
            epc.set_voltage(2, 100)
        with pytest.raises(DeviceProtocolError, match="expected 4 integers"):
            epc.voltages_mv()
    assert epc.last_settings == {}          # nothing confirmed, nothing to re-apply

"""Agiltron binary switch protocol: byte-exact, echo checked, settle time."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceProtocolError, DeviceTimeout, SettingOutOfRange
from drivers.switch import agiltron
from drivers.switch.agiltron import AgiltronSwitch
from tests.drivers.expected import expected_protocol


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(agiltron.time, "sleep", calls.append)
    return calls


def test_select_is_echoed_and_settles(sleeps):
    with expected_protocol(AgiltronSwitch, [(b"\x01\x12\x00\x05", b"\x01\x12\x00\x05")]) as sw:
        sw.select_port(5)
    assert sleeps == [AgiltronSwitch.SETTLE_TIME_S]
    assert sw.last_settings == {"port": (5,)}


def test_wrong_echo_is_a_protocol_error(sleeps):
    with expected_protocol(AgiltronSwitch, [(b"\x01\x12\x00\x05", b"\x01\x12\x00\x04")]) as sw:
        with pytest.raises(DeviceProtocolError, match="echo 01 12 00 04 differs"):
            sw.select_port(5)
    assert sleeps == [] and sw.last_settings == {}


def test_short_echo_is_a_timeout(sleeps):
    with expected_protocol(AgiltronSwitch, [(b"\x01\x12\x00\x02", b"\x01\x12")]) as sw:
        with pytest.raises(DeviceTimeout, match="short read"):
            sw.select_port(2)
        sw.transport.read_exact(2)        # drain what the script left, for the exit check


def test_query_port():
    with expected_protocol(AgiltronSwitch, [(b"\x01\x11\x00\x00", b"\x01\x11\x00\x07"),
                                            (b"\x01\x11\x00\x00", b"\x01\x11\x00\x09")]) as sw:
        assert sw.port() == 7
        with pytest.raises(DeviceProtocolError, match="unexpected reply 01 11 00 09"):
            sw.port()


@pytest.mark.parametrize("port", [0, 9, 256, 1.5])
def test_port_range(port):
    with expected_protocol(AgiltronSwitch, []) as sw:
        with pytest.raises(SettingOutOfRange, match="outside 1..8"):
            sw.select_port(port)

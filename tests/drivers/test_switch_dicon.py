"""DiCon MEMS 1xN switch: byte-exact protocol, settle time, port range."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceProtocolError, DeviceReportedError, SettingOutOfRange
from drivers.switch import dicon_mems
from drivers.switch.dicon_mems import DiconMems
from drivers.switch.ports import SwitchStatus
from tests.drivers.expected import expected_protocol


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(dicon_mems.time, "sleep", calls.append)
    return calls


def test_select_waits_settle_time_then_reads_back(sleeps):
    with expected_protocol(DiconMems, [(b"I1 3\r\n", None), (b"I1?\r\n", b"3\r\n")]) as sw:
        sw.select_port(3)
    assert sleeps == [DiconMems.SETTLE_TIME_S]
    assert sw.last_settings == {"port": (3,)}


def test_refused_switch_is_reported(sleeps):
    with expected_protocol(DiconMems, [(b"I1 4\r\n", None), (b"I1?\r\n", b"1\r\n")]) as sw:
        with pytest.raises(DeviceReportedError, match="reports port 1 after selecting 4"):
            sw.select_port(4)
    assert sw.last_settings == {}


@pytest.mark.parametrize("port", [0, 9, -1, 2.0, "3", True])
def test_port_out_of_range_sends_nothing(port):
    with expected_protocol(DiconMems, []) as sw:
        with pytest.raises(SettingOutOfRange, match=r"outside 1..8"):
            sw.select_port(port)


def test_port_count_is_per_model_instance():
    with expected_protocol(DiconMems, [(b"I1?\r\n", b"16\r\n")], n_ports=16) as sw:
        assert sw.status() == SwitchStatus(16, 16)
    with pytest.raises(ValueError, match="n_ports 64 outside 2..32"):
        DiconMems(None, n_ports=64)


@pytest.mark.parametrize("reply,error,pattern", [
    (b"ERR 1\r\n", DeviceReportedError, "ERR 1"),
    (b"three\r\n", DeviceProtocolError, "not a port number"),
    (b"12\r\n", DeviceProtocolError, r"port 12 outside 1..8"),
])
def test_bad_port_replies(reply, error, pattern):
    with expected_protocol(DiconMems, [(b"I1?\r\n", reply)]) as sw:
        with pytest.raises(error, match=pattern):
            sw.port()

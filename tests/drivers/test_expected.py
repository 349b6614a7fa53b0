"""The expected-exchange helper must fail on every deviation, or driver tests prove nothing."""

from __future__ import annotations

import pytest

from drivers.base import LineDriver
from drivers.errors import DeviceTimeout
from tests.drivers.expected import ProtocolMismatch, ScriptedTransport, expected_protocol


def test_wrong_bytes_fail_immediately():
    with pytest.raises(ProtocolMismatch, match=r"sent b'B\\n', expected b'A\\n'"):
        with expected_protocol(LineDriver, [(b"A\n", None)]) as dev:
            dev.write("B")


def test_extra_command_fails():
    with pytest.raises(ProtocolMismatch, match="expects nothing more"):
        with expected_protocol(LineDriver, [(b"A\n", None)]) as dev:
            dev.write("A")
            dev.write("A")


def test_unused_exchange_fails_on_exit():
    with pytest.raises(ProtocolMismatch, match="1 exchange"):
        with expected_protocol(LineDriver, [(b"A\n", None), (b"B\n", None)]) as dev:
            dev.write("A")


def test_unread_reply_fails_on_exit():
    with pytest.raises(ProtocolMismatch, match="never read"):
        with expected_protocol(LineDriver, [(b"A\n", b"ok\n")]) as dev:
            dev.write("A")


def test_split_writes_and_unprompted_replies():
    t = ScriptedTransport([(b"ABCD", b"xy"), (None, b"z\n")])
    t.write(b"AB")
    t.write(b"CD")
    assert t.read_exact(2) == b"xy"
    assert t.read_until(b"\n") == b"z\n"
    t.verify_complete()


def test_nothing_scripted_reads_as_timeout():
    with expected_protocol(LineDriver, [(b"Q?\n", None)]) as dev:
        with pytest.raises(DeviceTimeout):
            dev.ask("Q?")


def test_bad_script_is_rejected():
    with pytest.raises(TypeError):
        ScriptedTransport([(None, None)])
    with pytest.raises(TypeError):
        ScriptedTransport([b"A"])

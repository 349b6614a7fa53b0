"""Transports over real byte paths: TCP on loopback, pyserial's loop://, a pty, pyvisa-py."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from drivers.errors import DeviceDisconnected, DeviceTimeout
from drivers.transport import (SerialTransport, TcpTransport, VisaTransport, open_transport,
                               parse_socket_url, transport_kind)
from sim_backend.instruments.base import LineInstrument, PtyServer, TcpServer

T = 0.2  # short timeouts keep the suite fast


class Echo(LineInstrument):
    """Answers every line with ``echo:<line>``; ``mute`` lines get no answer."""

    def handle_line(self, line):
        return None if line == "mute" else f"echo:{line}"


@pytest.fixture
def echo_tcp():
    with TcpServer(Echo()) as server:
        yield server


@pytest.fixture
def echo_pty():
    with PtyServer(Echo()) as server:
        yield server


@pytest.mark.parametrize("url,kind", [
    ("socket://127.0.0.1:7101", "tcp"), ("TCPIP::127.0.0.1::7103::SOCKET", "visa"),
    ("TCPIP0::10.0.0.2::inst0::INSTR@py", "visa"), ("ASRL/dev/ttyUSB0::INSTR", "visa"),
    ("USB0::0x1313::0x8078::P0001::INSTR", "visa"), ("GPIB0::12::INSTR", "visa"),
    ("/dev/ttyUSB0", "serial"), ("loop://", "serial"), ("rfc2217://127.0.0.1:4000", "serial"),
])
def test_transport_kind_follows_the_url(url, kind):
    assert transport_kind(url) == kind


@pytest.mark.parametrize("url", ["socket://host", "socket://:80", "socket://h:0",
                                 "socket://h:99999", "socket://h:port"])
def test_bad_socket_url_is_refused_naming_it(url):
    with pytest.raises(ValueError, match="socket://host:port"):
        parse_socket_url(url)


def test_tcp_line_round_trip(echo_tcp):
    with open_transport(echo_tcp.url, name="echo", timeout_s=T) as t:
        assert isinstance(t, TcpTransport)
        t.write(b"hello\n")
        assert t.read_until(b"\n") == b"echo:hello\n"
        t.write(b"ab\ncd\n")
        assert t.read_exact(8) == b"echo:ab\n"
        assert t.read_until(b"\n") == b"echo:cd\n"


def test_tcp_nodelay_is_set(echo_tcp):
    with open_transport(echo_tcp.url, timeout_s=T) as t:
        assert t._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_silence_is_a_timeout_not_an_empty_value(echo_tcp):
    with open_transport(echo_tcp.url, name="echo", timeout_s=T) as t:
        t.write(b"mute\n")
        with pytest.raises(DeviceTimeout, match="echo"):
            t.read_until(b"\n")
        with pytest.raises(DeviceTimeout):
            t.read_some(10)


def test_short_read_is_a_timeout_and_keeps_the_bytes(echo_tcp):
    with open_transport(echo_tcp.url, timeout_s=T) as t:
        t.write(b"x\n")                       # 7 bytes come back
        with pytest.raises(DeviceTimeout, match="short read: 7 of 10"):
            t.read_exact(10)
        assert t.read_exact(7) == b"echo:x\n"  # nothing lost on a stream
        t.write(b"y\n")
        t.read_exact(3)
        t.reset_input()                        # a clean slate drops the rest
        with pytest.raises(DeviceTimeout):
            t.read_some(1, timeout_s=0.05)


def test_tcp_refused_names_device_and_url():
    with socket.socket() as s:                 # a port that is free right now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceDisconnected, match=rf"switch-1: .*socket://127.0.0.1:{port}"):
        open_transport(f"socket://127.0.0.1:{port}", name="switch-1", timeout_s=T)


def test_tcp_peer_close_is_disconnected_and_reopen_recovers(echo_tcp):
    with open_transport(echo_tcp.url, timeout_s=T) as t:
        t.write(b"a\n")
        t.read_until(b"\n")
        echo_tcp.unplug()
        with pytest.raises(DeviceDisconnected):
            t.read_some(1)
        with pytest.raises(DeviceDisconnected):
            t.reopen()
        echo_tcp.replug()
        t.reopen()
        t.write(b"b\n")
        assert t.read_until(b"\n") == b"echo:b\n"


def test_read_some_returns_what_is_there_and_read_into_fills_a_buffer():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    payload = bytes(range(256)) * 4096          # 1 MiB streamed in one go
    done = threading.Event()

    def stream():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(payload)
            done.wait(2.0)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        with open_transport(f"socket://127.0.0.1:{port}", timeout_s=1.0) as t:
            got = bytearray(t.read_some(1000))
            assert 1 <= len(got) <= 1000
            buf = bytearray(1 << 16)
            while len(got) < len(payload):
                n = t.read_into(buf)
                assert 1 <= n <= len(buf)
                got += buf[:n]
            assert bytes(got) == payload
    finally:
        done.set()
        thread.join(2.0)
        listener.close()


def test_loop_url_and_serial_options():
    with open_transport("loop://", name="loop", timeout_s=T, baudrate=115200, rtscts=True,
                        connect_timeout_s=3.0) as t:   # a TCP-only option is dropped for serial
        assert isinstance(t, SerialTransport)
        assert t._port.baudrate == 115200 and t._port.rtscts
        t.write(b"\x01\x12\x00\x03")
        assert t.read_exact(4) == b"\x01\x12\x00\x03"
        with pytest.raises(DeviceTimeout, match="short read: 0 of 1"):
            t.read_exact(1)


def test_unknown_serial_option_fails_loudly():
    with pytest.raises(TypeError, match="baudrat"):
        open_transport("loop://", baudrat=9600)


def test_missing_serial_port_names_device_and_path(tmp_path):
    path = tmp_path / "ttyUSB9"
    with pytest.raises(DeviceDisconnected, match=rf"dicon: cannot open {path}"):
        open_transport(str(path), name="dicon", timeout_s=T)


def test_pty_round_trip_and_exclusive_lock(echo_pty):
    with open_transport(echo_pty.path, name="pty", timeout_s=T, baudrate=9600) as t:
        t.write(b"ping\r\n")
        assert t.read_until(b"\n") == b"echo:ping\n"
        with pytest.raises(DeviceDisconnected, match="cannot open"):
            open_transport(echo_pty.path, name="second", timeout_s=T)


def test_pty_unplug_and_replug_under_the_same_path(echo_pty):
    t = open_transport(echo_pty.path, timeout_s=T)
    try:
        echo_pty.unplug()
        with pytest.raises(DeviceDisconnected):
            t.write(b"x\n")
            t.read_until(b"\n")
        with pytest.raises(DeviceDisconnected):
            t.reopen()
        echo_pty.replug()
        t.reopen()
        t.write(b"back\n")
        assert t.read_until(b"\n") == b"echo:back\n"
    finally:
        t.close()


def test_visa_socket_resource_via_pyvisa_py(echo_tcp):
    with open_transport(echo_tcp.visa_resource + "@py", name="visa", timeout_s=T) as t:
        assert isinstance(t, VisaTransport)
        t.write(b"*IDN?\n")
        assert t.read_until(b"\n") == b"echo:*IDN?\n"
        t.write(b"mute\n")
        with pytest.raises(DeviceTimeout, match="visa"):
            t.read_until(b"\n")


def test_visa_missing_resource_is_disconnected():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceDisconnected, match=f"TCPIP::127.0.0.1::{port}::SOCKET"):
        open_transport(f"TCPIP::127.0.0.1::{port}::SOCKET", name="pc", timeout_s=T)


def test_traffic_log_can_be_switched_off(echo_tcp, caplog):
    caplog.set_level(logging.DEBUG, logger="qkd.drivers.traffic")
    with open_transport(echo_tcp.url, name="loud", timeout_s=T) as t:
        t.write(b"visible\n")
        t.read_until(b"\n")
    with open_transport(echo_tcp.url, name="quiet", timeout_s=T, log_traffic=False) as t:
        t.write(b"secret\n")
        t.read_until(b"\n")
    text = caplog.text
    assert "loud > b'visible\\n'" in text and "loud < b'echo:visible\\n'" in text
    assert "secret" not in text and "quiet" not in text


@pytest.mark.parametrize("url,option,expected", [
    ("TCPIP::h::5025::SOCKET", None, ("TCPIP::h::5025::SOCKET", "@py")),
    ("TCPIP::h::5025::SOCKET@py", None, ("TCPIP::h::5025::SOCKET", "@py")),
    ("ASRL1::INSTR@sim", None, ("ASRL1::INSTR", "@sim")),
    ("ASRL1::INSTR@/etc/qkd/dev.yaml@sim", None, ("ASRL1::INSTR", "/etc/qkd/dev.yaml@sim")),
    ("ASRL1::INSTR", "sim", ("ASRL1::INSTR", "@sim")),
    ("ASRL1::INSTR@py", "dev.yaml@sim", ("ASRL1::INSTR", "dev.yaml@sim")),
])
def test_visa_backend_suffix_and_option(url, option, expected):
    from drivers.transport.visa import split_backend
    assert split_backend(url, option) == expected


def test_visa_sim_backend_with_pyvisa_sim_default_devices():
    # pyvisa-sim's bundled default.yaml: device 1 answers "?IDN" (CR LF) on ASRL1::INSTR
    with open_transport("ASRL1::INSTR@sim", name="simdev", timeout_s=T,
                        read_termination="\n") as t:
        t.write(b"?IDN\r\n")
        assert t.read_until(b"\n") == b"LSG Serial #1234\n"


def test_visa_sim_backend_from_a_yaml_path(tmp_path):
    spec = tmp_path / "dev.yaml"
    spec.write_text('spec: "1.1"\ndevices:\n  d:\n    eom:\n      ASRL INSTR:\n'
                    '        q: "\\n"\n        r: "\\n"\n    dialogues:\n'
                    '      - q: "PING?"\n        r: "PONG"\n'
                    'resources:\n  ASRL7::INSTR:\n    device: d\n')
    with open_transport(f"ASRL7::INSTR@{spec}@sim", timeout_s=T) as t:
        t.write(b"PING?\n")
        assert t.read_until(b"\n") == b"PONG\n"


def test_unknown_tcp_option_fails_loudly(echo_tcp):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['nodelay'\] for a TCP device"):
        open_transport(echo_tcp.url, nodelay=True)
    # a serial-only model default is dropped for TCP, not refused
    open_transport(echo_tcp.url, baudrate=115200, rtscts=True, timeout_s=T).close()


def test_visa_reset_input_works_on_a_backend_without_flush():
    with open_transport("ASRL1::INSTR@sim", timeout_s=T) as t:
        t.write(b"?IDN\r\n")
        time.sleep(0.01)
        t.reset_input()                        # drops the unread answer
        with pytest.raises(DeviceTimeout):
            t.read_until(b"\n", timeout_s=0.05)
        t.write(b"?IDN\r\n")
        assert t.read_until(b"\n") == b"LSG Serial #1234\n"

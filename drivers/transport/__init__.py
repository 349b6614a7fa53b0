"""Open a byte transport from a device URL; drivers never see which kind they got.

- ``socket://host:port`` -> raw TCP (``TcpTransport``, the fast path the board streams through)
- VISA resources ``TCPIP::…``, ``ASRL…``, ``USB…``, ``GPIB…`` (optional ``@py``/``@sim``/
  ``@file.yaml@sim`` suffix) -> pyvisa (``VisaTransport``)
- anything else -> pyserial (``/dev/ttyUSB0``, a pty path, ``loop://``, ``rfc2217://host:port``)

``options`` carry per-model defaults supplied by drivers (baudrate, rtscts, terminations …) and
``log_traffic=False`` for devices that carry key-related material.
"""

from __future__ import annotations

from drivers.errors import InvalidDeviceUrl
from drivers.transport.base import Transport
from drivers.transport.buffered import BufferedTransport, traffic_log
from drivers.transport.serial_port import SERIAL_OPTIONS, SerialTransport
from drivers.transport.tcp import TcpTransport, parse_socket_url
from drivers.transport.urls import ANY_FORM, check_serial_url
from drivers.transport.visa import VisaTransport, check_visa_resource, is_visa_resource

__all__ = ["Transport", "BufferedTransport", "TcpTransport", "SerialTransport", "VisaTransport",
           "open_transport", "transport_kind", "check_url", "parse_socket_url", "traffic_log"]

# Options that only make sense for one kind of transport are dropped silently for the others,
# so a driver can state its model defaults once (e.g. a baud rate) and still run over TCP.
_TCP_OPTIONS = frozenset({"connect_timeout_s", "recv_buffer_bytes"})
_VISA_OPTIONS = frozenset({"visa_backend", "read_termination", "write_termination"})
_COMMON = frozenset({"log_traffic"})


def transport_kind(url: str) -> str:
    """``"tcp"``, ``"visa"`` or ``"serial"``: which transport ``open_transport`` picks."""
    if url.startswith("socket://"):
        return "tcp"
    if is_visa_resource(url):
        return "visa"
    return "serial"


def check_url(url) -> str:
    """The transport kind of ``url``, or InvalidDeviceUrl naming it and the forms accepted."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidDeviceUrl(str(url), ANY_FORM, "empty")
    kind = transport_kind(url)
    if kind == "tcp":
        parse_socket_url(url)
    elif kind == "visa":
        check_visa_resource(url)
    else:
        check_serial_url(url)
    return kind


def open_transport(url: str, *, name: str | None = None, timeout_s: float = 1.0,
                   **options) -> Transport:
    """Open the transport for ``url``; DeviceDisconnected names the device and URL on failure."""
    kind = check_url(url)
    if kind == "tcp":
        passed = _without(options, SERIAL_OPTIONS | _VISA_OPTIONS)
        unknown = set(passed) - _TCP_OPTIONS - _COMMON
        if unknown:
            raise TypeError(f"{name or url}: unknown option(s) {sorted(unknown)} for a TCP "
                            f"device; accepted: {sorted(_TCP_OPTIONS | _COMMON)}")
        return TcpTransport(url, name=name, timeout_s=timeout_s, **passed)
    if kind == "visa":
        # VISA resources take their own attributes too (baud_rate …): pass through what
        # is not a serial-only option.
        passed = {k: v for k, v in options.items() if k not in SERIAL_OPTIONS | _TCP_OPTIONS}
        if url.upper().startswith("ASRL") and "baudrate" in options:
            passed.setdefault("baud_rate", options["baudrate"])   # VISA's name for it
        return VisaTransport(url, name=name, timeout_s=timeout_s, **passed)
    return SerialTransport(url, name=name, timeout_s=timeout_s,
                           **_without(options, _TCP_OPTIONS | _VISA_OPTIONS))


def _without(options: dict, other_kinds: frozenset) -> dict:
    """Drop the options that belong to other transport kinds; unknown ones still fail loudly."""
    return {k: v for k, v in options.items() if k not in other_kinds}

"""Which device URLs each transport accepts, checked before anything is opened.

A malformed URL must end in one line that names it and the form expected, never in a library's
traceback or a misleading socket error (pyvisa-py answers ``TCPIP::h::99999::SOCKET`` with a
bare Exception and ``TCPIP::garbage`` with "Bad file descriptor").
"""

from __future__ import annotations

import re

from drivers.errors import InvalidDeviceUrl

SOCKET_FORM = "socket://host:port with port 1..65535"
VISA_FORMS = ("TCPIP[n]::host::port::SOCKET, TCPIP[n]::host[::device]::INSTR, "
              "ASRL<n or /dev/path>::INSTR, GPIB[n]::address[::secondary]::INSTR or "
              "USB[n]::vendor::product::serial[::interface]::INSTR|RAW, optionally followed by "
              "@py, @sim or @/path/devices.yaml@sim")
SERIAL_FORMS = ("a serial device path (/dev/ttyUSB0, COM3) or a pyserial URL "
                "(loop://, rfc2217://host:port, spy://…, alt://…, hwgrep://…, cp2110://…)")
ANY_FORM = f"{SOCKET_FORM}, a VISA resource ({VISA_FORMS}) or {SERIAL_FORMS}"

PYSERIAL_SCHEMES = frozenset({"loop", "rfc2217", "spy", "alt", "hwgrep", "cp2110"})

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-_]*[A-Za-z0-9])?)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_WINDOWS_PORT = re.compile(r"^COM[1-9][0-9]*$", re.IGNORECASE)


def check_host_port(url: str, hostport: str, form: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), or InvalidDeviceUrl naming ``url`` and ``form``."""
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not host:
        raise InvalidDeviceUrl(url, form, "no host:port")
    if not _HOST.match(host):
        raise InvalidDeviceUrl(url, form, f"host {host!r} is not a host name or address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidDeviceUrl(url, form, f"port {port_text!r} is not in 1..65535")
    return host.strip("[]"), int(port_text)


def check_serial_url(url: str) -> None:
    """A device path, COMn, or a URL of one of pyserial's handlers (rfc2217 with host:port)."""
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidDeviceUrl(url, SERIAL_FORMS, "contains white space or control characters")
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name not in PYSERIAL_SCHEMES:
            raise InvalidDeviceUrl(url, ANY_FORM, f"unknown scheme {name!r}")
        if name == "rfc2217":
            rest = url[len(scheme.group(0)):].split("?", 1)[0].split("/", 1)[0]
            check_host_port(url, rest, "rfc2217://host:port with port 1..65535")
        return
    if url.startswith("/") or _WINDOWS_PORT.match(url):
        return
    raise InvalidDeviceUrl(url, ANY_FORM, "neither a URL nor an absolute device path")

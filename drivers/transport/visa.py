"""pyvisa-backed transport for VISA resource strings (``TCPIP::host::port::SOCKET``, ``ASRL…``,
``USB…``, ``GPIB…``).

The backend is chosen by a suffix on the resource (``…@py`` pyvisa-py, ``…@sim`` pyvisa-sim's
default YAML, ``…@/path/devices.yaml@sim``) or the ``visa_backend`` option; the default is
pyvisa-py, which needs no vendor library. VISA timeouts and I/O errors are mapped to the
project's DeviceTimeout / DeviceDisconnected.
"""

from __future__ import annotations

import os
import re
import socket
import threading

import pyvisa
from pyvisa import constants, rname

from drivers.errors import DeviceDisconnected, DeviceTimeout, InvalidDeviceUrl
from drivers.transport.buffered import BufferedTransport
from drivers.transport.urls import VISA_FORMS, check_host_port

DEFAULT_BACKEND = "@py"

_VISA_RESOURCE = re.compile(r"^((TCPIP|USB|GPIB|VXI|PXI)\d*|ASRL[^:]*)::", re.IGNORECASE)

_managers: dict[str, pyvisa.ResourceManager] = {}
_managers_lock = threading.Lock()


def is_visa_resource(url: str) -> bool:
    return bool(_VISA_RESOURCE.match(url))


_BACKEND = re.compile(r"^@(py|sim|ivi)$|^@.+\.ya?ml@sim$", re.IGNORECASE)
_GPIB_ADDRESS = range(0, 31)
_ASRL = re.compile(r"^ASRL(\d+|/\S+)::INSTR$", re.IGNORECASE)


def check_visa_resource(url: str) -> None:
    """InvalidDeviceUrl unless ``url`` is a VISA resource this project can open.

    Stricter than VISA itself where a loose form only fails later with a misleading error: a
    TCPIP resource must end in ``::SOCKET`` or ``::INSTR``, ports and GPIB addresses must be in
    range, and a backend suffix must name a backend.
    """
    resource, sep, suffix = url.partition("@")
    if sep and not _BACKEND.match("@" + suffix):
        raise InvalidDeviceUrl(url, VISA_FORMS, f"unknown VISA backend '@{suffix}'")
    try:
        parsed = rname.parse_resource_name(resource)
    except (rname.InvalidResourceName, ValueError) as exc:
        raise InvalidDeviceUrl(url, VISA_FORMS, str(exc).split(". ")[0]) from None
    kind = type(parsed).__name__
    if kind.startswith("TCPIP"):
        if not resource.upper().endswith(("::SOCKET", "::INSTR")):
            raise InvalidDeviceUrl(url, VISA_FORMS, "a TCPIP resource ends in ::SOCKET or ::INSTR")
        port = getattr(parsed, "port", "1")
        check_host_port(url, f"{parsed.host_address}:{port}", VISA_FORMS)
    elif kind.startswith("ASRL") and not _ASRL.match(resource):
        raise InvalidDeviceUrl(url, VISA_FORMS, "ASRL needs a port number or a device path")
    elif kind.startswith("GPIB"):
        for field in ("primary_address", "secondary_address"):
            value = getattr(parsed, field, None)
            if value is not None and not (value.isdigit() and int(value) in _GPIB_ADDRESS):
                raise InvalidDeviceUrl(url, VISA_FORMS, f"GPIB {field} {value!r} is not 0..30")


def split_backend(url: str, backend: str | None = None) -> tuple[str, str]:
    """``"TCPIP::h::1::SOCKET@py"`` -> ``("TCPIP::h::1::SOCKET", "@py")``; option wins if given."""
    resource, sep, suffix = url.partition("@")
    if backend is not None:
        chosen = backend
    elif not sep:
        chosen = DEFAULT_BACKEND
    else:
        # "@py" / "@sim" name a backend; "@/path/devices.yaml@sim" names a pyvisa-sim file
        chosen = suffix if "@" in suffix else "@" + suffix
    if not chosen.startswith("@") and "@" not in chosen:
        chosen = "@" + chosen
    return resource, chosen


def resource_manager(backend: str) -> pyvisa.ResourceManager:
    """One ResourceManager per backend string, shared by all transports (they are costly)."""
    with _managers_lock:
        rm = _managers.get(backend)
        if rm is None:
            rm = _managers[backend] = pyvisa.ResourceManager(backend)
        return rm


def _raw_socket(resource) -> socket.socket | None:
    """The TCP socket under a pyvisa-py SOCKET session (None for other backends/resources)."""
    session = getattr(getattr(resource, "visalib", None), "sessions", {}).get(resource.session)
    sock = getattr(session, "interface", None)
    return sock if isinstance(sock, socket.socket) else None


def _peer_closed(resource) -> bool:
    """pyvisa-py reports a socket closed by the device as a timeout; peek at it instead."""
    sock = _raw_socket(resource)
    if sock is None:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _socket_error(resource) -> str | None:
    """pyvisa-py connects without waiting for the verdict: ask the socket whether it failed."""
    sock = _raw_socket(resource)
    if sock is None:
        return None
    try:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as exc:
        return str(exc)
    return os.strerror(code) if code else None


def _as_text(term: bytes | str | None) -> str | None:
    if term is None:
        return None
    return term.decode("ascii") if isinstance(term, bytes) else term


class VisaTransport(BufferedTransport):
    def __init__(self, url: str, *, name: str | None = None, timeout_s: float = 1.0,
                 log_traffic: bool = True, visa_backend: str | None = None,
                 read_termination: bytes | str | None = "\n",
                 write_termination: bytes | str | None = None, **resource_options):
        check_visa_resource(url)
        super().__init__(url, name=name, timeout_s=timeout_s, log_traffic=log_traffic)
        self.resource_name, self.backend = split_backend(url, visa_backend)
        # The read termination makes a VISA read return at end of line instead of waiting for
        # the count or the timeout; framing itself is still done by the base class.
        self.read_termination = _as_text(read_termination)
        # Drivers write complete messages (their terminator included), so none is appended.
        self.write_termination = _as_text(write_termination) or ""
        self._resource_options = resource_options
        self._resource = None
        self._open()

    def _open(self) -> None:
        try:
            rm = resource_manager(self.backend)
            res = rm.open_resource(self.resource_name, **self._resource_options)
        except Exception as exc:  # noqa: BLE001 - pyvisa-py raises bare Exception, too
            # (the resource string was checked already: this is the device or the backend)
            raise DeviceDisconnected(self.name, None,
                                     f"cannot open {self.resource_name} ({self.backend}): {exc}"
                                     ) from exc
        failure = _socket_error(res)
        if failure:
            res.close()
            raise DeviceDisconnected(self.name, None,
                                     f"cannot open {self.resource_name} ({self.backend}): "
                                     f"{failure}")
        res.read_termination = self.read_termination
        res.write_termination = self.write_termination
        self._resource = res
        self._timeout_ms: float | None = None
        self._rx.clear()

    def _live(self):
        if self._resource is None:
            raise DeviceDisconnected(self.name, None, f"{self.resource_name} is closed")
        return self._resource

    def _fill(self, max_bytes: int, timeout_s: float) -> bytes:
        res = self._live()
        timeout_ms = max(1, int(round(timeout_s * 1000)))
        if timeout_ms != self._timeout_ms:
            res.timeout = timeout_ms
            self._timeout_ms = timeout_ms
        if _peer_closed(res):
            self._drop()
            raise DeviceDisconnected(self.name, None, f"{self.resource_name} closed the connection")
        try:
            data, _status = res.visalib.read(res.session, max_bytes)
        except pyvisa.VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                return b""
            self._drop()
            raise DeviceDisconnected(self.name, None,
                                     f"{self.resource_name} read failed: {exc}") from exc
        except (OSError, pyvisa.Error) as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None,
                                     f"{self.resource_name} read failed: {exc}") from exc
        return bytes(data)

    def _send(self, data: bytes) -> None:
        res = self._live()
        try:
            res.write_raw(data)
        except pyvisa.VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                raise DeviceTimeout(self.name, None,
                                    f"{self.resource_name} write timed out") from exc
            self._drop()
            raise DeviceDisconnected(self.name, None,
                                     f"{self.resource_name} write failed: {exc}") from exc
        except (OSError, pyvisa.Error) as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None,
                                     f"{self.resource_name} write failed: {exc}") from exc

    def _discard_pending(self) -> None:
        # Not every backend implements viFlush (pyvisa-sim does not), and a VISA read cannot
        # poll without blocking at least 1 ms: short reads drain what already arrived.
        while self._fill(65536, 0.001):
            pass

    def _drop(self) -> None:
        if self._resource is not None:
            try:
                self._resource.close()
            except (pyvisa.Error, OSError):
                pass
            self._resource = None

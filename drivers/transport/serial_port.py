"""pyserial-backed transport: local serial ports and pyserial URL handlers.

Real ports (``/dev/ttyUSB0``, a pty slave, ``COM3``) are opened with ``exclusive=True`` so a
second process cannot interleave bytes with ours. pyserial returns short reads silently on
timeout; here a short read becomes DeviceTimeout (``read_exact``/``read_until`` in the base).
"""

from __future__ import annotations

import serial

try:
    from termios import error as _TermiosError
except ImportError:  # not a POSIX system
    class _TermiosError(Exception):
        pass

from drivers.errors import DeviceDisconnected
from drivers.transport.buffered import BufferedTransport

# Options passed straight to pyserial (anything else is a programming error and is refused).
SERIAL_OPTIONS = frozenset({"baudrate", "bytesize", "parity", "stopbits", "rtscts", "dsrdtr",
                            "xonxoff", "write_timeout", "inter_byte_timeout", "exclusive"})


# What a vanished port raises, depending on which call notices first.
_PORT_ERRORS = (serial.SerialException, OSError, _TermiosError)


def is_local_port(url: str) -> bool:
    """True for a device path (locking applies); False for ``loop://``, ``rfc2217://`` …"""
    return "://" not in url


class SerialTransport(BufferedTransport):
    def __init__(self, url: str, *, name: str | None = None, timeout_s: float = 1.0,
                 log_traffic: bool = True, **serial_options):
        super().__init__(url, name=name, timeout_s=timeout_s, log_traffic=log_traffic)
        unknown = set(serial_options) - SERIAL_OPTIONS
        if unknown:
            raise TypeError(f"{self.name}: unknown serial option(s) {sorted(unknown)}; "
                            f"accepted: {sorted(SERIAL_OPTIONS)}")
        if is_local_port(url):
            serial_options.setdefault("exclusive", True)
        else:
            serial_options.pop("exclusive", None)
        self._options = serial_options
        self._port: serial.SerialBase | None = None
        self._open()

    def _open(self) -> None:
        try:
            self._port = serial.serial_for_url(self.url, timeout=self.timeout_s,
                                               **self._options)
        except (*_PORT_ERRORS, ValueError) as exc:
            raise DeviceDisconnected(self.name, None, f"cannot open {self.url}: {exc}") from exc
        self._rx.clear()

    def _live_port(self) -> serial.SerialBase:
        if self._port is None or not self._port.is_open:
            raise DeviceDisconnected(self.name, None, f"port {self.url} is closed")
        return self._port

    def _fill(self, max_bytes: int, timeout_s: float) -> bytes:
        port = self._live_port()
        try:
            timeout_s = max(0.0, timeout_s)
            if port.timeout != timeout_s:   # pyserial re-runs tcsetattr on every change
                port.timeout = timeout_s
            first = port.read(1)
            if not first:
                return b""
            waiting = min(port.in_waiting, max_bytes - 1)
            return first + (port.read(waiting) if waiting > 0 else b"")
        except _PORT_ERRORS as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"port {self.url} lost: {exc}") from exc

    def _send(self, data: bytes) -> None:
        port = self._live_port()
        try:
            port.write(data)
            port.flush()
        except _PORT_ERRORS as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"write to {self.url} failed: {exc}") \
                from exc

    def reset_input(self) -> None:
        self._rx.clear()
        port = self._live_port()
        try:
            port.reset_input_buffer()
        except _PORT_ERRORS as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"port {self.url} lost: {exc}") from exc

    def _drop(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except _PORT_ERRORS:
                pass
            self._port = None

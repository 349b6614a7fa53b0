"""Deadline and receive-buffer bookkeeping shared by every concrete transport.

A concrete transport only has to say how to wait for "some bytes" (``_fill``); the framing reads
(``read_exact``, ``read_until``), the short-read-is-a-timeout rule and the traffic log live here
once. Bytes that arrived before a timeout stay buffered (nothing is lost on a stream); a driver
that wants a clean slate calls ``reset_input`` before its next command.
"""

from __future__ import annotations

import abc
import logging
import time

from drivers.errors import DeviceTimeout
from drivers.transport.base import Transport

traffic_log = logging.getLogger("qkd.drivers.traffic")

_LOG_PREVIEW_BYTES = 256


class BufferedTransport(Transport):
    """Transport with a receive buffer; subclasses implement ``_fill``, ``_send`` and open/close."""

    def __init__(self, url: str, *, name: str | None = None, timeout_s: float = 1.0,
                 log_traffic: bool = True):
        self.url = url
        self.name = name or url
        self.timeout_s = float(timeout_s)
        # A driver that carries key-related material switches this off for its transport.
        self.log_traffic = log_traffic
        self._rx = bytearray()

    # -- what a concrete transport provides ---------------------------------------------------

    @abc.abstractmethod
    def _fill(self, max_bytes: int, timeout_s: float) -> bytes:
        """Wait up to ``timeout_s`` for 1..max_bytes new bytes; b"" on timeout."""

    @abc.abstractmethod
    def _open(self) -> None:
        """Open the underlying port, socket or VISA session (raises DeviceDisconnected)."""

    @abc.abstractmethod
    def _drop(self) -> None:
        """Release the underlying port, socket or session, ignoring errors from a dead one."""

    def close(self) -> None:
        self._drop()
        self._rx.clear()

    def reopen(self) -> None:
        self.close()
        self._open()

    @abc.abstractmethod
    def _send(self, data: bytes) -> None:
        """Send all of ``data`` or raise DeviceDisconnected."""

    # -- the Transport interface --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._log(">", data)
        self._send(bytes(data))

    def read_some(self, max_bytes: int, timeout_s: float | None = None) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if self._rx:
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
        else:
            data = self._fill(max_bytes, self._timeout(timeout_s))
            if not data:
                raise DeviceTimeout(self.name, None,
                                    f"no data within {self._timeout(timeout_s):g} s")
        self._log("<", data)
        return data

    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        deadline = time.monotonic() + self._timeout(timeout_s)
        while len(self._rx) < n:
            # past the deadline this is still one non-blocking poll: bytes that already
            # arrived are never reported as a timeout
            chunk = self._fill(n - len(self._rx), max(0.0, deadline - time.monotonic()))
            if not chunk:
                raise DeviceTimeout(self.name, None,
                                    f"short read: {len(self._rx)} of {n} bytes within "
                                    f"{self._timeout(timeout_s):g} s")
            self._rx += chunk
        data = bytes(self._rx[:n])
        del self._rx[:n]
        self._log("<", data)
        return data

    def read_until(self, terminator: bytes, timeout_s: float | None = None,
                   max_bytes: int = 65536) -> bytes:
        deadline = time.monotonic() + self._timeout(timeout_s)
        searched = 0
        while True:
            at = self._rx.find(terminator, max(0, searched - len(terminator) + 1))
            if at >= 0:
                end = at + len(terminator)
                data = bytes(self._rx[:end])
                del self._rx[:end]
                self._log("<", data)
                return data
            searched = len(self._rx)
            if searched > max_bytes:
                raise DeviceTimeout(self.name, None,
                                    f"no terminator {terminator!r} within {max_bytes} bytes")
            chunk = self._fill(4096, max(0.0, deadline - time.monotonic()))
            if not chunk:
                raise DeviceTimeout(self.name, None,
                                    f"no terminator {terminator!r} within "
                                    f"{self._timeout(timeout_s):g} s ({len(self._rx)} bytes "
                                    f"pending)")
            self._rx += chunk

    def reset_input(self) -> None:
        self._rx.clear()
        self._discard_pending()

    def _discard_pending(self) -> None:
        """Drop bytes already waiting in the OS/library buffers (without blocking)."""
        while self._fill(65536, 0.0):
            pass

    # -- helpers ------------------------------------------------------------------------------

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else float(timeout_s)

    def _log(self, direction: str, data: bytes) -> None:
        if self.log_traffic and traffic_log.isEnabledFor(logging.DEBUG):
            preview = data[:_LOG_PREVIEW_BYTES]
            more = f" (+{len(data) - len(preview)} bytes)" if len(data) > len(preview) else ""
            traffic_log.debug("%s %s %r%s", self.name, direction, preview, more)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r})"

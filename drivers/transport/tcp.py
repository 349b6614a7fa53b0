"""Raw TCP byte stream for ``socket://host:port`` devices.

This is the board's path (its event stream runs at 100+ MB/s), so it bypasses pyserial's
socket emulation: TCP_NODELAY for short command/replies, a large kernel receive buffer, and
``recv_into`` a preallocated scratch buffer so a bulk read costs one copy.
"""

from __future__ import annotations

import socket

from drivers.errors import DeviceDisconnected, DeviceTimeout, InvalidDeviceUrl
from drivers.transport.buffered import BufferedTransport
from drivers.transport.urls import SOCKET_FORM, check_host_port

DEFAULT_RECV_BUFFER_BYTES = 4 << 20


def parse_socket_url(url: str) -> tuple[str, int]:
    """``socket://host:port`` -> (host, port); InvalidDeviceUrl (a ValueError) naming the URL."""
    if not url.startswith("socket://"):
        raise InvalidDeviceUrl(url, SOCKET_FORM, "not a socket:// URL")
    rest = url[len("socket://"):]
    if rest.split("?", 1)[0].rstrip("/").count("/"):
        raise InvalidDeviceUrl(url, SOCKET_FORM, "a path after host:port")
    return check_host_port(url, rest.split("?", 1)[0].rstrip("/"), SOCKET_FORM)


class TcpTransport(BufferedTransport):
    def __init__(self, url: str, *, name: str | None = None, timeout_s: float = 1.0,
                 log_traffic: bool = True, connect_timeout_s: float | None = None,
                 recv_buffer_bytes: int = DEFAULT_RECV_BUFFER_BYTES):
        super().__init__(url, name=name, timeout_s=timeout_s, log_traffic=log_traffic)
        self.host, self.port = parse_socket_url(url)
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self.recv_buffer_bytes = int(recv_buffer_bytes)
        self._scratch = bytearray(self.recv_buffer_bytes)
        self._view = memoryview(self._scratch)
        self._sock: socket.socket | None = None
        self._sock_timeout: float | None = -1.0
        self._open()

    def _open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=self.connect_timeout_s)
        except OSError as exc:
            raise DeviceDisconnected(self.name, None, f"cannot connect to {self.url}: {exc}") \
                from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer_bytes)
        except OSError:
            pass  # the kernel caps it; the default still works, only slower
        self._sock = sock
        self._sock_timeout = -1.0
        self._rx.clear()

    def _live_socket(self) -> socket.socket:
        if self._sock is None:
            raise DeviceDisconnected(self.name, None, f"connection to {self.url} is closed")
        return self._sock

    def _set_timeout(self, sock: socket.socket, timeout_s: float) -> None:
        timeout_s = max(0.0, timeout_s)
        if timeout_s != self._sock_timeout:
            sock.settimeout(timeout_s)
            self._sock_timeout = timeout_s

    def _fill(self, max_bytes: int, timeout_s: float) -> bytes:
        n = self._recv_into(self._view[:min(max_bytes, len(self._scratch))], timeout_s)
        return bytes(self._view[:n])

    def _recv_into(self, view: memoryview, timeout_s: float) -> int:
        sock = self._live_socket()
        self._set_timeout(sock, timeout_s)
        try:
            n = sock.recv_into(view)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"connection to {self.url} lost: {exc}") \
                from exc
        if n == 0:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"{self.url} closed the connection")
        return n

    def read_into(self, buffer, timeout_s: float | None = None) -> int:
        """Receive straight into ``buffer`` (a writable bytes-like); returns the count (>= 1).

        The zero-copy variant of ``read_some`` for bulk streams; raises DeviceTimeout if
        nothing arrives within the timeout.
        """
        view = memoryview(buffer).cast("B")
        if self._rx:
            n = min(len(view), len(self._rx))
            view[:n] = self._rx[:n]
            del self._rx[:n]
            return n
        n = self._recv_into(view, self._timeout(timeout_s))
        if n == 0:
            raise DeviceTimeout(self.name, None, f"no data within {self._timeout(timeout_s):g} s")
        if self.log_traffic:
            self._log("<", bytes(view[:min(n, 256)]))
        return n

    def _send(self, data: bytes) -> None:
        sock = self._live_socket()
        self._set_timeout(sock, max(self.timeout_s, 0.001))
        try:
            sock.sendall(data)
        except OSError as exc:
            self._drop()
            raise DeviceDisconnected(self.name, None, f"send to {self.url} failed: {exc}") \
                from exc

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

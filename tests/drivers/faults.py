"""Fault injection for any TCP device: a man-in-the-middle proxy on 127.0.0.1.

Put it between a driver and a device that has no fault knobs of its own (the board simulator, a
real instrument behind a bridge) and damage what the device sends back:

    with FaultProxy(device_url) as proxy:
        drv = SomeDriver.from_url(proxy.url)
        proxy.faults.garbage = True      # or silent, delay_s, close_mid_reply, cut_next_replies
        proxy.unplug(); proxy.replug()       # the device disappears and comes back

The knobs are the simulated instruments' own (``sim_backend.instruments.base.FaultKnobs``) and
act on each chunk the device sends, so a line may arrive split the way TCP delivered it.
"""

from __future__ import annotations

import socket
import threading

from drivers.transport import parse_socket_url
from sim_backend.instruments.base import GARBAGE, FaultKnobs, deliver, hang_up


class FaultProxy:
    def __init__(self, upstream_url: str, host: str = "127.0.0.1"):
        self.upstream = parse_socket_url(upstream_url)
        self.host = host
        self.faults = FaultKnobs()
        self._port = 0
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self.chunks_from_device = 0
        self._listen()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self._port}"

    @property
    def visa_resource(self) -> str:
        return f"TCPIP::{self.host}::{self._port}::SOCKET"

    def garble(self, reply: bytes) -> bytes:
        return GARBAGE + (b"\n" if reply.endswith(b"\n") else b"")

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(8)
        self._port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                device = socket.create_connection(self.upstream, timeout=1.0)
                device.settimeout(None)
            except OSError:
                client.close()     # the device is down: the driver sees the connection drop
                continue
            pair = (client, device)
            with self._lock:
                alive = listener is self._listener     # not unplugged meanwhile
                if alive:
                    self._pairs.add(pair)
            if not alive:
                self._cut(pair)
                return
            threading.Thread(target=self._pump_to_device, args=(pair,), daemon=True).start()
            threading.Thread(target=self._pump_to_client, args=(pair,), daemon=True).start()

    def _pump_to_device(self, pair) -> None:
        client, device = pair
        try:
            while data := client.recv(65536):
                device.sendall(data)
        except OSError:
            pass
        finally:
            self._cut(pair)

    def _pump_to_client(self, pair) -> None:
        client, device = pair
        try:
            while data := device.recv(65536):
                self.chunks_from_device += 1
                if not deliver(self, data, client.sendall, lambda: self._cut(pair)):
                    return
        except OSError:
            pass
        finally:
            self._cut(pair)

    def _cut(self, pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            hang_up(sock)

    def drop_connections(self) -> None:
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._cut(pair)

    def unplug(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            hang_up(listener)
        self.drop_connections()

    def replug(self) -> None:
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.unplug()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

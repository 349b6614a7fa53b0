"""Fault and delay proxy for the peer channel: a TCP man-in-the-middle on 127.0.0.1.

Put it between the connecting node and the binding node (tests and benchmarks only):

    with PeerProxy(server_port) as proxy:                # client connects to proxy.endpoint
        proxy.delay_s = 0.005                            # one way, each direction: 10 ms RTT
        proxy.tamper_next("to_server")                   # flip a bit in the next chunk
        proxy.replay_next("to_client")                   # send the next chunk twice
        proxy.drop_connections()                         # the network drops, comes back
        proxy.unplug(); proxy.replug()                   # the path is down for a while

Unlike ``tests.drivers.faults.FaultProxy`` (whose delay holds each reply back in turn), each
direction here is a delay line: a reader stamps every chunk with its due time and a writer
sends it then, so latency is added without limiting throughput, as on a long fibre. Tampering
and replaying act below CurveZMQ, whose authenticated encryption must catch them.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

from sim_backend.instruments.base import hang_up

DIRECTIONS = ("to_server", "to_client")


class PeerProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.host = host
        self.delay_s = 0.0
        self._tamper = {d: 0 for d in DIRECTIONS}
        self._replay = {d: 0 for d in DIRECTIONS}
        self.bytes_forwarded = {d: 0 for d in DIRECTIONS}
        self.connections = 0
        self._port = 0
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._listen()

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self._port}"

    def tamper_next(self, direction: str, n: int = 1) -> None:
        self._tamper[direction] += n

    def replay_next(self, direction: str, n: int = 1) -> None:
        self._replay[direction] += n

    # -- plumbing ------------------------------------------------------------------------------

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
                server = socket.create_connection(self.upstream, timeout=1.0)
                server.settimeout(None)
            except OSError:
                hang_up(client)            # the server is down: the client sees a drop
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, server)
            with self._lock:
                alive = listener is self._listener
                if alive:
                    self._pairs.add(pair)
                    self.connections += 1
            if not alive:
                self._cut(pair)
                return
            self._pipe(pair, client, server, "to_server")
            self._pipe(pair, server, client, "to_client")

    def _pipe(self, pair, src: socket.socket, dst: socket.socket, direction: str) -> None:
        line: queue.SimpleQueue = queue.SimpleQueue()

        def read():
            try:
                while data := src.recv(65536):
                    line.put((time.monotonic() + self.delay_s, data))
            except OSError:
                pass
            line.put(None)

        def write():
            try:
                while (item := line.get()) is not None:
                    due, data = item
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if self._tamper[direction] > 0:
                        self._tamper[direction] -= 1
                        data = bytes([data[0] ^ 0x01]) + data[1:] if len(data) == 1 else \
                            data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x01]) \
                            + data[len(data) // 2 + 1:]
                    dst.sendall(data)
                    if self._replay[direction] > 0:
                        self._replay[direction] -= 1
                        dst.sendall(data)
                    self.bytes_forwarded[direction] += len(data)
            except OSError:
                pass
            self._cut(pair)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def _cut(self, pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            hang_up(sock)

    # -- faults of the path ----------------------------------------------------------------------

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

"""Simulated instruments served over real byte paths: TCP on 127.0.0.1 and pty pairs.

An instrument is a sans-I/O responder: ``respond(buffer)`` consumes the complete requests in a
connection's receive buffer and returns the reply bytes. Servers own the I/O:

- ``TcpServer``: one listening socket on 127.0.0.1 (port 0 = ephemeral), a thread per
  connection; ``url`` is ``socket://127.0.0.1:<port>``, ``visa_resource`` the VISA form.
- ``PtyServer``: a pty pair (os.openpty); the driver opens ``path`` as a serial port. ``path`` is
  a symlink (like /dev/serial/by-id) so an unplugged device comes back under the same name.

Fault knobs (``instrument.faults``) let tests make the device stop answering, answer garbage,
answer slowly or close the connection mid-reply; ``server.unplug()``/``replug()`` take the whole
device away and bring it back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import tempfile
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass

GARBAGE = b"\xa5#?\xff\xfegarbage"


@dataclass
class FaultKnobs:
    silent: bool = False            # requests are read but never answered
    garbage: bool = False           # every reply is replaced by bytes that parse as nothing
    delay_s: float = 0.0            # every reply is sent this late
    close_mid_reply: bool = False   # half a reply is sent, then the connection is dropped
    cut_next_replies: int = 0       # like close_mid_reply, for this many replies only

    def clear(self) -> None:
        self.silent = self.garbage = self.close_mid_reply = False
        self.delay_s = 0.0
        self.cut_next_replies = 0

    def take_cut(self) -> bool:
        """True if this reply is to be cut halfway (counts down the one-shot cuts)."""
        if self.close_mid_reply:
            return True
        if self.cut_next_replies > 0:
            self.cut_next_replies -= 1
            return True
        return False


class SimInstrument:
    """Base of simulated instruments; subclasses implement ``respond``."""

    def __init__(self) -> None:
        self.faults = FaultKnobs()
        self.lock = threading.RLock()

    def respond(self, buffer: bytearray) -> bytes:
        """Consume complete requests from ``buffer``; return the reply bytes (maybe b"")."""
        raise TypeError(f"{type(self).__name__} must implement respond()")

    def power_on(self) -> None:
        """Called when an unplugged device comes back: a model that forgets its state on a
        power cycle resets it here (so tests can see the driver re-apply its settings)."""

    def garble(self, reply: bytes) -> bytes:
        """What the device sends instead of ``reply`` when answering garbage."""
        return GARBAGE + (b"\n" if reply.endswith(b"\n") else b"")


class LineInstrument(SimInstrument):
    """A text instrument: one request per line (``\\n``, optional ``\\r``), replies as lines."""

    REPLY_TERMINATOR = b"\n"
    ENCODING = "ascii"
    HISTORY = 256

    def __init__(self) -> None:
        super().__init__()
        self.history: deque[str] = deque(maxlen=self.HISTORY)  # requests received, for tests

    def handle_line(self, line: str) -> str | list[str] | None:
        """Return the reply line(s) to one request, or None for a command with no reply."""
        raise TypeError(f"{type(self).__name__} must implement handle_line()")

    def respond(self, buffer: bytearray) -> bytes:
        out = bytearray()
        while (end := buffer.find(b"\n")) >= 0:
            raw = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[:end + 1]
            try:
                line = raw.decode(self.ENCODING).strip()
            except UnicodeDecodeError:
                line = None
            with self.lock:
                if line is None:
                    reply = self.undecodable(raw)
                else:
                    self.history.append(line)
                    reply = self.handle_line(line) if line else None
            if reply is None:
                continue
            for item in [reply] if isinstance(reply, str) else reply:
                out += item.encode(self.ENCODING, "replace") + self.REPLY_TERMINATOR
        return bytes(out)

    def undecodable(self, raw: bytes) -> str | list[str] | None:
        """Reply to a request that is not text (default: ignore it, as most devices do)."""
        return None


def deliver(instrument: SimInstrument, reply: bytes, send, drop) -> bool:
    """Send ``reply`` through ``send`` with the instrument's faults; False if it dropped."""
    faults = instrument.faults
    if not reply or faults.silent:
        return True
    if faults.delay_s > 0:
        time.sleep(faults.delay_s)
    if faults.garbage:
        reply = instrument.garble(reply)
    if faults.take_cut():
        send(reply[:max(1, len(reply) // 2)])
        drop()
        return False
    send(reply)
    return True


def hang_up(sock: socket.socket) -> None:
    """Shut a socket down both ways and close it; a peer that is already gone is no error."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpServer:
    """Serve ``instrument`` on 127.0.0.1; a thread per connection."""

    def __init__(self, instrument: SimInstrument, host: str = "127.0.0.1", port: int = 0):
        self.instrument = instrument
        self.host = host
        self._port = port
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closed = False
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

    @property
    def connection_count(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(8)
        self._port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                         name=f"sim-accept-{self._port}").start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed (unplug or close)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conns_lock:
                # accepted just as the device was unplugged: it must not survive the unplug
                alive = listener is self._listener
                if alive:
                    self._conns.add(conn)
            if not alive:
                self._drop(conn)
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"sim-conn-{self._port}").start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        try:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                reply = self.instrument.respond(buffer)
                try:
                    if not deliver(self.instrument, reply, conn.sendall,
                                   lambda: self._drop(conn)):
                        return
                except OSError:
                    return
        finally:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)
        hang_up(conn)

    def drop_connections(self) -> None:
        """Cut every open connection (the device stays reachable for new ones)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            self._drop(conn)

    def unplug(self) -> None:
        """The device disappears: connections cut, new ones refused."""
        with self._conns_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            hang_up(listener)
        self.drop_connections()

    def replug(self) -> None:
        """The device comes back on the same port (powered on afresh)."""
        if self._listener is None and not self._closed:
            self.instrument.power_on()
            self._listen()

    def close(self) -> None:
        self._closed = True
        self.unplug()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PtyServer:
    """Serve ``instrument`` on a pty pair; ``path`` is what a driver opens as a serial port."""

    POLL_S = 0.02

    def __init__(self, instrument: SimInstrument, link_name: str = "ttySIM0"):
        self.instrument = instrument
        self._dir = tempfile.mkdtemp(prefix="qkd-sim-pty-")
        self.path = os.path.join(self._dir, link_name)
        self._master: int | None = None
        self._slave: int | None = None
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._plug()

    @property
    def url(self) -> str:
        return self.path

    @property
    def slave_path(self) -> str | None:
        return os.ttyname(self._slave) if self._slave is not None else None

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)       # no echo, no line editing: the bytes pass as on a real UART
        tty.setraw(master)
        # Keep our own slave descriptor so the master never sees a hang-up while the driver
        # closes and reopens the port.
        self._master, self._slave = master, slave
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(master, self._stop),
                                        daemon=True, name=f"sim-pty-{os.path.basename(self.path)}")
        self._thread.start()

    def _serve(self, master: int, stop: threading.Event) -> None:
        buffer = bytearray()

        def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = os.write(master, view)
                view = view[n:]

        while not stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], self.POLL_S)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:   # no slave open right now: wait for one
                    time.sleep(self.POLL_S)
                    continue
                return
            if not data:
                continue
            buffer += data
            reply = self.instrument.respond(buffer)
            try:
                if not deliver(self.instrument, reply, send, self.unplug_async):
                    return
            except OSError:
                return

    def unplug_async(self) -> None:
        """Unplug from inside the serving thread (closing mid-reply)."""
        self._stop.set()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def unplug(self) -> None:
        """The cable is pulled: the driver's open port fails, the path disappears."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self._close_fds()

    def replug(self) -> None:
        """Plugged back in: a fresh pty behind the same path (powered on afresh)."""
        if self._master is None and not self._closed:
            self.instrument.power_on()
            self._plug()

    def close(self) -> None:
        self._closed = True
        self.unplug()
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

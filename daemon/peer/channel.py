"""The peer channel of one link: a CurveZMQ socket (asyncio) around a ``PeerSession``.

This module owns the I/O only; every protocol decision is in ``session`` and ``envelope``.
One DEALER socket per side: the ``bind`` side runs a ZAP authenticator, started before the
bind, that admits only the pinned peer public key; the ``connect`` side pins the server key
(``curve_serverkey``). libzmq reconnects by itself after the peer restarts or the network
drops; the socket monitor tells us when a connection completes its handshake, and we then send
our hello first (see ``PeerSession.hello``). Dead connections are found by ZMTP heartbeats.

Backpressure: received envelopes wait in a bounded queue; when the engine does not drain it,
the receive task stops reading, the socket's receive high-water mark fills, TCP pushes back
and the peer's ``send`` waits on its send high-water mark. A stall longer than the heartbeat
timeout also holds back the heartbeats, and the link is then taken for dead and reconnected
(reported as a disconnect): an engine must keep draining its channel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Collection

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from daemon.peer import session as ss
from daemon.peer.auth_keys import AuthKeyPool
from daemon.peer.envelope import Envelope
from daemon.peer.session import PeerEvent, PeerSession
from daemon.waiting import wait_at_most

log = logging.getLogger("qkd.peer")

ZAP_DOMAIN = "qkd-peer"
_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_MONITOR_STOPPED)
_FAILED_NAMES = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the server's ZAP (key not pinned)",
                 zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol or cryptographic error",
                 zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "connection closed during the handshake"}
LOG_REPEAT_S = 10.0     # the same event kind is logged at most once per this many seconds
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class PeerChannelError(Exception):
    """Misuse of the channel (wrong link id, not started, closed), stated in one line."""


class _PinnedKey:
    """ZAP credentials provider: only the one peer key this link was configured with."""

    def __init__(self, peer_public_key: bytes):
        self.peer_public_key = peer_public_key

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == ZAP_DOMAIN and key == self.peer_public_key


class PeerChannel:
    """Engine-facing API (asyncio): ``send``, ``recv``/``messages``, ``events``/``next_event``.

    ``pool`` is owned by the caller (it outlives restarts of the channel).
    """

    def __init__(self, *, link_id: int, pool: AuthKeyPool, mode: str, endpoint: str,
                 public_key: bytes, secret_key: bytes, peer_public_key: bytes,
                 allowed_types: Collection[int] | None = None, inbox_size: int = 4096,
                 events_size: int = 1024, hwm: int = 4096, heartbeat_s: float = 1.0,
                 heartbeat_timeout_s: float = 10.0, reconnect_s: float = 0.05,
                 reconnect_max_s: float = 1.0, handshake_timeout_s: float = 5.0,
                 alarm_threshold: int = 3, alarm_window_s: float = 60.0):
        if mode not in ("bind", "connect"):
            raise PeerChannelError(f"channel mode {mode!r} is not 'bind' or 'connect'")
        self.link_id = link_id
        self.mode = mode
        self.endpoint = endpoint
        self._public_key = public_key
        self._secret_key = secret_key
        self.peer_public_key = peer_public_key
        self.session = PeerSession(pool, link_id, allowed_types=allowed_types,
                                   alarm_threshold=alarm_threshold,
                                   alarm_window_s=alarm_window_s)
        self._opts = dict(hwm=hwm, heartbeat_s=heartbeat_s,
                          heartbeat_timeout_s=heartbeat_timeout_s, reconnect_s=reconnect_s,
                          reconnect_max_s=reconnect_max_s,
                          handshake_timeout_s=handshake_timeout_s)
        self._inbox: asyncio.Queue[Envelope] = asyncio.Queue(inbox_size)
        self._events: asyncio.Queue[PeerEvent] = asyncio.Queue(events_size)
        self.events_dropped = 0
        self.handshakes_failed = 0
        self.connections = 0          # handshaken connections now up (best effort, from monitor)
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._sock = None
        self._monitor = None
        self._tasks: list[asyncio.Task] = []
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._up = asyncio.Event()        # our hello went out on the current connection
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._fd = None
        self._closed = False
        self._low_reported = False
        self._failed_pending = 0      # refused handshakes whose disconnect is still to come
        self._last_logged: dict[str, tuple[float, int]] = {}
        self.bound_endpoint: str | None = None

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> "PeerChannel":
        o = self._opts
        ctx = self._ctx = zmq.asyncio.Context()
        # A plain (sync) socket driven by our own reader on its edge-triggered ZMQ_FD: with
        # pyzmq's asyncio socket, a send could swallow the edge a pending receive waited for.
        sock = zmq.Socket(ctx, zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = o["hwm"]
        sock.rcvhwm = o["hwm"]
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(o["heartbeat_s"] * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(o["heartbeat_timeout_s"] * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(o["heartbeat_timeout_s"] * 1000))
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(o["handshake_timeout_s"] * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL, int(o["reconnect_s"] * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(o["reconnect_max_s"] * 1000))
        sock.curve_publickey = self._public_key
        sock.curve_secretkey = self._secret_key
        self._sock = sock
        self._monitor = sock.get_monitor_socket(_MONITORED)
        self._tasks.append(asyncio.create_task(self._monitor_loop(), name="peer-monitor"))
        if self.mode == "bind":
            # A CURVE server without a ZAP handler admits any client: start it before binding.
            self._auth = AsyncioAuthenticator(ctx, log=logging.getLogger("qkd.peer.zap"))
            self._auth.start()
            self._auth.configure_curve_callback(ZAP_DOMAIN, _PinnedKey(self.peer_public_key))
            sock.zap_domain = ZAP_DOMAIN.encode()
            sock.curve_server = True
            sock.bind(self.endpoint)
            self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            sock.curve_serverkey = self.peer_public_key
            sock.setsockopt(zmq.IMMEDIATE, 1)   # queue nothing for a connection not yet up
            sock.connect(self.endpoint)
        self._fd = sock.getsockopt(zmq.FD)
        asyncio.get_running_loop().add_reader(self._fd, self._poke)
        self._tasks.append(asyncio.create_task(self._recv_loop(), name="peer-recv"))
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._up.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)     # term would wait on any socket left open

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    # -- engine-facing -------------------------------------------------------------------------

    async def send(self, link_id: int, block_id: int, step: int, msg_type: int,
                   payload: bytes) -> int:
        """Authenticate and send one block message; returns its sequence number. Waits while
        the send high-water mark is reached or no peer is connected (backpressure).

        After a disconnect it waits until our hello has gone out on the next connection: libzmq
        reports the loss before it retires the dead connection's pipe, and a frame written in
        that window would be dropped with the pipe although ``send`` had returned."""
        if link_id != self.link_id:
            raise PeerChannelError(f"link id {link_id} sent on the channel of link "
                                   f"{self.link_id}")
        self._check_open()
        while True:
            await self._up.wait()
            self._check_open()                  # close() wakes the waiters to say so
            async with self._send_lock:
                if not self._up.is_set():       # the link dropped while we waited for the lock
                    continue
                frame = self.session.encode(block_id, step, msg_type, payload)
                await self._send_raw(frame)
                return self.session.last_seq

    async def recv(self) -> Envelope:
        """The next authenticated envelope, in the order the peer sent them."""
        self._check_open()
        return await self._inbox.get()

    async def messages(self) -> AsyncIterator[Envelope]:
        while True:
            yield await self.recv()

    async def next_event(self) -> PeerEvent:
        return await self._events.get()

    async def events(self) -> AsyncIterator[PeerEvent]:
        while True:
            yield await self._events.get()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until a connection has completed its CURVE handshake (asyncio.TimeoutError if not)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def alarm(self) -> bool:
        return self.session.alarm

    def auth_bits_used(self, block_id: int, *, pop: bool = False) -> int:
        return self.session.auth_bits_used(block_id, pop=pop)

    def status(self) -> dict:
        """Counters for the node's status report (no key material)."""
        pool = self.session.pool.status()
        return {"link_id": self.link_id, "connected": self.connected, "alarm": self.alarm,
                "sent": self.session.sent, "received": self.session.received,
                "rejected": dict(self.session.counts), "handshakes_failed": self.handshakes_failed,
                "events_dropped": self.events_dropped,
                "auth_messages_left": min(pool.send_messages_left, pool.recv_messages_left),
                "auth_pool_low": pool.low}

    # -- test hook ----------------------------------------------------------------------------

    async def _send_frame(self, frame: bytes) -> None:
        """Put raw bytes on the wire (tests forge, replay and reorder frames through this)."""
        async with self._send_lock:
            await self._send_raw(frame)

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._sock is None or self._closed:
            raise PeerChannelError(f"peer channel of link {self.link_id} is not running")

    def _emit(self, event: PeerEvent) -> None:
        level = logging.WARNING if (event.is_rejection or event.kind in (
            ss.EVENT_ALARM, ss.EVENT_HANDSHAKE_FAILED, ss.EVENT_DISCONNECTED)) else logging.INFO
        now = asyncio.get_running_loop().time()
        last, suppressed = self._last_logged.get(event.kind, (-LOG_REPEAT_S, 0))
        if now - last >= LOG_REPEAT_S:
            more = f" ({suppressed} more since last logged)" if suppressed else ""
            log.log(level, "link %s peer %s: %s%s", self.link_id, event.kind, event.detail, more)
            self._last_logged[event.kind] = (now, 0)
        else:
            self._last_logged[event.kind] = (last, suppressed + 1)
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:          # an engine that ignores events must not stall us
            self._events.get_nowait()
            self._events.put_nowait(event)
            self.events_dropped += 1

    def _poke(self) -> None:
        """Read the socket's readiness (this also re-arms its edge-triggered FD)."""
        ev = self._sock.getsockopt(zmq.EVENTS)
        for flag, ready in ((zmq.POLLIN, self._readable), (zmq.POLLOUT, self._writable)):
            if ev & flag:
                ready.set()
            else:
                ready.clear()

    async def _wait(self, ready: asyncio.Event) -> None:
        self._poke()
        if not ready.is_set():   # the time limit only guards against a lost edge
            await wait_at_most(ready, 0.1)

    async def _send_raw(self, frame: bytes) -> None:
        while True:
            try:
                self._sock.send(frame, zmq.NOBLOCK, copy=False)
            except zmq.Again:          # high-water mark reached or no peer: wait
                await self._wait(self._writable)
                continue
            self._poke()
            return

    async def _recv_loop(self) -> None:
        sock = self._sock
        session = self.session
        inbox = self._inbox
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                await self._wait(self._readable)
                continue
            self._poke()
            env, events = session.receive(frame.buffer)
            for e in events:
                self._emit(e)
            if env is not None:
                await inbox.put(env)
            if not self._low_reported and session.received % 256 == 0 and session.pool.low:
                self._low_reported = True
                self._emit(PeerEvent(ss.EVENT_POOL_LOW, "authentication key pool is low: "
                                     "refill it from fresh key", link_id=self.link_id))

    async def _monitor_loop(self) -> None:
        mon = self._monitor
        while True:
            msg = parse_monitor_message(await mon.recv_multipart())
            event = msg["event"]
            if event == zmq.EVENT_MONITOR_STOPPED:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connections += 1
                self._connected.set()
                async with self._send_lock:
                    await self._send_raw(self.session.hello())
                    self._up.set()
                self._emit(PeerEvent(ss.EVENT_CONNECTED, f"connection up ({self.mode} "
                                     f"{self.endpoint})", link_id=self.link_id))
            elif event & _FAILED:
                self.handshakes_failed += 1
                self._failed_pending += 1
                for e in self.session.note_failure(ss.EVENT_HANDSHAKE_FAILED,
                                                   "CURVE handshake failed: "
                                                   f"{_FAILED_NAMES.get(event, event)} "
                                                   f"(code {msg['value']})"):
                    self._emit(e)
            elif event == zmq.EVENT_DISCONNECTED:
                if self._failed_pending:
                    self._failed_pending -= 1       # the end of a refused handshake
                    continue
                if self.connections == 0:
                    continue                        # never handshaken (e.g. TCP only)
                self.connections -= 1
                if self.connections == 0:
                    self._connected.clear()
                    self._up.clear()
                    self.session.connection_lost()
                    self._emit(PeerEvent(ss.EVENT_DISCONNECTED, "connection lost: messages "
                                         "in flight may be lost", link_id=self.link_id))

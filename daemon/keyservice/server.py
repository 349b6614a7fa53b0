"""The key service's socket: a CurveZMQ ROUTER behind a ZAP allow-list (the only zmq user here).

A CURVE server without a ZAP handler accepts any client, so the authenticator is started before
the socket binds and the service refuses to start with an empty allow-list. The allow-list maps
a client's public key to its SAE ID; ZAP hands that SAE ID to every message as ``User-Id``, and
the service trusts nothing else about who is asking. Replacing the allow-list (SIGHUP or the admin
command) affects new handshakes at once and, because each request's SAE is checked against the
current list, also clients that were removed while connected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import types

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from daemon.keyservice.service import KeyService, wipe_buffers
from daemon.keyservice.wire import RequestError, encode_reply, peek_request_id

log = logging.getLogger("qkd.keyservice")

ZAP_DOMAIN = "qkd-keyservice"
# requests answered in one go from the socket before the event loop gets a turn
DRAIN_BATCH = 64

# The request path calls libzmq through pyzmq's compiled socket methods with plain ints: the
# Python layer of ``send_multipart``/``recv_multipart`` and arithmetic on the enum flags cost
# more than the service's own work for a single-key request.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def key_fingerprint(z85_public_key: bytes | str) -> str:
    """A short, stable name for a public key in logs (never a secret)."""
    raw = z85_public_key.encode() if isinstance(z85_public_key, str) else z85_public_key
    return hashlib.sha256(raw).hexdigest()[:16]


class ServiceStartError(RuntimeError):
    """The key service cannot start as configured (message says what to change)."""


class _AllowList(AsyncioAuthenticator):
    def __init__(self, context, clients: dict[bytes, str]):
        super().__init__(context)
        self.clients = dict(clients)
        self.saes = frozenset(self.clients.values())   # checked on every request
        self.rejected = 0

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key in self.clients:
            return True
        self.rejected += 1
        log.warning("key service: refused a CURVE client with unknown key fingerprint %s",
                    key_fingerprint(z85_key))
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.clients[zmq.utils.z85.encode(client_public_key)]


class KeyServer:
    """Serve ``service`` on ``endpoint`` (e.g. ``tcp://127.0.0.1:7200``) until ``stop``."""

    def __init__(self, service: KeyService, endpoint: str, *, public_key: bytes,
                 secret_key: bytes, clients: dict[bytes, str],
                 context: zmq.asyncio.Context | None = None):
        if not clients:
            raise ServiceStartError("key service: no clients in the allow-list; refusing to "
                                    "start a service anyone could use")
        self.service = service
        self.endpoint = endpoint
        self._public, self._secret = public_key, secret_key
        # ZAP is one handler per context: the key service keeps a context of its own so that
        # the peer channel's authenticator (another domain, another allow-list) never collides.
        self._own_ctx = context is None
        self._ctx = context or zmq.asyncio.Context()
        self._auth = _AllowList(self._ctx, clients)
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[asyncio.Future] = set()
        self._draining = False      # inside _drain: it looks at the socket after each reply
        self.handshake_failures = 0

    @property
    def clients(self) -> dict[bytes, str]:
        return dict(self._auth.clients)

    def set_clients(self, clients: dict[bytes, str]) -> None:
        if not clients:
            raise ServiceStartError("key service: an empty allow-list would lock every client "
                                    "out; keeping the current one")
        self._auth.clients = dict(clients)
        self._auth.saes = frozenset(clients.values())
        log.info("key service: allow-list now has %d clients", len(clients))

    async def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._auth)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey = self._public
        sock.curve_secretkey = self._secret
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.linger = 0
        sock.router_mandatory = False
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                          | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            monitor.close(linger=0)       # an open socket would hang the context's term()
            sock.close(linger=0)
            self._auth.stop()
            raise ServiceStartError(f"key service: cannot bind {self.endpoint}: {exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        # requests are read and replies sent through the socket's plain API from a reader on
        # its file descriptor: pyzmq's asyncio receive (a future, a callback and a poll per
        # message) cost as much as the service's own work for a single-key request
        self._plain = plain = zmq.Socket.shadow(sock.underlying)
        base = super(zmq.Socket, plain)      # the compiled methods, without the sugar layer
        self._get, self._recv, self._send = base.get, base.recv, base.send
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._plain.FD, self._drain)
        self._loop.call_soon(self._drain)
        self._tasks = [asyncio.create_task(self._watch(monitor))]

    async def stop(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._plain.FD)
        for t in [*self._tasks, *self._inflight]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
        self._auth.stop()
        self.service.close()
        if self._own_ctx:
            # destroy, not term: term waits forever for any socket of the context still open
            # (a monitor whose reader never ran), and the node's shutdown with it
            self._ctx.destroy(linger=0)

    async def _watch(self, monitor) -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                self.handshake_failures += 1
                log.warning("key service: CURVE handshake failed (%s) from %s",
                            zmq.Event(event["event"]).name, event.get("endpoint", b"?"))
        finally:
            monitor.close(linger=0)

    def _drain(self) -> None:
        """Every request queued on the socket, each answered at once when the service needs
        no wait (keys reserved ahead), else by a task. The descriptor of a ZeroMQ socket
        signals edges: it is read until the socket says it holds nothing more."""
        get, recv = self._get, self._recv
        self._draining = True
        try:
            for _ in range(DRAIN_BATCH):
                if not get(_EVENTS) & _POLLIN:
                    return
                # the identity frame carries the message's metadata (the ZAP User-Id) and,
                # like every frame received without copying, whether more frames follow
                head = frame = recv(_NOBLOCK, False)
                frames = []
                while frame.more:
                    frame = recv(_NOBLOCK, False)
                    frames.append(frame.bytes)
                self._start(self._answer(head.bytes, head.get("User-Id"), frames))
            self._loop.call_soon(self._drain)   # a long burst: let the loop's other work in
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:     # the socket closed under us (stop)
            log.debug("key service: socket read ended: %s", exc)
        finally:
            self._draining = False

    def _start(self, coro) -> None:
        """Run ``coro`` until its first wait; only a request that waits becomes a task."""
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("key service: answering a request failed")
            return
        task = asyncio.ensure_future(_resumed(coro, waiting_on))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _answer(self, identity: bytes, sae: str, frames: list[bytes]) -> None:
        if sae not in self._auth.saes:
            op, rid = peek_request_id(frames)
            reply = encode_reply(op.decode(), rid, 401, RequestError(
                401, "unauthorized: this client was removed from the allow-list").body())
        else:
            reply = await self.service.handle(sae, frames)
        try:
            # A ROUTER does not block a send: to a peer gone or over its queue limit the
            # reply is dropped, and the client's retry with the same request id gets it
            # from the reply cache. (Never the asyncio socket's send here: its reader on the
            # same descriptor would replace ours.)
            send = self._send
            send(identity, _SNDMORE_NOBLOCK)
            last = len(reply) - 1
            for i, f in enumerate(reply):
                send(f, _NOBLOCK if i == last else _SNDMORE_NOBLOCK)
            # A send can take the descriptor's edge for requests that came meanwhile. Inside
            # ``_drain`` its next look at the socket (EVENTS, or a recv that finds nothing)
            # processes those commands after this send; a reply sent later, by a request
            # that waited, needs a drain of its own.
            if not self._draining:
                self._loop.call_soon(self._drain)
        except zmq.ZMQError as exc:
            log.info("key service: a reply was not sent (%s); the client's retry gets it", exc)
        finally:
            wipe_buffers(reply)


@types.coroutine
def _resumed(coro, waiting_on):
    """The rest of a coroutine that ``KeyServer._start`` ran until it first waited on
    ``waiting_on``, as something a Task can drive (what Python 3.12's eager tasks do)."""
    while True:
        try:
            yield waiting_on
        except BaseException as exc:     # cancelled: the coroutine sees it where it waits
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(None)
            except StopIteration as done:
                return done.value

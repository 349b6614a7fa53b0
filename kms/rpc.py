"""The KMS's sockets: a CurveZMQ ROUTER behind a ZAP resolver, and its Lazy Pirate client.

Both ends are pinned: the client knows the server's public key, and the server admits only
public keys its resolver maps to a principal (``user:NAME`` from the site config,
``terminal:ID`` for a registered terminal); an unknown key fails the handshake and hears only
silence. The resolver is asked again at every request and the handlers check the terminal's
state, so a terminal revoked while connected gets a clear refusal from its next message. This
is the "trusted local link, authenticated both ways" of the depot, and the same channel
vehicles use on the road.

Frames, request: ``QKDKMS/1`` | op | request ID (1-64 bytes) | JSON body.
Reply: ``QKDKMS/1`` | op | request ID | status (ASCII decimal) | JSON body. Binary values in
bodies (keys, ciphertexts, challenges, proofs) are base64. Errors: ``{"message": TEXT}``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from kms.errors import (AlreadyUsed, KmsError, MalformedRequest, NoKeyAvailable, NotAuthorized,
                        PolicyRefused, UnknownName)

log = logging.getLogger("qkd.kms")
PROTOCOL = b"QKDKMS/1"
MAX_BODY = 1 << 20
_ERRORS = {400: MalformedRequest, 401: NotAuthorized, 403: PolicyRefused, 404: UnknownName,
           409: AlreadyUsed, 503: NoKeyAvailable}

Handler = Callable[[str, str, dict], dict]


class _Resolver(ThreadAuthenticator):
    def __init__(self, context, resolve: Callable[[str], str | None], name: str):
        super().__init__(context)
        self._resolve = resolve
        self.name = name
        self.refused = 0

    def callback(self, domain: str, z85_key: bytes) -> bool:
        ok = self._resolve(z85_key.decode()) is not None
        if not ok:
            self.refused += 1
            log.warning("%s: refused a CURVE client with an unknown or revoked key", self.name)
        return ok

    def curve_user_id(self, client_public_key: bytes) -> str:
        return zmq.utils.z85.encode(client_public_key).decode()


class RpcServer:
    """Serve ``handler(principal, op, body)`` on ``endpoint`` in a thread until ``stop``."""

    def __init__(self, name: str, endpoint: str, *, public_key: bytes, secret_key: bytes,
                 resolve: Callable[[str], str | None], handler: Handler):
        self.name = name
        self.endpoint = endpoint
        self._keys = (public_key, secret_key)
        self._resolve, self._handler = resolve, handler
        self._ctx = zmq.Context()
        self._auth = _Resolver(self._ctx, resolve, name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock = None

    def start(self) -> "RpcServer":
        self._auth.start()
        self._auth.configure_curve_callback(domain=self.name, credentials_provider=self._auth)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self._keys
        sock.zap_domain = self.name.encode()
        sock.linger = 0
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            self._auth.stop()
            raise KmsError(f"{self.name}: cannot bind {self.endpoint}: {exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._auth.stop()
        self._ctx.term()

    def _serve(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                msg = sock.recv_multipart(copy=False)
                user = msg[-1].get("User-Id")
                reply = self.answer(user, [f.bytes for f in msg[1:]])
                try:
                    sock.send_multipart([msg[0].bytes, *reply])
                finally:
                    for f in reply:
                        f[:] = bytes(len(f))
        finally:
            sock.close(linger=0)

    def answer(self, public_key: str, frames: list[bytes]) -> list[bytearray]:
        """One request's frames in, the reply's frames out (no socket: testable alone)."""
        op, rid = b"", b""
        try:
            if len(frames) != 4:
                raise MalformedRequest(f"a request has 4 frames, got {len(frames)}")
            proto, op, rid, body = frames
            if proto != PROTOCOL:
                op, rid = b"", b""
                raise MalformedRequest(f"frame 0: protocol {proto[:16]!r}; accepted: "
                                       f"{PROTOCOL.decode()}")
            if not 1 <= len(rid) <= 64:
                rid = b""
                raise MalformedRequest("frame 2: request ID of 1-64 bytes accepted")
            if len(body) > MAX_BODY:
                raise MalformedRequest(f"frame 3: body over {MAX_BODY} bytes")
            try:
                obj = json.loads(body or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise MalformedRequest("frame 3: body is not UTF-8 JSON") from None
            if not isinstance(obj, dict):
                raise MalformedRequest("frame 3: body must be a JSON object")
            principal = self._resolve(public_key)
            if principal is None:
                raise NotAuthorized("this client is unknown or revoked")
            status, out = 200, self._handler(principal, op.decode("ascii", "replace"), obj)
        except KmsError as exc:
            status, out = exc.status, {"message": exc.message, **exc.details}
        except Exception:
            log.exception("%s: internal error answering %r", self.name, op[:32])
            status, out = 500, {"message": "internal error of the KMS (logged there)"}
        body = bytearray(json.dumps(out).encode())
        return [bytearray(PROTOCOL), bytearray(op), bytearray(rid),
                bytearray(str(status).encode()), body]


class RpcTimeout(KmsError):
    status = 504


class RpcClient:
    """Blocking client with Lazy Pirate retries (same request ID on a fresh socket)."""

    def __init__(self, endpoint: str, *, server_public_key: bytes, public_key: bytes,
                 secret_key: bytes, timeout_s: float = 3.0, retries: int = 3, context=None):
        self.endpoint = endpoint
        self._keys = (server_public_key, public_key, secret_key)
        self.timeout_s, self.retries = timeout_s, retries
        self._ctx = context or zmq.Context.instance()
        self._sock = None

    def _socket(self):
        if self._sock is None:
            s = self._ctx.socket(zmq.DEALER)
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = self._keys
            s.linger = 0
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def call(self, op: str, body: dict, *, request_id: bytes | None = None) -> dict:
        rid = request_id or secrets.token_bytes(16)
        frames = [PROTOCOL, op.encode(), rid, json.dumps(body).encode()]
        for _ in range(self.retries):
            sock = self._socket()
            sock.send_multipart(frames)
            while sock.poll(int(self.timeout_s * 1000)):
                reply = sock.recv_multipart()
                if len(reply) != 5 or reply[2] != rid:
                    continue
                status = int(reply[3])
                out = json.loads(reply[4])
                if status != 200:
                    message = out.pop("message", f"status {status}")
                    raise _ERRORS.get(status, KmsError)(message, out)
                return out
            self.close()
        raise RpcTimeout(f"no reply from {self.endpoint} to {op} after {self.retries} "
                         f"attempts of {self.timeout_s:g} s (server down, this client's key "
                         "not registered there, or a wrong server key)")

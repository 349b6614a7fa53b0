"""Key-service clients, blocking and asyncio, with Lazy Pirate retries.

A request that times out is sent again with the same request_id on a fresh socket (a DEALER
that lost its reply cannot be trusted to pair the next one); the service answers a repeated
request_id from its reply cache, so a retry never consumes keys twice. A CURVE client with a
wrong server key gets no error, only silence: that shows up here as ``KeyServiceTimeout``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from daemon.keyservice.wire import decode_reply, encode_request


class KeyServiceError(Exception):
    """The service answered with an error status; ``status``, ``message``, ``details``."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body if isinstance(body, dict) else {"message": str(body)}
        self.message = self.body.get("message", "")
        self.details = self.body.get("details", [])
        super().__init__(f"{status}: {self.message}")


class KeyServiceTimeout(TimeoutError):
    """No reply after every retry (service down, network, or a wrong server key)."""


@dataclass
class Key:
    key_id: uuid.UUID
    key: bytearray

    def wipe(self) -> None:
        self.key[:] = bytes(len(self.key))


def _keys(body: dict) -> list[Key]:
    return [Key(uuid.UUID(k["key_ID"]), bytearray(base64.b64decode(k["key"])))
            for k in body.get("keys", [])]


@dataclass
class StreamKey:
    """An ETSI 004 get_key answer: ``status`` 0 carries ``key``; other codes carry none."""

    status: int
    index: int
    key: Key | None = None
    metadata: dict | None = None


def _stream_key(body: dict) -> StreamKey:
    key = None
    if body.get("status") == 0 and "key_buffer" in body:
        key = Key(uuid.UUID(body["key_ID"]), bytearray(base64.b64decode(body["key_buffer"])))
    return StreamKey(body.get("status", -1), body.get("index", -1), key, body.get("metadata"))


def _open_body(source: str, destination: str, qos: dict, key_stream_id: str | None) -> dict:
    body: dict[str, Any] = {"source": source, "destination": destination, "qos": dict(qos)}
    if key_stream_id is not None:
        body["key_stream_id"] = key_stream_id
    return body


class _Base:
    def __init__(self, endpoint: str, *, server_public_key: bytes, public_key: bytes,
                 secret_key: bytes, timeout_s: float = 2.0, retries: int = 3):
        if timeout_s <= 0 or retries < 1:
            raise ValueError("timeout_s must be > 0 and retries >= 1")
        self.endpoint = endpoint
        self._keys = (server_public_key, public_key, secret_key)
        self.timeout_s = timeout_s
        self.retries = retries

    def _configure(self, sock) -> None:
        server, public, secret = self._keys
        sock.curve_serverkey = server
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.linger = 0
        sock.connect(self.endpoint)

    def _result(self, op: str, rid: bytes, frames) -> Any:
        reply = decode_reply(frames)
        if reply.request_id != rid:
            return None   # a late reply to an earlier request: keep waiting
        if reply.status != 200:
            raise KeyServiceError(reply.status, reply.body)
        return reply.body

    @staticmethod
    def _enc_body(slave: str, number: int, size: int | None, additional) -> dict:
        body: dict[str, Any] = {"slave_SAE_ID": slave, "number": number}
        if size is not None:
            body["size"] = size
        if additional:
            body["additional_slave_SAE_IDs"] = list(additional)
        return body


class KeyClient(_Base):
    """Blocking client. ``request`` is the raw call; the others are ETSI-shaped helpers."""

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None, **kw):
        super().__init__(endpoint, **kw)
        self._ctx = context or zmq.Context.instance()
        self._sock = None

    def _socket(self):
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.DEALER)
            self._configure(self._sock)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, op: str, body: dict, *, request_id: bytes | None = None) -> Any:
        rid = request_id or secrets.token_bytes(16)
        frames = encode_request(op, rid, body)
        for _attempt in range(self.retries):
            sock = self._socket()
            sock.send_multipart(frames)
            deadline_ms = int(self.timeout_s * 1000)
            while sock.poll(deadline_ms, zmq.POLLIN):
                out = self._result(op, rid, sock.recv_multipart())
                if out is not None:
                    return out
            self.close()   # Lazy Pirate: a fresh socket for the retry, same request_id
        raise KeyServiceTimeout(f"no reply from {self.endpoint} to {op} after {self.retries} "
                                f"attempts of {self.timeout_s:g} s")

    def status(self, slave: str) -> dict:
        return self.request("status", {"slave_SAE_ID": slave})

    def enc_keys(self, slave: str, number: int = 1, size: int | None = None,
                 additional_slaves=(), **kw) -> list[Key]:
        return _keys(self.request("enc_keys", self._enc_body(slave, number, size, additional_slaves),
                                  **kw))

    def dec_keys(self, master: str, key_ids, **kw) -> list[Key]:
        body = {"master_SAE_ID": master, "key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        return _keys(self.request("dec_keys", body, **kw))

    def open_connect(self, source: str, destination: str, qos: dict,
                     key_stream_id: str | None = None, **kw) -> dict:
        """ETSI 004 OPEN_CONNECT; the answer's ``status`` is 0 on success."""
        return self.request("open_connect", _open_body(source, destination, qos, key_stream_id),
                            **kw)

    def get_stream_key(self, key_stream_id: str, index: int, **kw) -> StreamKey:
        """ETSI 004 GET_KEY of one index."""
        return _stream_key(self.request("get_key", {"key_stream_id": key_stream_id,
                                                    "index": index}, **kw))

    def close_stream(self, key_stream_id: str, **kw) -> dict:
        """ETSI 004 CLOSE (``close()`` closes the socket)."""
        return self.request("close", {"key_stream_id": key_stream_id}, **kw)


class AsyncKeyClient(_Base):
    """asyncio client with the same calls as ``KeyClient`` (awaitable). Many requests may be
    in flight at once on one client: a reader task hands each reply to its request by ID."""

    def __init__(self, endpoint: str, *, context: zmq.asyncio.Context | None = None, **kw):
        super().__init__(endpoint, **kw)
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = None
        self._reader: asyncio.Task | None = None
        self._waiting: dict[bytes, asyncio.Future] = {}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self):
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.DEALER)
            self._configure(self._sock)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._sock))
        return self._sock

    async def _read(self, sock) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                reply = decode_reply(frames)
            except ValueError:
                continue            # not for us to answer; the request times out and retries
            fut = self._waiting.get(reply.request_id)
            if fut is not None and not fut.done():
                fut.set_result(frames)

    async def request(self, op: str, body: dict, *, request_id: bytes | None = None) -> Any:
        rid = request_id or secrets.token_bytes(16)
        frames = encode_request(op, rid, body)
        try:
            for _attempt in range(self.retries):
                fut = asyncio.get_running_loop().create_future()
                self._waiting[rid] = fut
                await self._socket().send_multipart(frames)
                try:
                    reply = await asyncio.wait_for(fut, self.timeout_s)
                except asyncio.TimeoutError:
                    self.close()    # Lazy Pirate: a fresh socket, the same request_id
                    continue
                return self._result(op, rid, reply)
        finally:
            self._waiting.pop(rid, None)
        raise KeyServiceTimeout(f"no reply from {self.endpoint} to {op} after {self.retries} "
                                f"attempts of {self.timeout_s:g} s")

    async def status(self, slave: str) -> dict:
        return await self.request("status", {"slave_SAE_ID": slave})

    async def enc_keys(self, slave: str, number: int = 1, size: int | None = None,
                       additional_slaves=(), **kw) -> list[Key]:
        return _keys(await self.request(
            "enc_keys", self._enc_body(slave, number, size, additional_slaves), **kw))

    async def dec_keys(self, master: str, key_ids, **kw) -> list[Key]:
        body = {"master_SAE_ID": master, "key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        return _keys(await self.request("dec_keys", body, **kw))

    async def open_connect(self, source: str, destination: str, qos: dict,
                           key_stream_id: str | None = None, **kw) -> dict:
        return await self.request("open_connect",
                                  _open_body(source, destination, qos, key_stream_id), **kw)

    async def get_stream_key(self, key_stream_id: str, index: int, **kw) -> StreamKey:
        return _stream_key(await self.request("get_key", {"key_stream_id": key_stream_id,
                                                          "index": index}, **kw))

    async def close_stream(self, key_stream_id: str, **kw) -> dict:
        return await self.request("close", {"key_stream_id": key_stream_id}, **kw)

"""ETSI 014 / 004 semantics of the key service: one validated request in, one reply out.

The socket (``server``) authenticates the client and hands over its SAE ID with the frames;
everything a client may get wrong is checked here, before any key is touched, so a refused
request consumes nothing. Keys themselves come from a ``KeyPool`` (the node's store plus the
peer reservation protocol); this module never sees how they are stored.

Exactly once: replies are cached per (client SAE, request_id) for ``reply_ttl_s`` so that a
retried request gets the same keys and a new request_id gets new ones; a retry that arrives
while the first is still being served waits for it. Cached replies are wiped when evicted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from daemon.keyservice import schemas
from daemon.keyservice.wire import (Request, RequestError, decode_request, encode_reply,
                                    peek_request_id)

log = logging.getLogger("qkd.keyservice")

MSG_SIZE_MULTIPLE = "size shall be a multiple of 8"
MSG_EXTENSION = "not all extension_mandatory parameters are supported"
MSG_NOT_FOUND = "one or more keys specified are not found on KME"


# -- ETSI 004 status codes --------------------------------------------------------------------
SUCCESSFUL = 0
PEER_NOT_CONNECTED = 1
INSUFFICIENT_KEY = 2
PEER_APPLICATION_NOT_CONNECTED = 3
NO_QKD_CONNECTION = 4
KEY_STREAM_ID_IN_USE = 5
TIMEOUT = 6
QOS_NOT_MET = 7
METADATA_TOO_SMALL = 8


class PoolExhausted(Exception):
    """Fewer keys are stored than the request asks for (nothing was taken)."""


class KeysNotFound(Exception):
    """A key ID is unknown here, already delivered to this caller, or expired and erased."""


class NotAuthorized(Exception):
    """The caller was not named as slave (or additional slave) when the keys were issued."""


class PeerUnavailable(Exception):
    """The reservation could not reach the peer node (nothing was delivered)."""


class PeerAppNotConnected(Exception):
    """ETSI 004: the application at the other end has not opened the stream at its node."""


@dataclass
class IssuedKey:
    key_id: uuid.UUID
    key: bytearray   # wiped by the service after the reply is encoded


def wipe_keys(keys) -> None:
    """Overwrite the bytes of ``IssuedKey``s that will not be handed out (or have been)."""
    for k in keys:
        k.key[:] = bytes(len(k.key))


class KeyPool(Protocol):
    """What the service needs from the node: ``issue`` reserves at the peer before returning."""

    async def stored_key_count(self, size_bits: int) -> int: ...

    async def issue(self, master: str, slaves: tuple[str, ...], number: int,
                    size_bits: int) -> list[IssuedKey]: ...

    async def fetch(self, caller: str, master: str,
                    key_ids: list[uuid.UUID]) -> list[IssuedKey]: ...

    async def stream_key(self, stream: "KeyStream", index: int, caller: str,
                         timeout_s: float) -> IssuedKey: ...


@dataclass(frozen=True)
class KmeLimits:
    """What ``status`` reports and requests are checked against (from the node's config)."""

    kme_id: str
    peer_kme_id: str
    local_saes: frozenset[str]
    remote_saes: frozenset[str]
    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 8192
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    max_sae_id_count: int = 0
    key_unit: int = 8     # sizes must be multiples of this (a node: its store's key size)

    def __post_init__(self) -> None:
        for name in ("key_size", "min_key_size", "max_key_size", "key_unit"):
            if getattr(self, name) % 8 or getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive multiple "
                                 f"of 8")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need min_key_size <= key_size <= max_key_size")
        for name in ("key_size", "min_key_size", "max_key_size"):
            if getattr(self, name) % self.key_unit:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of "
                                 f"key_unit {self.key_unit}")


@dataclass
class KeyStream:
    """An ETSI 004 association: keys of ``chunk_bytes`` indexed 0, 1, ... for source/destination."""

    key_stream_id: str
    source: str
    destination: str
    qos: schemas.QoS
    opened_by: set[str] = field(default_factory=set)
    issuer_here: bool = True   # this node's application is the source: it issues the keys

    @property
    def chunk_bits(self) -> int:
        return self.qos.key_chunk_size * 8


class _ReplyCache:
    """(client, request_id) -> reply frames, for ``ttl_s``; evicted replies are zeroed."""

    def __init__(self, ttl_s: float, max_entries: int):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._done: OrderedDict[tuple[str, bytes], tuple[float, list[bytearray]]] = OrderedDict()
        self._pending: dict[tuple[str, bytes], asyncio.Future | None] = {}
        # the time of the oldest entry (first in ``_done``): one comparison per request tells
        # whether anything is due for eviction
        self._oldest = 0.0

    def _evict(self, now: float) -> None:
        done = self._done
        if not done or (now - self._oldest < self.ttl_s and len(done) <= self.max_entries):
            return
        while done:
            key = next(iter(done))
            t, frames = done[key]
            if now - t < self.ttl_s and len(done) <= self.max_entries:
                self._oldest = t
                break
            del done[key]
            wipe_buffers(frames)

    def get(self, key, now: float):
        self._evict(now)
        hit = self._done.get(key)
        return None if hit is None else hit[1]

    def put(self, key, frames: list[bytearray], now: float) -> None:
        if not self._done:
            self._oldest = now
        self._done[key] = (now, frames)
        self._evict(now)

    def clear(self) -> None:
        for _t, frames in self._done.values():
            wipe_buffers(frames)
        self._done.clear()

    def __len__(self) -> int:
        return len(self._done)


def wipe_buffers(frames) -> None:
    """Zero every bytearray of ``frames`` (reply frames, key buffers) once it is no longer
    needed; ``bytes`` frames hold no key and are left as they are."""
    for f in frames:
        if isinstance(f, bytearray):
            f[:] = bytes(len(f))


def reply_capacity(keys: list[bytearray]) -> int:
    """Bytes enough for a reply body carrying ``keys``: base64 takes 4 bytes per 3, and each
    key's entry (its ID and the field names) under 96 more."""
    return 256 + sum(2 * len(k) + 96 for k in keys)


class KeyService:
    """Request frames + the client's authenticated SAE ID -> reply frames. Never raises."""

    def __init__(self, limits: KmeLimits, pool: KeyPool, *, reply_ttl_s: float = 60.0,
                 max_cached_replies: int = 10_000, clock=time.monotonic):
        self.limits = limits
        self.pool = pool
        self.streams: dict[str, KeyStream] = {}
        self._cache = _ReplyCache(reply_ttl_s, max_cached_replies)
        self._clock = clock
        self.counters = {"requests": 0, "errors": 0, "keys_delivered": 0, "retries_served": 0}

    async def handle(self, client_sae: str, frames: list[bytes]) -> list[bytearray]:
        self.counters["requests"] += 1
        try:
            request = decode_request(frames)
        except RequestError as err:
            op, rid = peek_request_id(frames)
            return self._error(op.decode(), rid, err)
        key = (client_sae, request.request_id)
        cache = self._cache
        cached = cache.get(key, self._clock())
        if cached is not None:
            self.counters["retries_served"] += 1
            return [bytearray(f) for f in cached]
        # A request being served has an entry in _pending; the future its retries wait on is
        # made by the first retry (most requests are served without one arriving, many
        # without waiting at all)
        pending = cache._pending
        if key in pending:
            self.counters["retries_served"] += 1
            fut = pending[key]
            if fut is None:
                fut = pending[key] = asyncio.get_running_loop().create_future()
            return [bytearray(f) for f in await asyncio.shield(fut)]
        pending[key] = None
        try:
            reply = await self._serve(client_sae, request)
        except Exception:   # a bug or a store failure: answer 503, never drop the client
            log.exception("key service: %s from %s failed", request.op, client_sae)
            reply = self._error(request.op, request.request_id,
                                RequestError(503, "internal error of the key service"))
        fut = pending.pop(key, None)
        cache.put(key, reply, self._clock())
        if fut is not None:
            fut.set_result(reply)
        return [bytearray(f) for f in reply]

    def close(self) -> None:
        """Wipe every cached reply (keys inside them) on shutdown."""
        self._cache.clear()

    # -- operations ---------------------------------------------------------------------------

    async def _serve(self, sae: str, req: Request) -> list[bytearray]:
        try:
            body = await getattr(self, "_op_" + req.op)(sae, req.body)
        except RequestError as err:
            return self._error(req.op, req.request_id, err)
        buffers = [entry["key"] for entry in body.get("keys", ())]   # of a _container
        if body.get("key_buffer") is not None:                        # ETSI 004's key
            buffers.append(body["key_buffer"])
        try:
            return encode_reply(req.op, req.request_id, 200, body,
                                capacity=reply_capacity(buffers))
        finally:
            wipe_buffers(buffers)

    def _error(self, op: str, rid: bytes, err: RequestError) -> list[bytearray]:
        self.counters["errors"] += 1
        return encode_reply(op, rid, err.status, err.body())

    def _check_sae(self, sae: str, *, remote: bool, role: str) -> None:
        known = self.limits.remote_saes if remote else self.limits.local_saes
        if sae not in known:
            where = "the peer KME" if remote else "this KME"
            raise RequestError(400, f"unknown SAE ID {sae!r} as {role}",
                               [{"known_at": where}])

    async def _op_status(self, sae: str, body: schemas.StatusRequest) -> dict:
        self._check_sae(body.slave_SAE_ID, remote=True, role="slave_SAE_ID")
        lim = self.limits
        return {"source_KME_ID": lim.kme_id, "target_KME_ID": lim.peer_kme_id,
                "master_SAE_ID": sae, "slave_SAE_ID": body.slave_SAE_ID,
                "key_size": lim.key_size,
                "stored_key_count": min(await self.pool.stored_key_count(lim.key_size),
                                        lim.max_key_count),
                "max_key_count": lim.max_key_count,
                "max_key_per_request": lim.max_key_per_request,
                "max_key_size": lim.max_key_size, "min_key_size": lim.min_key_size,
                "max_SAE_ID_count": lim.max_sae_id_count}

    async def _op_enc_keys(self, sae: str, body: schemas.EncKeysRequest) -> dict:
        lim = self.limits
        size = lim.key_size if body.size is None else body.size
        if size % 8:
            raise RequestError(400, MSG_SIZE_MULTIPLE)
        if size % lim.key_unit:
            raise RequestError(400, f"size {size} is not a multiple of this KME's key unit of "
                                    f"{lim.key_unit} bits (sizes {lim.min_key_size}, "
                                    f"{lim.min_key_size + lim.key_unit}, ... "
                                    f"{lim.max_key_size})")
        if not lim.min_key_size <= size <= lim.max_key_size:
            raise RequestError(400, f"size {size} is outside [min_key_size, max_key_size] = "
                                    f"[{lim.min_key_size}, {lim.max_key_size}]")
        if body.number > lim.max_key_per_request:
            raise RequestError(400, f"number {body.number} exceeds max_key_per_request "
                                    f"{lim.max_key_per_request}")
        if body.extension_mandatory:
            raise RequestError(400, MSG_EXTENSION,
                               [{"extension_mandatory_unsupported":
                                 sorted({k for ext in body.extension_mandatory for k in ext})}])
        slaves = (body.slave_SAE_ID, *body.additional_slave_SAE_IDs)
        if len(slaves) - 1 > lim.max_sae_id_count:
            raise RequestError(400, f"{len(slaves) - 1} additional_slave_SAE_IDs exceed "
                                    f"max_SAE_ID_count {lim.max_sae_id_count}")
        if len(set(slaves)) != len(slaves):
            raise RequestError(400, "a slave SAE ID is named twice")
        for s in slaves:
            self._check_sae(s, remote=True, role="slave_SAE_ID")
        try:
            keys = await self.pool.issue(sae, slaves, body.number, size)
        except PoolExhausted as exc:
            raise RequestError(503, "key pool exhausted: fewer stored keys than requested",
                               [{"requested": body.number, "size": size,
                                 "stored_key_count":
                                     await self.pool.stored_key_count(size)},
                                str(exc)]) from None
        except PeerUnavailable as exc:
            raise RequestError(503, "peer KME unreachable: keys cannot be reserved there",
                               [str(exc)]) from None
        return self._container(keys)

    async def _op_dec_keys(self, sae: str, body: schemas.DecKeysRequest) -> dict:
        self._check_sae(body.master_SAE_ID, remote=True, role="master_SAE_ID")
        ids = [ref.key_ID for ref in body.key_IDs]
        if len(set(ids)) != len(ids):
            raise RequestError(400, "a key_ID is named twice")
        try:
            keys = await self.pool.fetch(sae, body.master_SAE_ID, ids)
        except NotAuthorized:
            raise RequestError(401, "unauthorized: the caller is not a slave SAE of these "
                                    "keys") from None
        except KeysNotFound as exc:
            raise RequestError(400, MSG_NOT_FOUND, [str(exc)]) from None
        return self._container(keys)

    def _container(self, keys: list[IssuedKey]) -> dict:
        """The ETSI key container of ``keys``. It holds their key buffers themselves, which the
        encoder writes in base64 straight into the reply (no str copy of a key is made) and
        ``_serve`` wipes once the reply is encoded; the encoder writes the UUIDs as str(uuid)."""
        self.counters["keys_delivered"] += len(keys)
        return {"keys": [{"key_ID": k.key_id, "key": k.key} for k in keys]}

    async def _op_open_connect(self, sae: str, body: schemas.OpenConnectRequest) -> dict:
        if sae not in (body.source, body.destination):
            raise RequestError(401, "unauthorized: the caller is neither source nor "
                                    "destination")
        local_is_source = sae == body.source
        other = body.destination if local_is_source else body.source
        if other not in self.limits.remote_saes:
            return {"status": NO_QKD_CONNECTION, "key_stream_id": body.key_stream_id,
                    "qos": _qos_dict(body.qos),
                    "message": f"no QKD link from this KME to SAE {other!r}"}
        qos = body.qos
        unmet = self._qos_unmet(qos)
        if unmet:
            return {"status": QOS_NOT_MET, "key_stream_id": body.key_stream_id,
                    "qos": _qos_dict(qos), "message": unmet}
        ksid = body.key_stream_id or str(uuid.uuid4())
        stream = self.streams.get(ksid)
        if stream is None:
            stream = KeyStream(ksid, body.source, body.destination, qos,
                               issuer_here=local_is_source)
            self.streams[ksid] = stream
        elif (stream.source, stream.destination) != (body.source, body.destination) \
                or sae in stream.opened_by:
            return {"status": KEY_STREAM_ID_IN_USE, "key_stream_id": ksid,
                    "qos": _qos_dict(stream.qos)}
        stream.opened_by.add(sae)
        opener = getattr(self.pool, "open_stream", None)
        if opener is not None:
            opener(stream)
        return {"status": SUCCESSFUL, "key_stream_id": ksid, "qos": _qos_dict(stream.qos)}

    def _qos_unmet(self, qos: schemas.QoS) -> str | None:
        """Why this node cannot honour ``qos`` (None if it can)."""
        lim = self.limits
        if not lim.min_key_size <= qos.key_chunk_size * 8 <= lim.max_key_size:
            return (f"key_chunk_size must be {lim.min_key_size // 8}..{lim.max_key_size // 8} "
                    f"bytes")
        if lim.key_unit > 8 and qos.key_chunk_size * 8 != lim.key_unit:
            return f"key_chunk_size must be {lim.key_unit // 8} bytes (one stored key)"
        if qos.max_bps and qos.min_bps > qos.max_bps:
            return "min_bps exceeds max_bps"
        if qos.metadata_mimetype != "application/json":
            return "metadata_mimetype must be application/json"
        return None

    async def _op_get_key(self, sae: str, body: schemas.GetKeyRequest) -> dict:
        stream = self.streams.get(body.key_stream_id)
        if stream is None or sae not in stream.opened_by:
            raise RequestError(400, f"key_stream_id {body.key_stream_id!r} is not open for "
                                    f"this SAE")
        if body.metadata_size < 2:   # the smallest JSON metadata, "{}"
            return {"status": METADATA_TOO_SMALL, "index": body.index}
        timeout_s = (stream.qos.timeout or 1000) / 1000.0
        try:
            key = await self.pool.stream_key(stream, body.index, sae, timeout_s)
        except PoolExhausted:
            return {"status": INSUFFICIENT_KEY, "index": body.index}
        except PeerUnavailable:
            return {"status": PEER_NOT_CONNECTED, "index": body.index}
        except PeerAppNotConnected:
            return {"status": PEER_APPLICATION_NOT_CONNECTED, "index": body.index}
        except TimeoutError:
            return {"status": TIMEOUT, "index": body.index}
        except KeysNotFound as exc:
            raise RequestError(400, f"index {body.index} of this stream was already "
                                    f"delivered here or expired", [str(exc)]) from None
        # the key buffer itself: the encoder writes it in base64 into the reply, ``_serve``
        # wipes it (no str copy of the key is made)
        return {"status": SUCCESSFUL, "index": body.index, "key_ID": key.key_id,
                "key_buffer": key.key, "metadata": {}}

    async def _op_close(self, sae: str, body: schemas.CloseRequest) -> dict:
        stream = self.streams.get(body.key_stream_id)
        if stream is None or sae not in stream.opened_by:
            raise RequestError(400, f"key_stream_id {body.key_stream_id!r} is not open for "
                                    f"this SAE")
        stream.opened_by.discard(sae)
        if not stream.opened_by:
            del self.streams[body.key_stream_id]
            closer = getattr(self.pool, "close_stream", None)
            if closer is not None:
                await closer(stream)
        return {"status": SUCCESSFUL}


def _qos_dict(qos: schemas.QoS) -> dict:
    import msgspec
    return msgspec.to_builtins(qos)

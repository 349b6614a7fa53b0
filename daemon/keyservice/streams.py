"""ETSI 004 key streams on the durable store: which stored key an index is bound to, at both ends.

The node whose application is the stream's source issues its keys, one unit per index. An index is
bound when the source asks for it there (take from the lease, RESERVE at the peer under
``stream_key_id(stream, index)``, reply) or when the destination asks at its own node first (that
node sends STREAM_PULL; the issuer binds the index the same way and holds the key in memory for its
source). The destination's node delivers a bound index like any reserved key (durable erase).
Bindings live in memory, like the streams: a restart of either node ends its streams. Keys the
issuer bound but never delivered are voided at the peer (VOID, scope RESERVED) when its source
closes the stream; keys bound at the destination's node that its application never takes expire
there after ``STREAM_RESERVATION_TTL_S`` (the RESERVE names the index, not the stream, so that node
cannot tell which stream an untaken binding belongs to).

``StreamKeys`` is the stream half of ``NodeKeyPool`` (a mixin: it uses the pool's lease,
peer requests and fetch batcher).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from daemon.keyservice import reservations as rv
from daemon.keyservice.service import (IssuedKey, KeysNotFound, PeerAppNotConnected,
                                       PeerUnavailable, PoolExhausted, wipe_keys)
from daemon.keystore.errors import KeyNotFound, KeyNotReserved

STREAM_RESERVATION_TTL_S = 3600.0
"""A stream key reserved at the destination's node and not fetched within this is erased."""
MAX_PENDING_PER_STREAM = 4096
"""Indices the issuer may hold for its source application after the destination pulled them."""


@dataclass
class _Stream:
    """What one node remembers of an ETSI 004 stream (in memory, like the stream itself)."""

    key_stream_id: str
    source: str
    destination: str
    issuer: bool                                       # this node's application is the source
    open_here: bool = False
    delivered: set[int] = field(default_factory=set)   # indices delivered here
    bound: set[int] = field(default_factory=set)       # issuer: indices bound to a unit
    pending: dict[int, IssuedKey] = field(default_factory=dict)   # issuer: pulled, not taken
    binding: dict[int, asyncio.Future] = field(default_factory=dict)  # binding in progress


_PULL_REFUSALS = {
    rv.RefusalReason.INSUFFICIENT_KEY: PoolExhausted,
    rv.RefusalReason.STREAM_NOT_OPEN: PeerAppNotConnected,
    rv.RefusalReason.PEER_UNREACHABLE: PeerUnavailable,
}


class StreamKeys:
    """Stream methods of ``NodeKeyPool``; state: ``_streams`` and ``_stream_units``."""

    _streams: dict[str, _Stream]
    _stream_units: dict[uuid.UUID, tuple[float, uuid.UUID]]

    def open_stream(self, stream) -> None:
        """The service opened ``stream`` for a local application (open_connect)."""
        self._stream(stream).open_here = True

    async def close_stream(self, stream) -> None:
        """Every local application closed ``stream``. The issuer voids at the peer the keys it
        bound for its source and never delivered."""
        st = self._streams.pop(stream.key_stream_id, None)
        if st is None:
            return
        if st.pending:
            units = [k.key_id for k in st.pending.values()]
            wipe_keys(st.pending.values())
            st.pending.clear()
            await self.void_keys(rv.VoidScope.RESERVED, units)

    def forget_expired_bindings(self, now: float | None = None) -> int:
        """Drop in-memory stream bindings older than the store's reservation TTL (the store
        erases their keys in ``expire``). Returns how many were dropped."""
        now = time.monotonic() if now is None else now
        old = [i for i, (t, _u) in self._stream_units.items()
               if now - t > STREAM_RESERVATION_TTL_S]
        for i in old:
            del self._stream_units[i]
        return len(old)

    def _stream(self, stream) -> _Stream:
        st = self._streams.get(stream.key_stream_id)
        if st is None:
            st = self._streams[stream.key_stream_id] = _Stream(
                stream.key_stream_id, stream.source, stream.destination, stream.issuer_here)
        return st

    async def stream_key(self, stream, index: int, caller: str, timeout_s: float) -> IssuedKey:
        st = self._stream(stream)
        if index in st.delivered:
            raise KeysNotFound(f"index {index} was delivered here already")
        if st.issuer:
            key = await self._issuer_key(st, index, for_pull=False)
        else:
            key = await self._receiver_key(st, index, caller, timeout_s)
        st.delivered.add(index)
        self.counters["stream_keys"] += 1
        return key

    async def _issuer_key(self, st: _Stream, index: int, *, for_pull: bool) -> IssuedKey | None:
        """Bind ``index`` (take a unit, RESERVE it at the peer) unless it is bound already; the
        local source gets the key, a pull leaves it pending for the source."""
        while index in st.binding:
            await asyncio.shield(st.binding[index])
        if index in st.pending:
            return None if for_pull else st.pending.pop(index)
        if index in st.bound:
            if for_pull:
                raise KeysNotFound(f"index {index} is bound already")
            raise KeysNotFound(f"index {index} was delivered here already")
        if for_pull and len(st.pending) >= MAX_PENDING_PER_STREAM:
            raise PoolExhausted(f"{len(st.pending)} indices already held for the source")
        done = asyncio.get_running_loop().create_future()
        st.binding[index] = done
        try:
            taken = await self._take(1, st.source, st.destination)
            record = rv.Reservation(rv.stream_key_id(st.key_stream_id, index),
                                    self.key_size_bits, (taken[0].key_id,), st.source,
                                    (st.destination,))
            await self._reserve_at_peer([record], taken)
            st.bound.add(index)
            if for_pull:
                st.pending[index] = taken[0]
                return None
            return taken[0]
        finally:
            del st.binding[index]
            done.set_result(None)

    async def _receiver_key(self, st: _Stream, index: int, caller: str,
                            timeout_s: float) -> IssuedKey:
        index_id = rv.stream_key_id(st.key_stream_id, index)
        while index in st.binding:
            await asyncio.shield(st.binding[index])
            if index in st.delivered:
                raise KeysNotFound(f"index {index} was delivered here already")
        if index_id not in self._stream_units:
            done = asyncio.get_running_loop().create_future()
            st.binding[index] = done
            try:
                seq = next(self._seq) & 0xFFFFFFFF
                pull = rv.StreamPull(seq, index, st.key_stream_id, st.source, st.destination)
                try:
                    refusal = await self._ask_peer(rv.encode_stream_pull(pull), seq, timeout_s)
                except TimeoutError:     # an OSError too: QoS timeout, ETSI 004 status 6
                    raise
                except (ConnectionError, OSError) as exc:
                    raise PeerUnavailable(f"the peer node is not connected "
                                          f"({type(exc).__name__})") from None
                if refusal is not None and refusal != rv.RefusalReason.INDEX_BOUND:
                    raise _PULL_REFUSALS.get(refusal, PeerUnavailable)(
                        f"the issuing node refused index {index}: {refusal.name}")
            finally:
                del st.binding[index]
                done.set_result(None)
        bound = self._stream_units.pop(index_id, None)
        if bound is None:
            raise KeysNotFound(f"index {index} is bound to no key here (delivered or erased)")
        try:
            result = await self._fetcher.submit((caller, [bound[1]]))
        except (KeyNotFound, KeyNotReserved) as exc:
            raise KeysNotFound(f"index {index}: {type(exc).__name__}") from None
        return IssuedKey(result[0][0], result[0][1])

    async def _on_stream_pull(self, pull: rv.StreamPull) -> None:
        st = self._streams.get(pull.key_stream_id)
        reason = None
        if st is None or not st.open_here or not st.issuer or \
                (st.source, st.destination) != (pull.source, pull.destination):
            reason = rv.RefusalReason.STREAM_NOT_OPEN
        elif pull.index in st.delivered:
            reason = rv.RefusalReason.INDEX_BOUND
        else:
            try:
                await self._issuer_key(st, pull.index, for_pull=True)
            except PoolExhausted:
                reason = rv.RefusalReason.INSUFFICIENT_KEY
            except PeerUnavailable:
                reason = rv.RefusalReason.PEER_UNREACHABLE
            except KeysNotFound:
                reason = rv.RefusalReason.INDEX_BOUND
        await self._send_quietly(rv.encode_reply(pull.seq, reason))

    def stream_status(self) -> list[dict]:
        return [{"key_stream_id": st.key_stream_id, "source": st.source,
                 "destination": st.destination, "issuer": st.issuer, "open_here": st.open_here,
                 "delivered": len(st.delivered), "held_for_source": len(st.pending)}
                for st in self._streams.values()]

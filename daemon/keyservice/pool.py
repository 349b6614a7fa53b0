"""The node's key pool for the key service: the store on this end, reservations at the peer.

Which end may issue a stored key to its master SAEs is fixed when the block is stored (the
store's ``issuer`` column), so the two nodes never hand one key to two masters. Issuing here:
1. take keys from a durable lease (``KeyStore.lease`` grants them in batches, one fsync per
   batch rather than per request);
2. RESERVE them at the peer for the slave SAE and wait for RESERVED — the peer has then stored
   the reservation durably, so the slave can fetch the keys there whatever happens next;
3. return them; they are wiped from the lease's memory at once and erased from the file when
   the lease is settled (``settle``, which the node calls every few seconds) or closed.
A crash between 1 and 3 leaves the lease open; at restart ``void_open_leases`` erases all its
keys and the peer is told to erase them too (``void_peer_keys``), except those it had already
reserved — which the slave can still fetch, and which were never handed out twice.

Fetching here (the peer issued): ``deliver_many`` checks the reservation and erases durably, one
fsync for all the fetches queued meanwhile (group commit).

Every store call runs in the executor: SQLite's fsync must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Awaitable, Callable

from daemon.keyservice import reservations as rv
from daemon.keyservice.service import (IssuedKey, KeysNotFound, NotAuthorized, PeerUnavailable,
                                       PoolExhausted)
from daemon.keystore.errors import KeyNotFound, KeyNotReserved, StoreError

log = logging.getLogger("qkd.keyservice")

SendToPeer = Callable[[int, bytes], Awaitable[None]]


class _Batcher:
    """Run ``fn(list_of_items)`` in the executor for everything queued while it last ran."""

    def __init__(self, fn, executor=None):
        self._fn = fn
        self._executor = executor
        self._queue: list[tuple[object, asyncio.Future]] = []
        self._running = False

    async def submit(self, item):
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self):
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await loop.run_in_executor(self._executor, self._fn,
                                                         [item for item, _ in batch])
                except Exception as exc:   # the whole batch failed: each caller learns why
                    results = [exc] * len(batch)
                for (_item, fut), res in zip(batch, results):
                    if not fut.done():
                        if isinstance(res, BaseException):
                            fut.set_exception(res)
                        else:
                            fut.set_result(res)
        finally:
            self._running = False


class NodeKeyPool:
    """``KeyPool`` of one link (see ``daemon.keyservice.service``)."""

    def __init__(self, store, link_id: str, send: SendToPeer, *, key_size_bits: int,
                 lease_batch: int = 1024, reserve_timeout_s: float = 2.0, executor=None):
        self.store = store
        self.link_id = link_id
        self.key_size_bits = key_size_bits
        self._send = send
        self._lease_batch = lease_batch
        self._reserve_timeout_s = reserve_timeout_s
        self._executor = executor
        self._lease = None   # the open store.Lease keys are taken from
        self._lease_lock = asyncio.Lock()
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._fetcher = _Batcher(self._deliver_batch, executor)
        self._reserver = _Batcher(self._reserve_batch, executor)
        self.counters = {"issued": 0, "fetched": 0, "reserved_for_peer": 0,
                         "reserve_refused": 0, "reserve_timeouts": 0}

    # -- KeyPool ------------------------------------------------------------------------------

    def stored_key_count(self, size_bits: int) -> int:
        if size_bits != self.key_size_bits:
            return 0
        left = self._lease.remaining if self._lease is not None else 0
        return left + self.store.issuable_count(self.link_id)

    async def issue(self, master: str, slaves: tuple[str, ...], number: int,
                    size_bits: int) -> list[IssuedKey]:
        if size_bits != self.key_size_bits or len(slaves) != 1:
            raise ValueError("the service's limits allow only the store's key size and one slave")
        taken = await self._take(number, master, slaves[0])
        seq = next(self._seq) & 0xFFFFFFFF
        fut = asyncio.get_running_loop().create_future()
        self._waiting[seq] = fut
        records = [rv.Reservation(k.key_id, size_bits, (k.key_id,), master, slaves)
                   for k in taken]
        try:
            await self._send(*rv.encode_reserve(seq, records))
            refusal = await asyncio.wait_for(fut, self._reserve_timeout_s)
        except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
            self.counters["reserve_timeouts"] += 1
            _burn(taken)
            raise PeerUnavailable(f"no reservation from the peer within "
                                  f"{self._reserve_timeout_s:g} s ({type(exc).__name__})") from None
        finally:
            self._waiting.pop(seq, None)
        if refusal is not None:
            self.counters["reserve_refused"] += 1
            _burn(taken)
            raise PeerUnavailable(f"the peer refused the reservation: {refusal.name}")
        self.counters["issued"] += len(taken)
        return taken

    async def settle(self) -> int:
        """Durably erase the keys handed out from the open lease so far; returns how many."""
        async with self._lease_lock:
            if self._lease is None:
                return 0
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self.store.settle_lease, self._lease)

    async def fetch(self, caller: str, master: str,
                    key_ids: list[uuid.UUID]) -> list[IssuedKey]:
        try:
            result = await self._fetcher.submit((caller, list(key_ids)))
        except KeyNotReserved as exc:
            raise NotAuthorized(str(exc)) from None
        except KeyNotFound as exc:
            raise KeysNotFound(f"{len(exc.key_ids)} of {len(key_ids)} key IDs") from None
        self.counters["fetched"] += len(result)
        return [IssuedKey(kid, key) for kid, key in result]

    async def stream_key(self, stream, index, caller, timeout_s):
        raise PoolExhausted("ETSI 004 key streams are not served from the durable store yet")

    # -- peer messages ------------------------------------------------------------------------

    async def on_peer_message(self, msg_type: int, payload: bytes) -> None:
        """Route a reservation message from the peer (the runtime calls this)."""
        if msg_type == rv.ReservationMsgType.RESERVE:
            try:
                seq, records = rv.decode_reserve(payload)
            except rv.ReservationMessageError as exc:
                log.warning("key service: malformed RESERVE from the peer: %s", exc)
                return
            reason = await self._reserver.submit(records)
            if reason is None:
                self.counters["reserved_for_peer"] += sum(len(r.units) for r in records)
            await self._send(*rv.encode_reply(seq, reason))
            return
        try:
            seq, refusal = rv.decode_reply(msg_type, payload)
        except rv.ReservationMessageError as exc:
            log.warning("key service: malformed reservation reply from the peer: %s", exc)
            return
        fut = self._waiting.get(seq)
        if fut is not None and not fut.done():
            fut.set_result(refusal)

    # -- store work (executor) ----------------------------------------------------------------

    async def _take(self, number: int, master: str, slave: str) -> list[IssuedKey]:
        """Keys taken from the current lease (each once; a taken key is erased when the lease
        is settled or closed, or at restart with the whole lease)."""
        loop = asyncio.get_running_loop()
        async with self._lease_lock:
            if self._lease is None or self._lease.remaining < number:
                old, self._lease = self._lease, None
                if old is not None:
                    await loop.run_in_executor(self._executor, self.store.close_lease, old)
                self._lease = await loop.run_in_executor(
                    self._executor, lambda: self.store.lease(
                        self.link_id, max(self._lease_batch, number)))
                if self._lease is None or self._lease.remaining < number:
                    have = 0 if self._lease is None else self._lease.remaining
                    raise PoolExhausted(f"{have} keys ready to issue")
            keys = self._lease.take(number, master_sae=master, slave_sae=slave)
            if self._lease.remaining == 0:
                done, self._lease = self._lease, None
                await loop.run_in_executor(self._executor, self.store.close_lease, done)
            return [IssuedKey(k, b) for k, b in keys]

    def _deliver_batch(self, requests):
        return self.store.deliver_many(requests)

    def _reserve_batch(self, batches: list[list[rv.Reservation]]):
        """One durable ``reserve`` per (master, slave) of each RESERVE message."""
        out = []
        for records in batches:
            groups: dict[tuple[str, str], list[uuid.UUID]] = {}
            for r in records:
                groups.setdefault((r.master, r.slaves[0]), []).extend(r.units)
            reason = None
            for (master, slave), units in groups.items():
                try:
                    bad = self.store.reserve(self.link_id, units, slave_sae=slave,
                                             master_sae=master)
                except StoreError as exc:
                    log.error("key service: cannot store a reservation: %s", exc)
                    reason = rv.RefusalReason.STORE_ERROR
                    break
                if bad:
                    reason = rv.RefusalReason.UNKNOWN_KEY
                    break
            out.append(reason)
        return out


def _burn(keys: list[IssuedKey]) -> None:
    """Keys whose reservation is in doubt: the peer may hold them for the slave, so they are
    never handed out here (taken from the lease, they are erased with it)."""
    for k in keys:
        k.key[:] = bytes(len(k.key))

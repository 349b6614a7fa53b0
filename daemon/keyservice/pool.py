"""The node's key pool for the key service: the store on this end, reservations at the peer.

Which end may issue a stored key to its master SAEs is fixed when the block is stored (the
store's ``issuer`` column), so the two nodes never hand one key to two masters. Issuing here:
1. take keys from a durable lease (``KeyStore.lease`` grants them in batches, one fsync per
   batch rather than per request);
2. RESERVE them at the peer for the slave SAE and wait for RESERVED — the peer has then stored
   the reservation durably, so the slave can fetch the keys there whatever happens next (keys
   of one stored unit go as RESERVE_RANGES, the lease's index ranges they came from: one row
   at the peer per range instead of a write to each key; keys of several units and stream
   keys as RESERVE records with their IDs);
3. return them; they are wiped from the lease's memory at once and erased from the file when
   the lease is settled (``settle``, which the node calls every few seconds) or closed.
A crash between 1 and 3 leaves the lease open; at restart ``void_open_leases`` erases all its
keys and the peer is told to erase them too (``void_peer_keys``), except those it had already
reserved — which the slave can still fetch, and which were never handed out twice.

Reserving ahead (``reserve_ahead`` > 0): a durable reservation at the peer costs an fsync there
(milliseconds on a busy disk), too much to wait for on every request. So for each (master,
slave) pair the pool keeps up to ``reserve_ahead`` keys already reserved at the peer for that
slave, topped up in the background by RESERVEs of up to ``REFILL_CHUNK`` keys, several in
flight; a request is answered from them at once. Size it to the keys a pair takes while the
peer's slowest fsync lasts: a request that finds too few waits for the peer itself (counter
``reserved_on_request``). The peer makes all the RESERVEs that reach it meanwhile durable in
one transaction (``KeyStore.reserve_many``).
Keys reserved ahead are held in memory only. A clean stop voids them at the peer (VOID, scope
RESERVED); after a crash the peer keeps them reserved — the slave can fetch only IDs it was
told, so they are never delivered — until the reservation TTL erases them.

Fetching here (the peer issued): ``deliver_many`` checks the reservation and erases durably, one
fsync for all the fetches queued meanwhile (group commit).

ETSI 004 streams: ``streams.StreamKeys``, the stream half of this class.

Voids: ``void_keys`` sends VOID and keeps it until the peer answers VOIDED (``resend_voids``
sends again; the runner calls it on a timer and when the peer reconnects).

Every store call runs in the executor: SQLite's fsync must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
import uuid
from typing import Awaitable, Callable

from daemon.keyservice import reservations as rv
from daemon.keyservice.service import (IssuedKey, KeysNotFound, NotAuthorized, PeerUnavailable,
                                       PoolExhausted, wipe_keys)
from daemon.keyservice.streams import STREAM_RESERVATION_TTL_S, StreamKeys
from daemon.keystore.errors import KeyNotFound, KeyNotReserved, LeaseError, StoreError

log = logging.getLogger("qkd.keyservice")

SendToPeer = Callable[[int, bytes], Awaitable[None]]

MAX_RESERVE_AHEAD = 65536
REFILL_CHUNK = 1024
"""Keys per background RESERVE; several may be in flight, so a fast client never waits for
the peer's fsync once the pool has warmed up."""
REFILL_PAUSE_S = 1.0
"""After a refill fails (pool exhausted, peer away) the next starts no sooner than this."""
COUNT_MAX_AGE_S = 0.25
"""How long a count of issuable keys is reused while none is taken here (new blocks committed
meanwhile show in the next count)."""


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


class NodeKeyPool(StreamKeys):
    """``KeyPool`` of one link (see ``daemon.keyservice.service``)."""

    def __init__(self, store, link_id: str, send: SendToPeer, *, key_size_bits: int,
                 lease_batch: int = 1024, reserve_timeout_s: float = 2.0,
                 reserve_ahead: int = 0, reservation_ttl_s: float | None = None,
                 executor=None):
        if not 0 <= reserve_ahead <= MAX_RESERVE_AHEAD:
            raise ValueError(f"reserve_ahead {reserve_ahead}: expected 0..{MAX_RESERVE_AHEAD}")
        self.store = store
        self._reserve_ahead = reserve_ahead
        self._reservation_ttl_s = reservation_ttl_s
        self._ahead: dict[tuple[str, str], collections.deque[IssuedKey]] = {}
        self._inflight: dict[tuple[str, str], int] = {}      # keys being reserved ahead
        self._paused_until: dict[tuple[str, str], float] = {}  # after a failed refill
        self.link_id = link_id
        self.key_size_bits = key_size_bits
        self._send = send
        self._lease_batch = lease_batch
        self._reserve_timeout_s = reserve_timeout_s
        self._executor = executor
        self._lease = None   # the open store.Lease keys are taken from
        self._spare: asyncio.Future | None = None   # the next lease, granted in the background
        # The background grant sets ``_granted`` in the same critical section as the store's
        # commit, so stored_key_count never misses the keys between the two (a grant done in
        # the store but not yet seen by the event loop).
        self._grant_guard = threading.Lock()
        self._granted = None
        # leases used up (or set aside for the spare): closed durably together, with the
        # settle of the open lease, at the next ``settle`` (one fsync for all of them)
        self._used: list = []
        self._count: tuple[float, int] | None = None   # (monotonic time, issuable units)
        self._counting: asyncio.Future | None = None  # a count running in the store's thread
        self._count_valid = True       # False: keys moved while the running count ran
        self._lease_lock = asyncio.Lock()
        self._store_lease_lock = asyncio.Lock()   # one settle or close of a lease at a time
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._fetcher = _Batcher(self._deliver_batch, executor)
        self._reserver = _Batcher(self._reserve_batch, executor)
        self._streams = {}                     # key_stream_id -> streams._Stream
        # receiver: stream_key_id(stream, index) -> (monotonic time bound, unit reserved here)
        self._stream_units: dict[uuid.UUID, tuple[float, uuid.UUID]] = {}
        self._voids: dict[int, tuple[rv.VoidScope, list[uuid.UUID]]] = {}   # seq -> unacked
        self._tasks: set[asyncio.Task] = set()
        self.counters = {"issued": 0, "fetched": 0, "reserved_for_peer": 0,
                         "reserve_refused": 0, "reserve_timeouts": 0, "stream_keys": 0,
                         "voids_sent": 0, "voided_here": 0,
                         "reserved_on_request": 0}

    # -- KeyPool ------------------------------------------------------------------------------

    async def stored_key_count(self, size_bits: int) -> int:
        """Keys of ``size_bits`` this end can still issue. Counted in the store's thread (a
        count over the store's index costs tens of ms at a few 10^5 keys: on the event loop,
        a client asking an exhausted pool again and again stalled every other client), and
        reused for up to ``COUNT_MAX_AGE_S`` while no key leaves this end."""
        units = self._units_per_key(size_bits)
        return await self._counted_units() // units if units else 0

    def stored_key_count_now(self, size_bits: int) -> int:
        """``stored_key_count`` counted here and now (the admin status: rare, not on the
        client path)."""
        units = self._units_per_key(size_bits)
        return self._stored_units() // units if units else 0

    def _units_per_key(self, size_bits: int) -> int:
        """Stored keys that make one key of ``size_bits``; 0 for a size they cannot make."""
        if size_bits <= 0 or size_bits % self.key_size_bits:
            return 0
        return size_bits // self.key_size_bits

    async def _counted_units(self) -> int:
        cached = self._count
        if cached is not None and time.monotonic() - cached[0] < COUNT_MAX_AGE_S:
            return cached[1]
        if self._counting is None:
            fut = self._counting = asyncio.ensure_future(self._store_call(self._stored_units))
            fut.add_done_callback(self._counted)
        return await asyncio.shield(self._counting)

    def _counted(self, fut: asyncio.Future) -> None:
        if self._counting is fut:
            self._counting = None
            if not fut.cancelled() and fut.exception() is None and self._count_valid:
                self._count = (time.monotonic(), fut.result())
        self._count_valid = True

    def _count_changed(self) -> None:
        """Keys left this end (or came back): the next count is made afresh."""
        self._count = None
        self._count_valid = self._counting is None

    def _stored_units(self) -> int:
        left = self._lease.remaining if self._lease is not None else 0
        with self._grant_guard:
            granted = self._granted
            issuable = self.store.issuable_count(self.link_id)
        return left + (granted.remaining if granted is not None else 0) + issuable

    def _grant_spare(self):
        with self._grant_guard:
            self._granted = self.store.lease(self.link_id, self._lease_batch)
        return self._granted

    @property
    def leased_remaining(self) -> int:
        return self._lease.remaining if self._lease is not None else 0

    async def issue(self, master: str, slaves: tuple[str, ...], number: int,
                    size_bits: int) -> list[IssuedKey]:
        if size_bits <= 0 or size_bits % self.key_size_bits or len(slaves) != 1:
            raise ValueError("the service's limits allow only multiples of the store's key "
                             "size and one slave")
        pair = (master, slaves[0])
        units = size_bits // self.key_size_bits
        if units > 1:
            # one key of several stored units: reserved at the peer with its unit IDs, so the
            # slave's one key ID finds them all there (never from the keys reserved ahead,
            # which the peer holds as single units)
            taken, unit_ids, _ = await self._take_units(number, units, *pair)
            await self._reserve_at_peer(
                [rv.Reservation(k.key_id, size_bits, u, master, (slaves[0],))
                 for k, u in zip(taken, unit_ids)], taken)
            self.counters["issued"] += len(taken)
            return taken
        if not self._reserve_ahead:
            taken, ranges = await self._take_ranged(number, *pair)
            await self._reserve_ranges_at_peer(pair, ranges, taken)
            self.counters["issued"] += len(taken)
            return taken
        queue = self._ahead.setdefault(pair, collections.deque())
        if len(queue) < number:
            # not enough reserved ahead: this request reserves its own keys and waits for the
            # peer (concurrent ones share the peer's fsync: it batches RESERVEs)
            self._top_up(pair)
            self.counters["reserved_on_request"] += 1
            taken, ranges = await self._take_ranged(number, *pair)
            await self._reserve_ranges_at_peer(pair, ranges, taken)
            self.counters["issued"] += number
            return taken
        out = [queue.popleft() for _ in range(number)]
        self.counters["issued"] += number
        self._top_up(pair)
        return out

    def _top_up(self, pair: tuple[str, str]) -> None:
        """Start background RESERVEs (chunks of up to ``REFILL_CHUNK`` keys, several in flight)
        until queued + in flight reaches ``reserve_ahead``."""
        if time.monotonic() < self._paused_until.get(pair, 0.0):
            return
        chunk = max(1, min(REFILL_CHUNK, self._reserve_ahead // 2))
        missing = self._reserve_ahead - len(self._ahead[pair]) - self._inflight.get(pair, 0)
        while missing >= chunk:
            self._inflight[pair] = self._inflight.get(pair, 0) + chunk
            missing -= chunk
            self._spawn(self._refill(pair, chunk))

    async def _fill(self, pair: tuple[str, str], number: int, at_least: int | None = None
                    ) -> None:
        """Take up to ``number`` keys (at least ``at_least``, by default all), reserve them at
        the peer for the pair's slave and queue them for the pair's master."""
        taken, ranges = await self._take_ranged(number, *pair, at_least=at_least)
        await self._reserve_ranges_at_peer(pair, ranges, taken)
        self._ahead[pair].extend(taken)

    async def _refill(self, pair: tuple[str, str], chunk: int) -> None:
        try:
            await self._fill(pair, chunk, at_least=1)
        except (PoolExhausted, PeerUnavailable) as exc:
            self._paused_until[pair] = time.monotonic() + REFILL_PAUSE_S
            log.info("key service: reserving ahead for %s -> %s paused for %g s: %s", *pair,
                     REFILL_PAUSE_S, exc)
        except StoreError as exc:    # the store failed (disk full, I/O error): say so, retry
            self._paused_until[pair] = time.monotonic() + REFILL_PAUSE_S
            log.error("key service: reserving ahead for %s -> %s paused for %g s: %s", *pair,
                      REFILL_PAUSE_S, exc)
        finally:
            self._inflight[pair] -= chunk

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def reserved_ahead(self) -> dict[str, int]:
        return {f"{m} -> {s}": len(q) for (m, s), q in self._ahead.items()}

    async def settle(self) -> int:
        """Durably erase the keys handed out from the open lease so far, and close the leases
        used up since the last settle, in one transaction; returns how many keys of the open
        lease were erased.

        Runs beside ``take`` (no lock held while the store works: a take appends to the
        lease's list of taken keys, the settle erases the ones it saw); a lease closed
        meanwhile was settled by its close."""
        async with self._store_lease_lock:
            lease = self._lease
            if lease is not None and (lease in self._used or lease.closed):
                lease = None
            try:
                done = await self._close_used([], settle=lease)
            except LeaseError:          # the open lease was closed meanwhile
                return 0
            return done[-1] if lease is not None else 0

    async def _close_leases(self, leases) -> None:
        """Close ``leases`` and every used-up lease now, durably, in one transaction."""
        async with self._store_lease_lock:
            await self._close_used([x for x in leases if x is not None])

    async def _close_used(self, leases: list, settle=None) -> list[int]:
        """``KeyStore.close_leases`` of the used-up leases and ``leases`` (and the settle of
        ``settle``); the caller holds ``_store_lease_lock``. On failure the used-up ones stay
        for the next try (the store passes over any this one did close: a cancelled call may
        still have run to its end in the store's thread)."""
        used, self._used = self._used, []
        if not used and not leases and settle is None:
            return []
        try:
            return await self._store_call(self.store.close_leases, used + leases, settle)
        except BaseException:
            self._used = used + self._used
            raise

    async def close(self, void_wait_s: float = 1.0) -> None:
        """End the open lease durably (taken keys erased, the rest back in the pool), wipe the
        keys held for stream sources and void at the peer the keys reserved ahead (waiting
        up to ``void_wait_s`` for its VOIDED; unacknowledged ones expire there)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        held: list[IssuedKey] = []
        for st in list(self._streams.values()):
            held += st.pending.values()
            st.pending.clear()
        for queue in self._ahead.values():
            held += queue
            queue.clear()
        if held:
            await self.void_keys(rv.VoidScope.RESERVED, [k.key_id for k in held])
            _burn(held)
            deadline = time.monotonic() + void_wait_s
            while self._voids and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        async with self._lease_lock:
            lease, self._lease = self._lease, None
            spare, self._spare = self._spare, None
            if spare is not None:
                spare = await _quietly(spare)
                self._granted = None
            await self._close_leases([lease, spare])

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

    # -- asking the peer ----------------------------------------------------------------------

    async def _ask_peer(self, message: tuple[int, bytes], seq: int, timeout_s: float):
        """Send ``message``; wait for the RESERVED (None) or REFUSED (reason) carrying ``seq``.

        ``timeout_s`` bounds the send too: a peer channel applies backpressure (its send waits
        while the peer is away), and a client must get its 503 rather than wait for ever."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiting[seq] = fut
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self._send(*message), timeout_s)
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        finally:
            self._waiting.pop(seq, None)

    async def _reserve_at_peer(self, records: list[rv.Reservation],
                               taken: list[IssuedKey]) -> None:
        """RESERVE ``records`` at the peer; on any doubt burn ``taken`` and raise."""
        await self._reserve_with(lambda seq: rv.encode_reserve(seq, records), taken)

    async def _reserve_ranges_at_peer(self, pair: tuple[str, str], ranges, taken) -> None:
        """RESERVE_RANGES of single-unit keys taken from the lease; as ``_reserve_at_peer``."""
        await self._reserve_with(lambda seq: rv.encode_reserve_ranges(seq, *pair, ranges),
                                 taken)

    async def _reserve_with(self, encode, taken: list[IssuedKey]) -> None:
        seq = next(self._seq) & 0xFFFFFFFF
        try:
            refusal = await self._ask_peer(encode(seq), seq, self._reserve_timeout_s)
        except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
            self.counters["reserve_timeouts"] += 1
            _burn(taken)
            raise PeerUnavailable(f"no reservation from the peer within "
                                  f"{self._reserve_timeout_s:g} s ({type(exc).__name__})") from None
        if refusal is not None:
            self.counters["reserve_refused"] += 1
            _burn(taken)
            raise PeerUnavailable(f"the peer refused the reservation: {refusal.name}")

    async def _send_quietly(self, message: tuple[int, bytes]) -> None:
        try:
            await asyncio.wait_for(self._send(*message), self._reserve_timeout_s)
        except (ConnectionError, OSError) as exc:   # TimeoutError is an OSError
            log.info("key service: peer message %#x not sent (%s); it is resent or its "
                     "sender times out", message[0], type(exc).__name__)

    # -- voids --------------------------------------------------------------------------------

    async def void_keys(self, scope: rv.VoidScope, key_ids: list[uuid.UUID]) -> None:
        """Tell the peer to erase ``key_ids``; kept and resent until it answers VOIDED."""
        for i in range(0, len(key_ids), rv.MAX_VOID_KEYS):
            seq = next(self._seq) & 0xFFFFFFFF
            self._voids[seq] = (scope, list(key_ids[i:i + rv.MAX_VOID_KEYS]))
            await self._send_void(seq)

    async def resend_voids(self) -> None:
        for seq in list(self._voids):
            await self._send_void(seq)

    @property
    def unacknowledged_voids(self) -> int:
        return sum(len(ids) for _, ids in self._voids.values())

    async def _send_void(self, seq: int) -> None:
        entry = self._voids.get(seq)
        if entry is not None:
            self.counters["voids_sent"] += 1
            await self._send_quietly(rv.encode_void(seq, *entry))

    async def _on_void(self, seq: int, scope: rv.VoidScope, key_ids: list[uuid.UUID]) -> None:
        fn = self.store.void_peer_keys if scope == rv.VoidScope.LEASE else self.store.void_reserved
        try:
            n = await self._store_call(fn, self.link_id, key_ids)
        except StoreError as exc:   # no VOIDED: the peer sends the VOID again
            log.error("key service: cannot erase keys the peer voided: %s", exc)
            return
        if scope == rv.VoidScope.RESERVED:
            gone = set(key_ids)
            for i in [i for i, (_s, u) in self._stream_units.items() if u in gone]:
                del self._stream_units[i]
        self.counters["voided_here"] += n
        await self._send_quietly(rv.encode_voided(seq))

    # -- peer messages ------------------------------------------------------------------------

    async def on_peer_message(self, msg_type: int, payload: bytes) -> None:
        """Handle a key-service message from the peer (the runner passes them on).

        Returns once the message is handled, except STREAM_PULL, whose work waits for the
        peer's own answer and so runs as a task: a receive loop that awaits this never
        deadlocks."""
        try:
            if msg_type == rv.ReservationMsgType.RESERVE_RANGES:
                await self._on_reserve_ranges(rv.decode_reserve_ranges(payload))
            elif msg_type == rv.ReservationMsgType.RESERVE:
                await self._on_reserve(*rv.decode_reserve(payload))
            elif msg_type == rv.ReservationMsgType.VOID:
                await self._on_void(*rv.decode_void(payload))
            elif msg_type == rv.ReservationMsgType.VOIDED:
                self._voids.pop(rv.decode_voided(payload), None)
            elif msg_type == rv.ReservationMsgType.STREAM_PULL:
                self._spawn(self._on_stream_pull(rv.decode_stream_pull(payload)))
            else:
                seq, refusal = rv.decode_reply(msg_type, payload)
                fut = self._waiting.get(seq)
                if fut is not None and not fut.done():
                    fut.set_result(refusal)
        except rv.ReservationMessageError as exc:
            log.warning("key service: malformed peer message %#x: %s", msg_type, exc)

    async def _on_reserve(self, seq: int, records: list[rv.Reservation]) -> None:
        reason = await self._reserver.submit(records)
        if reason is None:
            self.counters["reserved_for_peer"] += sum(len(r.units) for r in records)
            for r in records:
                if r.key_id != r.units[0]:    # an index of a stream: remember its unit
                    self._stream_units[r.key_id] = (time.monotonic(), r.units[0])
        await self._send_quietly(rv.encode_reply(seq, reason))

    async def _on_reserve_ranges(self, message: rv.RangeReservation) -> None:
        reason = await self._reserver.submit(message)
        if reason is None:
            self.counters["reserved_for_peer"] += sum(r.n_keys for r in message.ranges)
        await self._send_quietly(rv.encode_reply(message.seq, reason))

    # -- store work (executor) ----------------------------------------------------------------

    async def _store_call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _take(self, number: int, master: str, slave: str,
                    at_least: int | None = None) -> list[IssuedKey]:
        """Up to ``number`` keys (never fewer than ``at_least``, by default ``number``) taken
        from the current lease: each once; a taken key is erased when the lease is settled or
        closed, or at restart with the whole lease."""
        keys, _, _ = await self._take_units(number, 1, master, slave, at_least)
        return keys

    async def _take_ranged(self, number: int, master: str, slave: str,
                           at_least: int | None = None):
        """``_take`` and the keys taken as ``KeyRange``s of the lease, for RESERVE_RANGES."""
        keys, _, ranges = await self._take_units(number, 1, master, slave, at_least,
                                                 ranges=True)
        return keys, ranges

    async def _take_units(self, number: int, units: int, master: str, slave: str,
                          at_least: int | None = None, *, ranges: bool = False):
        """``_take`` of keys made of ``units`` stored keys each; also returns the unit IDs and,
        with ``ranges``, the stored keys taken as the lease's ``KeyRange``s (else None)."""
        need = units * (number if at_least is None else at_least)
        number_units = units * number
        async with self._lease_lock:
            if self._lease is None or self._lease.remaining < need:
                old, self._lease = self._lease, None
                spare, self._spare = self._spare, None
                if spare is not None:      # granted meanwhile: usually no wait at all
                    spare = await _quietly(spare)
                self._granted = None
                if spare is not None and spare.remaining >= need:
                    self._lease = spare
                    if old is not None:
                        self._close_later(old)
                else:    # close first, so that what they hold counts for the new lease
                    await self._close_leases([old, spare])
                    self._lease = await self._store_call(
                        self.store.lease, self.link_id, max(self._lease_batch, number_units))
                if self._lease is None or self._lease.remaining < need:
                    have = 0 if self._lease is None else self._lease.remaining
                    raise PoolExhausted(f"{have} keys ready to issue")
            lease = self._lease
            start = lease.taken
            keys = lease.take_units(number, units, master_sae=master, slave_sae=slave)
            key_ranges = lease.key_ranges(start, lease.taken) if ranges and keys else None
            self._count_changed()
            if self._lease.remaining == 0:
                self._close_later(self._lease)
                self._lease = None
            # the next lease is granted in the background while half of this one is left, so
            # a request seldom waits for a grant
            if self._spare is None and (self._lease is None or self._lease.remaining
                                        < self._lease_batch // 2):
                self._spare = asyncio.ensure_future(self._store_call(self._grant_spare))
            return ([IssuedKey(k, b) for k, b, _ in keys], [u for _, _, u in keys],
                    key_ranges)

    def _close_later(self, lease) -> None:
        """Close a used-up lease durably at the next ``settle`` (its taken keys are erased,
        the rest go back to the pool), with the others used up meanwhile: one fsync for all."""
        self._used.append(lease)

    def _deliver_batch(self, requests):
        return self.store.deliver_many(requests)

    def _reserve_batch(self, batches: list):
        """All RESERVE and RESERVE_RANGES messages queued meanwhile in one durable transaction
        (group commit): one reservation per (master, slave, kind) of each RESERVE."""
        out: list[rv.RefusalReason | None] = []
        requests: list[tuple] = []
        owner: list[int] = []          # request -> index of its message in ``out``
        by_range: list[tuple] = []
        range_owner: list[int] = []
        for records in batches:
            if isinstance(records, rv.RangeReservation):
                out.append(None)
                by_range.append((records.ranges, records.slave, records.master,
                                 self._reservation_ttl_s))
                range_owner.append(len(out) - 1)
                continue
            groups: dict[tuple[str, str, bool], list[uuid.UUID]] = {}
            composites: dict[tuple[str, str, bool], list[tuple[uuid.UUID, ...]]] = {}
            reason = None
            for r in records:
                stream = r.key_id != r.units[0]
                if r.size_bits != len(r.units) * self.key_size_bits:
                    reason = rv.RefusalReason.MALFORMED   # not made of this store's units
                groups.setdefault((r.master, r.slaves[0], stream), []).extend(r.units)
                if len(r.units) > 1:
                    composites.setdefault((r.master, r.slaves[0], stream), []).append(r.units)
            out.append(reason)
            if reason is not None:
                continue
            for (master, slave, stream), units in groups.items():
                requests.append((units, slave, master,
                                 STREAM_RESERVATION_TTL_S if stream else self._reservation_ttl_s,
                                 composites.get((master, slave, stream), ())))
                owner.append(len(out) - 1)
        if requests or by_range:
            try:
                bad, done = self.store.reserve_batch(self.link_id, requests, by_range)
            except StoreError as exc:
                log.error("key service: cannot store a reservation: %s", exc)
                return [rv.RefusalReason.STORE_ERROR if r is None else r for r in out]
            for i, missing in zip(owner, bad):
                if missing and out[i] is None:
                    out[i] = rv.RefusalReason.UNKNOWN_KEY
            for i, ok in zip(range_owner, done):
                if not ok:
                    out[i] = rv.RefusalReason.UNKNOWN_KEY
        return out


async def _quietly(fut):
    """The result of a background store call, or None (logged) if it failed."""
    try:
        return await fut
    except StoreError as exc:
        log.error("key service: a background lease failed: %s", exc)
        return None


def _burn(keys: list[IssuedKey]) -> None:
    """Keys whose reservation is in doubt: the peer may hold them for the slave, so they are
    never handed out here (taken from the lease, they are erased with it)."""
    wipe_keys(keys)

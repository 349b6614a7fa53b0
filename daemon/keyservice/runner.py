"""The key service as the node daemon runs it: socket, semantics, pool and timers in one object.

``KeyServiceRunner`` owns the ZeroMQ ROUTER (``server``), the ETSI semantics (``service``) and
the node's pool over the durable store (``pool``), plus the periodic work they need: settle the
open lease (taken keys leave the file), resend unacknowledged VOIDs, expire old reservations.
It knows nothing of the peer channel: the node gives it a send function and passes it the
peer's key-service messages.

How the node daemon uses it (one key service per node, serving the link ``settings.link_id``;
``daemon/runtime/node.py`` is the only caller; ``daemon/config.py`` reads the table with
``parse_settings`` into ``NodeConfig.keyservice``)::

    settings = parse_settings(toml["keyservice"], base_dir=config_file.parent)
    runner = KeyServiceRunner(settings, store, send, key_size_bits=cfg.keystore.key_size_bits,
                              executor=thread_pool)
    await runner.start()          # after the store is open, before or after the peer is up

``send(msg_type, payload)`` is an ``async`` function that sends one message to the peer node
over the link's authenticated peer channel (message type < 256 and payload bytes, delivered in
order). With ``daemon.peer.channel.PeerChannel`` that is
``lambda t, p: channel.send(channel.link_id, LINK_BLOCK_ID, 0, t, p)`` (block id 0, as the engine's
link-level messages; their tags are charged to block 0), and the channel must be built with
``MESSAGE_TYPES`` among its ``allowed_types``. ``send`` may raise ``ConnectionError`` or wait
while the peer is away: the runner bounds every send by its reserve timeout and resends what
must arrive. Every envelope received on the link whose ``msg_type`` is in ``MESSAGE_TYPES``
(0x60..0x65) must reach ``await runner.on_peer_message(env.msg_type, env.payload)`` — the
engine drains the channel, so it forwards them; the call returns quickly and never waits for
the peer, so a receive loop may await it. When the peer channel (re)connects the node awaits
``runner.peer_connected()`` (VOIDs are resent at once instead of at the next timer).

Reload (SIGHUP, and the admin op ``{"op": "keyservice_reload"}`` that ``qkdctl
reload-clients`` sends): the node re-reads its TOML and calls ``runner.reload(parse_clients(
toml["keyservice"]["clients"], base_dir=config_file.parent))`` (a dict of Z85 public key ->
SAE ID), answering ``{"clients": N}``; a ``ValueError`` (one line, naming the entry) keeps the
old list and becomes the admin reply's error. The admin op ``{"op": "keyservice"}`` answers
``{"keyservice": runner.status()}`` (clients, reservations, pool fill, streams, counters; never
key material) — ``qkdctl clients`` and ``qkdctl reservations`` read it. ``status()`` reads the
store, so it may wait a few ms behind a store write. On shutdown: ``await runner.close()``
(closes the socket, voids the keys reserved ahead at the peer, ends the lease durably, wipes
cached replies) before closing the peer channel (the VOID needs it, up to one second) and the
store.

At ``start`` every lease the store has left open is voided (a lease exists only while this
service runs) and the peer is told to erase those keys too (VOID, resent until VOIDED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Awaitable, Callable

from daemon.keyservice import reservations as rv
from daemon.keyservice.pool import NodeKeyPool
from daemon.keyservice.server import KeyServer, key_fingerprint
from daemon.keyservice.service import KeyService, KmeLimits
from daemon.keyservice.settings import KeyServiceSettings, parse_clients, parse_settings

__all__ = ["MESSAGE_TYPES", "KeyServiceRunner", "KeyServiceSettings", "parse_clients",
           "parse_settings"]

log = logging.getLogger("qkd.keyservice")

MESSAGE_TYPES = rv.MESSAGE_TYPES
SendToPeer = Callable[[int, bytes], Awaitable[None]]


class KeyServiceRunner:
    """One node's key service, started and stopped by the node (see the module docstring)."""

    def __init__(self, settings: KeyServiceSettings, store, send: SendToPeer, *,
                 key_size_bits: int, executor=None, context=None):
        self.settings = settings
        self.store = store
        self._send = send
        self._key_size_bits = key_size_bits
        self._executor = executor
        self._context = context
        self.pool: NodeKeyPool | None = None
        self.service: KeyService | None = None
        self.server: KeyServer | None = None
        self._timers: list[asyncio.Task] = []
        self.voided_at_start = 0

    def _limits(self, clients: dict) -> KmeLimits:
        s = self.settings
        return KmeLimits(kme_id=s.kme_id, peer_kme_id=s.peer_kme_id,
                         local_saes=frozenset(clients.values()), remote_saes=s.remote_saes,
                         key_size=self._key_size_bits, min_key_size=self._key_size_bits,
                         max_key_size=self._max_key_size(), key_unit=self._key_size_bits,
                         max_key_per_request=s.max_key_per_request,
                         max_key_count=s.max_key_count, max_sae_id_count=0)

    def _max_key_size(self) -> int:
        """The settings' max_key_size, which must be a whole number of stored keys."""
        m, unit = self.settings.max_key_size, self._key_size_bits
        if m is None:
            return max(unit, 8192 // unit * unit)
        if not isinstance(m, int) or m < unit or m % unit or m // unit > rv.MAX_UNITS:
            raise ValueError(f"keyservice.max_key_size = {m!r}: expected a multiple of the "
                             f"store's key size {unit} bits, from {unit} to "
                             f"{unit * rv.MAX_UNITS}")
        return m

    @property
    def endpoint(self) -> str:
        """The bound endpoint (the port resolved when the config said ``*``)."""
        return self.server.endpoint if self.server is not None else self.settings.endpoint

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        voided = await loop.run_in_executor(self._executor, self.store.void_open_leases)
        self.pool = NodeKeyPool(self.store, s.link_id, self._send,
                                key_size_bits=self._key_size_bits, lease_batch=s.lease_batch,
                                reserve_timeout_s=s.reserve_timeout_s,
                                reserve_ahead=s.reserve_ahead,
                                reservation_ttl_s=s.reservation_ttl_s, executor=self._executor)
        self.service = KeyService(self._limits(s.clients), self.pool, reply_ttl_s=s.reply_ttl_s)
        self.server = KeyServer(self.service, s.endpoint, public_key=s.public_key,
                                secret_key=s.secret_key, clients=s.clients,
                                context=self._context)
        await self.server.start()
        mine = voided.get(s.link_id, [])
        self.voided_at_start = len(mine)
        if mine:
            log.warning("key service: %d keys of leases left open by the last stop erased "
                        "here; telling the peer to erase them too", len(mine))
            await self.pool.void_keys(rv.VoidScope.LEASE, mine)
        self._timers = [asyncio.create_task(self._every(s.settle_interval_s, self._settle)),
                        asyncio.create_task(self._every(s.housekeeping_interval_s,
                                                        self._housekeeping))]
        log.info("key service on %s: %d clients, link %s", self.endpoint, len(s.clients),
                 s.link_id)

    async def close(self) -> None:
        for t in self._timers:
            t.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers = []
        if self.server is not None:
            await self.server.stop()
        if self.pool is not None:
            await self.pool.close()

    async def on_peer_message(self, msg_type: int, payload: bytes) -> None:
        if self.pool is None:
            log.info("key service: peer message %#x before start, dropped (the peer retries)",
                     msg_type)
            return
        await self.pool.on_peer_message(msg_type, payload)

    async def peer_connected(self) -> None:
        if self.pool is not None:
            await self.pool.resend_voids()

    def reload(self, clients: dict) -> None:
        """Replace the client allow-list (SIGHUP / admin); ValueError keeps the old one."""
        if not clients:
            raise ValueError("keyservice.clients: an empty allow-list would lock every client "
                             "out; keeping the current one")
        self.server.set_clients(clients)
        self.service.limits = self._limits(clients)
        self.settings = dataclasses.replace(self.settings, clients=dict(clients))

    def _store_counts(self) -> tuple[dict, int]:
        """What the admin view counts in the store (index scans: tens of ms at 10^5 keys)."""
        return (self.store.reservation_counts(self.settings.link_id),
                self.pool.stored_key_count_now(self._key_size_bits))

    async def status_view(self) -> dict[str, Any]:
        """``status`` with its store counts made in a thread, off the event loop that serves
        the clients."""
        counts = await asyncio.get_running_loop().run_in_executor(None, self._store_counts)
        return self.status(counts)

    def status(self, counts: tuple[dict, int] | None = None) -> dict[str, Any]:
        """The admin view: no key material, no secret key. ``counts`` as ``_store_counts``
        returns them (counted here when not given)."""
        pool, server = self.pool, self.server
        reserved, issuable = self._store_counts() if counts is None else counts
        reservations = [{"master_SAE_ID": m, "slave_SAE_ID": s, "keys": n} for (m, s), n in
                        sorted(reserved.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]
        fill = self.store.fill()
        return {
            "endpoint": self.endpoint, "link": self.settings.link_id,
            "kme_id": self.settings.kme_id, "peer_kme_id": self.settings.peer_kme_id,
            "clients": [{"sae_id": sae, "fingerprint": key_fingerprint(key)}
                        for key, sae in sorted(server.clients.items(), key=lambda kv: kv[1])],
            "remote_saes": sorted(self.settings.remote_saes),
            "reservations": reservations,
            "pool": {"key_size": self._key_size_bits,
                     "issuable": issuable,
                     "leased_remaining": pool.leased_remaining,
                     "store_keys": fill.keys, "store_bits": fill.bits,
                     "max_keys": fill.max_keys, "max_bits": fill.max_bits},
            "reserved_ahead": pool.reserved_ahead,
            "streams": pool.stream_status(),
            "unacknowledged_voids": pool.unacknowledged_voids,
            "voided_at_start": self.voided_at_start,
            "rejected_client_keys": server._auth.rejected,
            "failed_handshakes": server.handshake_failures,
            "counters": {**self.service.counters, **pool.counters},
        }

    # -- timers -------------------------------------------------------------------------------

    async def _every(self, interval_s: float, fn) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except Exception:   # a store hiccup must not stop the timer; it is logged
                log.exception("key service: periodic %s failed", fn.__name__)

    async def _settle(self) -> None:
        await self.pool.settle()

    async def _housekeeping(self) -> None:
        await self.pool.resend_voids()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.expire)
        self.pool.forget_expired_bindings()

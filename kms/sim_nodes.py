"""Two stand-in nodes' key services on loopback, for the demo, the tests and the benchmark.

The one module of ``kms/`` that imports the node's key-service *server*: when no node daemon
runs, ``qkd-kms demo`` still needs two key services that hand out matching keys. They are the
node's real ``KeyServer``/``KeyService`` (CurveZMQ, ZAP allow-list, ETSI 014 semantics) over an
in-memory link pool filled with ``os.urandom`` bytes instead of distilled key. The KMS itself
reaches them only through the client library, exactly as it reaches a real node.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import zmq

from daemon.keyservice.server import KeyServer
from daemon.keyservice.service import (IssuedKey, KeyService, KeysNotFound, KmeLimits,
                                       NotAuthorized, PoolExhausted)
from kms.keysource import SaeCredentials, SiteNode, sae_id


class _LinkMaterial:
    """Key bytes both stand-in nodes share; reservations made at A are fetched at B."""

    def __init__(self, n_bytes: int):
        self.material = bytearray(os.urandom(n_bytes))
        self.offset = 0
        self.reserved: dict[uuid.UUID, tuple[str, set[str], bytearray]] = {}
        self.lock = asyncio.Lock()

    def left(self) -> int:
        return len(self.material) - self.offset


class _StandInPool:
    def __init__(self, link: _LinkMaterial):
        self.link = link

    async def stored_key_count(self, size_bits: int) -> int:
        return self.link.left() // (size_bits // 8)

    async def issue(self, master, slaves, number, size_bits):
        link, n = self.link, size_bits // 8
        async with link.lock:
            if link.left() < number * n:
                raise PoolExhausted(f"{link.left()} bytes left")
            out = []
            for _ in range(number):
                kid = uuid.uuid4()
                chunk = bytearray(link.material[link.offset:link.offset + n])
                link.material[link.offset:link.offset + n] = bytes(n)
                link.offset += n
                link.reserved[kid] = (master, set(slaves), bytearray(chunk))
                out.append(IssuedKey(kid, chunk))
            return out

    async def fetch(self, caller, master, key_ids):
        link = self.link
        async with link.lock:
            for kid in key_ids:
                rec = link.reserved.get(kid)
                if rec is None or rec[0] != master:
                    raise KeysNotFound(str(kid))
                if caller not in rec[1]:
                    raise NotAuthorized(str(kid))
            out = []
            for kid in key_ids:
                _, slaves, key = link.reserved[kid]
                slaves.discard(caller)
                out.append(IssuedKey(kid, bytearray(key)))
                if not slaves:
                    key[:] = bytes(len(key))
                    del link.reserved[kid]
            return out

    async def stream_key(self, stream, index, caller, timeout_s):
        raise KeysNotFound("the stand-in nodes serve ETSI 014 only")


# Sizes as a real node offers them: whole numbers of its store's 256-bit keys, so that a level
# a real node would refuse (say 264 bits) is refused here too.
_NODE_SIZES = dict(key_size=256, min_key_size=256, key_unit=256)


class StandInNodes:
    """Start with ``with StandInNodes(services) as (a, b):`` — two sites' key services."""

    def __init__(self, services, *, link_bytes: int = 1 << 22, max_key_size: int = 8192,
                 sae_a: str = "kms-a", sae_b: str = "kms-b"):
        self.services = list(services)
        self.link_bytes, self.max_key_size = link_bytes, max_key_size
        self.saes = (sae_a, sae_b)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stand-in-nodes",
                                        daemon=True)
        self._servers: list[KeyServer] = []
        self.sites: tuple[SiteNode, SiteNode] | None = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> tuple[SiteNode, SiteNode]:
        self._thread.start()
        link = _LinkMaterial(self.link_bytes)
        a_sae, b_sae = self.saes
        creds = [{s: SaeCredentials(*zmq.curve_keypair()) for s in self.services}
                 for _ in range(2)]
        sites = []
        for me, peer, mine in ((a_sae, b_sae, creds[0]), (b_sae, a_sae, creds[1])):
            limits = KmeLimits(kme_id=f"KME-{me}", peer_kme_id=f"KME-{peer}",
                               local_saes=frozenset(sae_id(me, s) for s in self.services),
                               remote_saes=frozenset(sae_id(peer, s) for s in self.services),
                               max_key_size=self.max_key_size, max_key_per_request=128,
                               max_key_count=1 << 30, **_NODE_SIZES)
            pub, sec = zmq.curve_keypair()
            clients = {c.public_key: sae_id(me, s) for s, c in mine.items()}

            async def make(limits=limits, pub=pub, sec=sec, clients=clients):
                srv = KeyServer(KeyService(limits, _StandInPool(link)), "tcp://127.0.0.1:*",
                                public_key=pub, secret_key=sec, clients=clients)
                await srv.start()
                return srv

            srv = asyncio.run_coroutine_threadsafe(make(), self._loop).result(10)
            self._servers.append(srv)
            sites.append(SiteNode(srv.endpoint, pub, me, peer, mine))
        self.sites = (sites[0], sites[1])
        return self.sites

    def stop(self) -> None:
        async def stop_all():
            for s in self._servers:
                await s.stop()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._servers.clear()

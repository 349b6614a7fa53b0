"""An in-memory stand-in for two nodes' key pools sharing one link (tests only).

It models what the service relies on: keys issued at node A for slaves are reserved at node B
before ``issue`` returns; each named slave may fetch a key once at B; delivered keys are gone.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from daemon.keyservice.service import (IssuedKey, KeysNotFound, NotAuthorized, PoolExhausted)


class SharedLink:
    def __init__(self, n_bytes: int):
        self.material = bytearray(os.urandom(n_bytes))
        self.offset = 0
        self.reserved: dict[uuid.UUID, dict] = {}
        self.streams: dict[tuple[str, int], IssuedKey] = {}
        self.lock = asyncio.Lock()

    def take(self, n: int) -> bytearray:
        if self.offset + n > len(self.material):
            raise PoolExhausted(f"{len(self.material) - self.offset} bytes left")
        out = bytearray(self.material[self.offset:self.offset + n])
        self.material[self.offset:self.offset + n] = bytes(n)
        self.offset += n
        return out


class MemoryPool:
    """One node's view of a ``SharedLink``."""

    def __init__(self, link: SharedLink):
        self.link = link

    async def stored_key_count(self, size_bits: int) -> int:
        return (len(self.link.material) - self.link.offset) // (size_bits // 8)

    async def issue(self, master, slaves, number, size_bits):
        async with self.link.lock:
            if await self.stored_key_count(size_bits) < number:
                raise PoolExhausted("not enough")
            out = []
            for _ in range(number):
                kid = uuid.uuid4()
                bits = self.link.take(size_bits // 8)
                self.link.reserved[kid] = {"master": master, "slaves": set(slaves),
                                           "key": bytes(bits)}
                out.append(IssuedKey(kid, bits))
            return out

    async def fetch(self, caller, master, key_ids):
        async with self.link.lock:
            recs = []
            for kid in key_ids:
                rec = self.link.reserved.get(kid)
                if rec is None or rec["master"] != master:
                    raise KeysNotFound(str(kid))
                if caller not in rec["slaves"]:
                    raise NotAuthorized(str(kid))
                recs.append((kid, rec))
            out = []
            for kid, rec in recs:
                rec["slaves"].discard(caller)
                out.append(IssuedKey(kid, bytearray(rec["key"])))
                if not rec["slaves"]:
                    del self.link.reserved[kid]
            return out

    async def stream_key(self, stream, index, caller, timeout_s):
        async with self.link.lock:
            key = (stream.key_stream_id, index)
            if key not in self.link.streams:
                self.link.streams[key] = IssuedKey(uuid.uuid4(), self.link.take(
                    stream.qos.key_chunk_size))
                self.link.streams[key].delivered = set()
            rec = self.link.streams[key]
            if caller in rec.delivered:
                raise KeysNotFound(f"index {index}")
            rec.delivered.add(caller)
            return IssuedKey(rec.key_id, bytearray(rec.key))

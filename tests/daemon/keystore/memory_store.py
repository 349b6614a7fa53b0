"""An in-memory stand-in for the block half of ``KeyStore`` (prepare/commit/discard/...).

The exhaustive commit-protocol test explores hundreds of thousands of states; SQLite with
fsync per step would take hours. This model keeps exactly the durable block semantics the
protocol relies on (test_commit_model.py checks it against the real store op by op).
"""

from __future__ import annotations

import uuid

from daemon.keystore.errors import BlockStateError, KeyIdReused, StoreFull
from daemon.keystore.store import BlockInfo


class MemoryStore:
    def __init__(self, max_keys: int | None = None):
        self.blocks: dict[tuple[str, int], list] = {}     # -> [role, state, size, tag, {id: bits}]
        self.seen: set[uuid.UUID] = set()
        self.max_keys = max_keys

    def live_keys(self) -> int:
        return sum(len(b[4]) for b in self.blocks.values())

    def prepare(self, link_id, block_id, keys, *, coordinator, commit_tag=b"", auth_bits=None):
        if not keys:
            raise ValueError("no keys")
        if self.max_keys is not None and self.live_keys() + len(keys) > self.max_keys:
            raise StoreFull("full")
        if (link_id, block_id) in self.blocks:
            raise BlockStateError("exists")
        ids = [k for k, _ in keys]
        if len(set(ids)) != len(ids) or self.seen.intersection(ids):
            raise KeyIdReused("reused")
        self.seen.update(ids)
        self.blocks[(link_id, block_id)] = [
            "coordinator" if coordinator else "participant", "prepared", 8 * len(keys[0][1]),
            bytes(commit_tag), {k: bytes(b) for k, b in keys}]

    def commit(self, link_id, block_id, *, refill_index=None):
        """(Authentication refills are not modelled: the protocol test is about key states.)"""
        b = self.blocks.get((link_id, block_id))
        if b is None or b[1] == "discarded":
            raise BlockStateError("cannot commit")
        b[1] = "committed"

    def discard(self, link_id, block_id):
        b = self.blocks.get((link_id, block_id))
        if b is None:
            return False
        if b[1] == "committed":
            raise BlockStateError("cannot discard")
        b[1] = "discarded"
        b[4] = {}
        return True

    def block_state(self, link_id, block_id):
        b = self.blocks.get((link_id, block_id))
        return b[1] if b else None

    def block_info(self, link_id, block_id):
        b = self.blocks.get((link_id, block_id))
        if b is None:
            return None
        return BlockInfo(link_id, block_id, b[0], b[1], b[2], len(b[4]), b[3])

    def in_doubt(self, link_id):
        return sorted(bid for (lid, bid), b in self.blocks.items()
                      if lid == link_id and b[1] == "prepared")

    def clone(self) -> "MemoryStore":
        other = MemoryStore(self.max_keys)
        other.blocks = {k: [*b[:4], dict(b[4])] for k, b in self.blocks.items()}
        other.seen = set(self.seen)
        return other

    def snapshot(self):
        return tuple(sorted((k, b[0], b[1], b[3], tuple(sorted(b[4].items())))
                            for k, b in self.blocks.items()))

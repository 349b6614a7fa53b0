"""Hypothesis stateful test of the store API against a plain-Python model.

Invariants after every step: a key ID maps to one bit string forever (the store never holds
other bits under an ID, and refuses an old ID); delivered keys are gone; no key is delivered
twice; a refused request consumes nothing; the capacity counters equal the rows.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.keystore import store as store_mod
from daemon.keystore.errors import (BlockStateError, KeyIdReused, KeyNotFound, KeyNotReserved,
                                    StoreFull)
from daemon.keystore.ranges import KeyRange
from daemon.keystore.store import KeyStore

LINK = "L"
MAX_KEYS = 24


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ks-stateful-")
        self.path = f"{self.dir}/k.db"
        self.store = KeyStore(self.path, max_keys=MAX_KEYS)
        self.bits_of: dict[uuid.UUID, bytes] = {}       # every ID ever stored, forever
        self.state: dict[uuid.UUID, str] = {}           # live keys
        self.issuer: dict[uuid.UUID, str] = {}
        self.reserved_for: dict[uuid.UUID, str] = {}
        self.blocks: dict[int, tuple[str, list[uuid.UUID]]] = {}
        self.leases: dict[int, object] = {}              # lease id -> Lease
        self.untaken: dict[int, list[uuid.UUID]] = {}     # lease id -> keys not yet taken
        self.delivered: set[uuid.UUID] = set()
        # block, lo, hi, keys, digest, slave
        self.ranges: list[tuple[int, int, int, int, bytes, str]] = []
        self.next_block = 0
        self.next_id = 1

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _erase(self, ids):
        for k in ids:
            self.state.pop(k, None)
            self.reserved_for.pop(k, None)

    # ------------------------------------------------------------------ engine side
    @rule(n=st.integers(1, 6), coordinator=st.booleans(), data=st.data())
    def prepare(self, n, coordinator, data):
        ids = [uuid.UUID(int=self.next_id + i) for i in range(n)]
        self.next_id += n
        keys = [(k, data.draw(st.binary(min_size=2, max_size=2))) for k in ids]
        block = self.next_block
        self.next_block += 1
        if len(self.state) + n > MAX_KEYS:
            try:
                self.store.prepare(LINK, block, keys, coordinator=coordinator)
            except StoreFull:
                return
            raise AssertionError("capacity not enforced")
        self.store.prepare(LINK, block, keys, coordinator=coordinator)
        parity = 0 if coordinator else 1
        for i, (k, b) in enumerate(keys):
            self.bits_of[k] = b
            self.state[k] = "pending"
            self.issuer[k] = "local" if i % 2 == parity else "peer"
        self.blocks[block] = ("prepared", ids)

    @precondition(lambda self: self.bits_of)
    @rule(data=st.data())
    def prepare_with_an_old_id(self, data):
        old = data.draw(st.sampled_from(sorted(self.bits_of)))
        try:
            self.store.prepare(LINK, self.next_block, [(old, b"zz")], coordinator=True)
        except (KeyIdReused, StoreFull):
            return
        raise AssertionError("an old key ID was accepted again")

    @precondition(lambda self: any(s == "prepared" for s, _ in self.blocks.values()))
    @rule(data=st.data(), commit=st.booleans())
    def decide(self, data, commit):
        block = data.draw(st.sampled_from(sorted(b for b, (s, _) in self.blocks.items()
                                                 if s == "prepared")))
        ids = self.blocks[block][1]
        if commit:
            self.store.commit(LINK, block)
            for k in ids:
                self.state[k] = "committed"
            self.blocks[block] = ("committed", ids)
        else:
            self.store.discard(LINK, block)
            self._erase(ids)
            self.blocks[block] = ("discarded", ids)

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def wrong_transition_refused(self, data):
        block = data.draw(st.sampled_from(sorted(self.blocks)))
        s = self.blocks[block][0]
        if s == "committed":
            try:
                self.store.discard(LINK, block)
            except BlockStateError:
                return
            raise AssertionError("committed block discarded")
        if s == "discarded":
            try:
                self.store.commit(LINK, block)
            except BlockStateError:
                return
            raise AssertionError("discarded block committed")

    # ------------------------------------------------------------------ this end issues
    @rule(n=st.integers(1, 5))
    def lease(self, n):
        pool = [k for k, s in self.state.items() if s == "committed" and self.issuer[k] == "local"]
        got = self.store.lease(LINK, n)
        if not pool:
            assert got is None
            return
        assert len(got.key_ids) == min(n, len(pool)) and set(got.key_ids) <= set(pool)
        for k in got.key_ids:
            self.state[k] = "leased"
        self.leases[got.lease_id] = got
        self.untaken[got.lease_id] = list(got.key_ids)

    @precondition(lambda self: any(self.untaken.values()))
    @rule(data=st.data(), n=st.integers(0, 3))
    def take(self, data, n):
        lease_id = data.draw(st.sampled_from(sorted(l for l, ks in self.untaken.items() if ks)))
        got = self.leases[lease_id].take(n, master_sae="m", slave_sae="s")
        assert [k for k, _ in got] == self.untaken[lease_id][:n]
        del self.untaken[lease_id][:n]
        self._delivered(got, erase=False)

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), close=st.booleans())
    def settle_or_close_lease(self, data, close):
        lease_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases[lease_id]
        taken = [k for k in lease.key_ids if k not in self.untaken[lease_id]
                 and k in self.state]
        if close:
            assert self.store.close_lease(lease) == len(self.untaken[lease_id])
            for k in self.untaken.pop(lease_id):
                self.state[k] = "committed"
            del self.leases[lease_id]
        else:
            assert self.store.settle_lease(lease) == len(taken)
        self._erase(taken)

    # ------------------------------------------------------------------ the peer issues
    @precondition(lambda self: any(s == "committed" and self.issuer[k] == "peer"
                                   for k, s in self.state.items()))
    @rule(data=st.data(), sae=st.sampled_from(["Y", "Z"]))
    def reserve(self, data, sae):
        pool = sorted(k for k, s in self.state.items() if s == "committed"
                      and self.issuer[k] == "peer")
        ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        assert self.store.reserve(LINK, ids, slave_sae=sae, master_sae="X") == []
        for k in ids:
            self.state[k] = "reserved"
            self.reserved_for[k] = sae

    @precondition(lambda self: any(s == "committed" for s, _ in self.blocks.values()))
    @rule(data=st.data(), sae=st.sampled_from(["Y", "Z"]), honest=st.booleans())
    def reserve_range(self, data, sae, honest):
        """RESERVE_RANGES: all of a range's keys reserved, or none — a wrong digest, a range
        overlapping another, or one naming no key refused; the same range again is no change."""
        block = data.draw(st.sampled_from(sorted(b for b, (s, _) in self.blocks.items()
                                                 if s == "committed")))
        ids = self.blocks[block][1]
        lo = data.draw(st.integers(0, len(ids) - 1))
        hi = data.draw(st.integers(lo, len(ids) - 1))
        named = [k for k in ids[lo:hi + 1] if self.state.get(k) == "committed"
                 and self.issuer[k] == "peer"]
        repeat = [r for r in self.ranges if r[0] == block and r[1] == lo and r[2] == hi]
        if repeat:           # the same range again, as sent before
            _, _, _, n, digest, first = repeat[0]
            rng = KeyRange(block, lo, hi, n, digest)
            assert self.store.reserve_ranges(LINK, [rng], slave_sae=first, master_sae="X")
            assert self.store.reserve_ranges(LINK, [rng], slave_sae=first, master_sae="X2") \
                is False                                       # not the same reservation
            return
        if not named:
            return
        digest = KeyRange.digest_of([k.bytes for k in named]
                                    + ([] if honest else [uuid.UUID(int=0).bytes]))
        overlaps = any(r[0] == block and r[1] <= hi and r[2] >= lo for r in self.ranges)
        before = self.store.fill().keys
        ok = self.store.reserve_ranges(LINK, [KeyRange(block, lo, hi, len(named), digest)],
                                       slave_sae=sae, master_sae="X")
        assert ok == (honest and not overlaps)
        assert self.store.fill().keys == before
        if ok:
            self.ranges.append((block, lo, hi, len(named), digest, sae))
            for k in named:
                self.state[k] = "reserved"
                self.reserved_for[k] = sae

    @precondition(lambda self: self.bits_of)
    @rule(data=st.data(), sae=st.sampled_from(["Y", "Z"]))
    def deliver(self, data, sae):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.bits_of)), min_size=1, max_size=3,
                                 unique=True))
        ok = all(self.reserved_for.get(k) == sae and k in self.state for k in ids)
        before = self.store.fill().keys
        try:
            got = self.store.deliver(ids, sae_id=sae)
        except (KeyNotFound, KeyNotReserved):
            assert not ok
            assert self.store.fill().keys == before            # nothing consumed
            return
        assert ok
        self._delivered(got)

    def _delivered(self, got, erase=True):
        for k, b in got:
            assert k not in self.delivered, "delivered twice"
            assert bytes(b) == self.bits_of[k]
            self.delivered.add(k)
        if erase:
            self._erase([k for k, _ in got])

    # ------------------------------------------------------------------ restart
    @rule()
    def restart(self):
        """Reopen without a clean close; open leases are voided before any service runs."""
        self.store._close_quietly()
        self.store = KeyStore(self.path, max_keys=MAX_KEYS)
        voided = self.store.void_open_leases()
        expect = {k for lease in self.leases.values() for k in lease.key_ids if k in self.state}
        assert set(voided.get(LINK, [])) == expect
        self._erase(expect)
        self.leases.clear()
        self.untaken.clear()

    # ------------------------------------------------------------------ invariants
    @invariant()
    def store_matches_model(self):
        # a committed key inside an open lease's ranges is leased (the state column says
        # committed: a lease is recorded as ranges, not on each key)
        rows = self.store._conn.execute(
            f"SELECT key_id, CASE WHEN {store_mod._READY} AND {store_mod._IN_OPEN_LEASE} "
            f"THEN 'leased' WHEN {store_mod._IN_RANGE} THEN 'reserved' ELSE state END, bits "
            f"FROM keys").fetchall()
        live = {uuid.UUID(bytes=k): (s, bits) for k, s, bits in rows}
        assert {k: s for k, (s, _) in live.items()} == self.state
        for k, (_, bits) in live.items():
            assert bits == self.bits_of[k]                     # one bit string per ID, forever
        leased_live = {k for k, (st_, _) in live.items() if st_ == "leased"}
        # delivered keys are gone, except taken keys of an open lease until it is settled
        assert not (self.delivered & set(live)) - leased_live
        assert self.store.fill().keys == len(live)
        assert self.store.fill().bits == 16 * len(live)


StoreMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30,
                                          deadline=None)
TestStoreMachine = StoreMachine.TestCase

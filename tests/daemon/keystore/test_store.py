"""KeyStore: settings, schema, block lifecycle, capacity, erasure, leases, reservations, errors."""

from __future__ import annotations

import os
import sqlite3
import uuid

import numpy as np
import pytest

from daemon.keystore import store as store_mod
from daemon.keystore.cutting import cut_block_key, keys_in_block, new_key_ids
from daemon.keystore.errors import (BlockStateError, KeyIdReused, KeyNotFound, KeyNotReserved,
                                    LeaseError, StoreCorrupt, StoreDiskFull, StoreFull,
                                    StoreLocked, StorePermission, StoreSchemaError)
from daemon.keystore.ranges import KeyRange
from daemon.keystore.store import KeyStore

LINK = "alice-bob"


def random_keys(n, size_bytes=32):
    return [(k, os.urandom(size_bytes)) for k in new_key_ids(n)]


@pytest.fixture
def store(tmp_path):
    s = KeyStore(tmp_path / "keys.db")
    yield s
    s.close()


def committed_block(store, block_id, n=8, coordinator=True):
    keys = random_keys(n)
    store.prepare(LINK, block_id, keys, coordinator=coordinator)
    store.commit(LINK, block_id)
    return keys


# ---------------------------------------------------------------------------- settings, schema
def test_pragmas_and_file_mode(store, tmp_path):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2          # FULL
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert os.stat(tmp_path / "keys.db").st_mode & 0o777 == 0o600
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
        store_mod.SCHEMA_VERSION


def test_migration_hook_runs_missing_steps(tmp_path, monkeypatch):
    KeyStore(tmp_path / "k.db").close()
    nxt = store_mod.SCHEMA_VERSION + 1
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(store_mod.MIGRATIONS, nxt, ["ALTER TABLE blocks ADD COLUMN note TEXT"])
    with KeyStore(tmp_path / "k.db") as s:
        cols = [r[1] for r in s._conn.execute("PRAGMA table_info(blocks)")]
        assert "note" in cols
        assert s._conn.execute("SELECT version FROM schema_version").fetchone()[0] == nxt


def test_newer_schema_is_refused(tmp_path, monkeypatch):
    KeyStore(tmp_path / "k.db").close()
    current = store_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 0)
    with pytest.raises(StoreSchemaError, match=rf"k\.db has schema version {current}"):
        KeyStore(tmp_path / "k.db")


# ---------------------------------------------------------------------------- errors
def test_not_a_database_is_corrupt(tmp_path):
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    os.chmod(p, 0o600)
    with pytest.raises(StoreCorrupt) as info:
        KeyStore(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_second_opener_is_locked_out(store, tmp_path):
    with pytest.raises(StoreLocked, match=r"keys\.db is locked by another process"):
        KeyStore(tmp_path / "keys.db")


def test_readable_by_others_is_refused(tmp_path):
    p = tmp_path / "k.db"
    KeyStore(p).close()
    os.chmod(p, 0o644)
    with pytest.raises(StorePermission, match=r"k\.db is accessible to other users \(mode 0644"):
        KeyStore(p)


def test_missing_directory(tmp_path):
    with pytest.raises(StorePermission, match="does not exist"):
        KeyStore(tmp_path / "nope" / "k.db")


def test_disk_full_is_typed(store):
    # max_page_count makes SQLite answer SQLITE_FULL exactly as a full file system does
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages + 1}")
    with pytest.raises(StoreDiskFull, match=r"keys\.db \(prepare\): disk full"):
        store.prepare(LINK, 1, random_keys(2000), coordinator=True)
    assert store.block_state(LINK, 1) is None          # rolled back, nothing half-stored
    assert store.fill().keys == 0


def test_bad_arguments_name_the_value(store):
    with pytest.raises(ValueError, match=r"block id -1"):
        store.prepare(LINK, -1, random_keys(1), coordinator=True)
    with pytest.raises(ValueError, match="link id ''"):
        store.commit("", 1)
    with pytest.raises(ValueError, match="all of one size"):
        store.prepare(LINK, 1, [(uuid.uuid4(), b"ab"), (uuid.uuid4(), b"abc")], coordinator=True)
    with pytest.raises(ValueError, match="max_keys 0"):
        KeyStore(store.path + "x", max_keys=0)


# ---------------------------------------------------------------------------- block lifecycle
def test_prepare_commit_discard_states(store):
    keys = random_keys(4)
    store.prepare(LINK, 1, keys, coordinator=True, commit_tag=b"t" * 32)
    assert store.block_state(LINK, 1) == "prepared"
    assert store.in_doubt(LINK) == [1]
    assert set(store.key_states(LINK).values()) == {"pending"}
    assert store.lease(LINK, 10) is None                   # pending keys are not deliverable
    store.commit(LINK, 1)
    store.commit(LINK, 1)                                  # idempotent
    assert store.block_state(LINK, 1) == "committed" and store.in_doubt(LINK) == []
    info = store.block_info(LINK, 1)
    assert (info.role, info.n_keys, info.key_size_bits, info.commit_tag) == \
        ("coordinator", 4, 256, b"t" * 32)
    with pytest.raises(BlockStateError):
        store.discard(LINK, 1)                             # a committed block is never discarded
    store.prepare(LINK, 2, random_keys(3), coordinator=False)
    assert store.discard(LINK, 2) and store.discard(LINK, 2)
    assert store.block_state(LINK, 2) == "discarded"
    assert store.block_key_ids(LINK, 2) == []
    with pytest.raises(BlockStateError):
        store.commit(LINK, 2)
    with pytest.raises(BlockStateError):
        store.prepare(LINK, 2, random_keys(3), coordinator=False)
    assert store.discard(LINK, 99) is False                 # unknown: nothing recorded
    assert [e for _, e, _ in store.audit(keys[0][0])] == ["prepared", "committed"]


def test_auth_refills_are_numbered_by_the_commit_and_dropped_once_taken(store, tmp_path):
    """The coordinator's commits number the refills 0, 1, 2... in commit order (not block
    order); the participant takes the number it is given; a discarded block refills nothing;
    the bits leave the file once the pool holds them, the numbering goes on."""
    refills = {b: os.urandom(64) for b in (5, 3, 8, 9)}
    for b, auth in refills.items():
        store.prepare(LINK, b, random_keys(2), coordinator=True, auth_bits=auth)
    assert store.pending_auth_refills(LINK) == []          # nothing committed yet
    assert store.commit(LINK, 8) == 0 and store.commit(LINK, 5) == 1
    assert store.commit(LINK, 8) == 0                      # idempotent, same number
    assert store.discard(LINK, 3)
    assert store.block_info(LINK, 3).refill_index is None
    assert store.pending_auth_refills(LINK) == [(0, refills[8]), (1, refills[5])]
    assert store.pending_auth_refills(LINK, 1) == [(1, refills[5])]
    store.auth_refills_taken(LINK, 1)
    assert store.pending_auth_refills(LINK) == [(1, refills[5])]
    assert store.commit(LINK, 9) == 2                      # counting goes on past taken ones
    store.auth_refills_taken(LINK, 3)
    store.checkpoint()
    assert not any(v in _file_bytes(tmp_path / "keys.db") for v in refills.values())
    assert store.block_info(LINK, 9).refill_index == 2

    store.prepare("bob-carol", 1, random_keys(2), coordinator=False, auth_bits=b"a" * 16)
    store.prepare("bob-carol", 2, random_keys(2), coordinator=False, auth_bits=b"b" * 16)
    store.prepare("bob-carol", 3, random_keys(2), coordinator=False, auth_bits=b"c" * 16)
    assert store.commit("bob-carol", 2, refill_index=0) == 0
    with pytest.raises(BlockStateError, match="refill 0 .* belongs to block 2"):
        store.commit("bob-carol", 1, refill_index=0)
    assert store.block_state("bob-carol", 1) == "prepared"     # the whole commit rolled back
    assert store.commit("bob-carol", 3) is None            # the coordinator's refills nothing
    assert store.pending_auth_refills("bob-carol") == [(0, b"b" * 16)]


def test_issuer_split_even_odd(store):
    keys = random_keys(6)
    store.prepare(LINK, 1, keys, coordinator=True)
    store.commit(LINK, 1)
    lease = store.lease(LINK, 100)
    assert list(lease.key_ids) == [keys[i][0] for i in (0, 2, 4)]    # coordinator: even indices
    keys_b = random_keys(6)
    store.prepare(LINK, 2, keys_b, coordinator=False)
    store.commit(LINK, 2)
    lease_b = store.lease(LINK, 100)
    assert list(lease_b.key_ids) == [keys_b[i][0] for i in (1, 3, 5)]  # participant: odd


def test_key_id_is_never_reused(store):
    keys = committed_block(store, 1, n=2)
    lease = store.lease(LINK, 1)
    lease.take(1, master_sae="m", slave_sae="s")
    store.close_lease(lease)
    with pytest.raises(KeyIdReused):                      # erased, but the ID is remembered
        store.prepare(LINK, 2, [(keys[0][0], os.urandom(32))], coordinator=True)
    with pytest.raises(KeyIdReused):                      # still stored
        store.prepare(LINK, 3, [(keys[1][0], os.urandom(32))], coordinator=True)
    with pytest.raises(KeyIdReused):
        k = uuid.uuid4()
        store.prepare(LINK, 4, [(k, os.urandom(32)), (k, os.urandom(32))], coordinator=True)
    assert store.block_state(LINK, 2) is None and store.block_state(LINK, 3) is None


def test_capacity_in_keys_and_bits(tmp_path):
    with KeyStore(tmp_path / "a.db", max_keys=10) as s:
        s.prepare(LINK, 1, random_keys(8), coordinator=True)
        assert not s.is_full
        with pytest.raises(StoreFull, match=r"8 keys stored, block 2 adds 3, capacity 10 keys"):
            s.prepare(LINK, 2, random_keys(3), coordinator=True)
        s.prepare(LINK, 3, random_keys(2), coordinator=True)
        assert s.is_full and s.fill().keys == 10
        s.discard(LINK, 1)
        assert s.fill().keys == 2 and not s.is_full
    with KeyStore(tmp_path / "b.db", max_bits=1000) as s:
        s.prepare(LINK, 1, random_keys(3), coordinator=True)      # 768 bits
        with pytest.raises(StoreFull, match="bits"):
            s.prepare(LINK, 2, random_keys(1), coordinator=True)
        assert s.fill().bits == 768
    with KeyStore(tmp_path / "b.db", max_bits=1000) as s:         # counters survive reopening
        assert (s.fill().keys, s.fill().bits) == (3, 768)


# ---------------------------------------------------------------------------- erasure
def _file_bytes(path):
    out = b""
    for suffix in ("", "-wal"):
        if os.path.exists(str(path) + suffix):
            with open(str(path) + suffix, "rb") as f:
                out += f.read()
    return out


def test_delivered_key_bytes_leave_the_file(store, tmp_path):
    keys = committed_block(store, 1, n=4)
    store.checkpoint()
    secret = dict(keys)
    lease = store.lease(LINK, 2)
    before = _file_bytes(tmp_path / "keys.db")
    assert all(secret[k] in before for k in lease.key_ids)      # the test can see key bytes
    got = lease.take(5, master_sae="m", slave_sae="s")
    assert [bytes(b) for _, b in got] == [secret[k] for k in lease.key_ids]
    assert not any(lease._bits)                                  # the lease's copies wiped
    assert store.settle_lease(lease) == 2
    store.checkpoint()
    after = _file_bytes(tmp_path / "keys.db")
    assert not any(secret[k] in after for k in lease.key_ids)   # overwritten, not just unlinked
    others = [k for k in secret if k not in lease.key_ids]
    assert all(secret[k] in after for k in others)
    audit = store._conn.execute("SELECT event, detail, key_ids FROM audit").fetchall()
    blob = b"".join(r[2] for r in audit) + repr(audit).encode()
    assert all(k.bytes in blob for k in secret)                   # the audit names the IDs
    assert not any(v in blob for v in secret.values())            # and never holds bits


# ---------------------------------------------------------------------------- leases
def test_lease_take_close(store):
    keys = committed_block(store, 1, n=10)                 # 5 are this end's to issue
    lease = store.lease(LINK, 3)
    assert len(lease.key_ids) == 3 and lease.size_bits == (256, 256, 256)
    other = store.lease(LINK, 10)
    assert other.key_ids == (keys[6][0], keys[8][0])
    assert store.lease(LINK, 10) is None                   # pool exhausted
    got = lease.take(1, master_sae="m", slave_sae="s")
    assert got[0][0] == lease.key_ids[0] and bytes(got[0][1]) == dict(keys)[lease.key_ids[0]]
    assert lease.remaining == 2
    assert store.key_states()[lease.key_ids[0]] == "leased"  # erased at settle/close
    assert store.settle_lease(lease) == 1
    assert lease.key_ids[0] not in store.key_states()
    assert store.settle_lease(lease) == 0
    got2 = lease.take(1, master_sae="m", slave_sae="s")
    assert got2[0][0] == lease.key_ids[1]                  # never the same key twice
    copies = lease._bits
    assert any(copies[64:96])                              # untaken: still its bits here
    assert store.close_lease(lease) == 1                   # the untaken one goes back
    assert not any(copies)                                 # ... and this copy is wiped
    with pytest.raises(LeaseError, match="closed"):
        lease.take(1, master_sae="m", slave_sae="s")
    with pytest.raises(LeaseError, match="closed"):
        store.close_lease(lease)
    assert set(store.key_states()) == {k for k, _ in keys} - set(lease.key_ids[:2])
    again = store.lease(LINK, 10)
    assert again.key_ids == (lease.key_ids[2],)
    assert [e for _, e, _ in store.audit(lease.key_ids[0])] == \
        ["prepared", "committed", "leased", "delivered"]
    assert store.audit(lease.key_ids[0])[-1][2] == f"lease {lease.lease_id}: m -> s"
    assert store.fill().keys == 8


def test_open_leases_are_voided_at_restart(tmp_path):
    s = KeyStore(tmp_path / "k.db")
    committed_block(s, 1, n=8)
    lease = s.lease(LINK, 4)
    lease.take(1, master_sae="m", slave_sae="s")
    s._conn.close()                                        # no clean close: like a kill
    s._conn = None
    s._close_quietly()
    s = KeyStore(tmp_path / "k.db")
    assert s.open_leases() == [lease.lease_id]
    voided = s.void_open_leases()
    assert set(voided[LINK]) == set(lease.key_ids)        # taken or not, all erased
    assert not set(lease.key_ids) & set(s.key_states())
    assert s.lease(LINK, 10) is None                       # nothing re-issued
    assert s.fill().keys == 4                              # the peer's 4 remain
    s.close()


# ---------------------------------------------------------------------------- reservations
def test_reserve_and_deliver_to_the_named_slave_only(store):
    keys = committed_block(store, 1, n=6, coordinator=False)   # peer (coordinator) issues 0,2,4
    peer_ids = [keys[i][0] for i in (0, 2, 4)]
    own_id = keys[1][0]
    missing = store.reserve(LINK, peer_ids[:2] + [own_id, uuid.uuid4()], slave_sae="Y",
                            master_sae="X")
    assert set(missing) == {own_id} | (set(missing) - {own_id}) and len(missing) == 2
    assert store.reserve(LINK, peer_ids[:2], slave_sae="Y", master_sae="X") == []   # retry ok
    assert store.reserve(LINK, peer_ids[:1], slave_sae="Z", master_sae="X") == peer_ids[:1]
    with pytest.raises(KeyNotReserved) as info:
        store.deliver(peer_ids[:1], sae_id="Z")
    assert info.value.key_ids == peer_ids[:1]
    with pytest.raises(KeyNotReserved):                    # reserved nothing: not fetchable
        store.deliver([peer_ids[2]], sae_id="Y")
    with pytest.raises(KeyNotFound):
        store.deliver([uuid.uuid4()], sae_id="Y")
    got = store.deliver(peer_ids[:2], sae_id="Y")
    assert [bytes(b) for _, b in got] == [dict(keys)[k] for k in peer_ids[:2]]
    with pytest.raises(KeyNotFound):
        store.deliver(peer_ids[:1], sae_id="Y")            # once
    results = store.deliver_many([("Y", [peer_ids[2]]), ("Y", [uuid.uuid4()])])
    assert isinstance(results[0], KeyNotReserved) and isinstance(results[1], KeyNotFound)


def test_reserve_in_one_statement_or_by_the_general_path_leaves_the_same(store):
    """A RESERVE of only fresh keys takes the one-UPDATE path; one bad key anywhere (here
    after the first 500-key chunk was already updated) undoes it and takes the general path:
    the good keys reserved and audited once, the bad one reported."""
    keys = committed_block(store, 1, n=2 * 1200, coordinator=False)
    peer = [keys[i][0] for i in range(0, len(keys), 2)]          # 1200 keys the peer issues
    assert store.reserve(LINK, peer[:600], slave_sae="Y", master_sae="X") == []
    stranger = uuid.uuid4()
    assert store.reserve(LINK, peer[600:] + [stranger], slave_sae="Y", master_sae="X") == \
        [stranger]
    states = store.key_states(LINK)
    assert all(states[k] == "reserved" for k in peer)
    assert all(states[keys[i][0]] == "committed" for i in range(1, len(keys), 2))
    for k in (peer[0], peer[599], peer[600], peer[-1]):
        assert [e for _, e, _ in store.audit(k)].count("reserved") == 1
    assert store.reservation_counts(LINK) == {("X", "Y"): 1200}


def test_void_peer_keys_spares_reservations(store):
    keys = committed_block(store, 1, n=6, coordinator=False)
    peer_ids = [keys[i][0] for i in (0, 2, 4)]
    store.reserve(LINK, peer_ids[:1], slave_sae="Y", master_sae="X")
    assert store.void_peer_keys(LINK, peer_ids + [keys[1][0]]) == 2
    assert set(store.key_states()) == {peer_ids[0], keys[1][0], keys[3][0], keys[5][0]}


def _range(block, lo, hi, ids):
    return KeyRange(block, lo, hi, len(ids), KeyRange.digest_of([k.bytes for k in ids]))


def test_reserved_ranges_hold_exactly_the_named_keys(store):
    """RESERVE_RANGES at the holder: the peer's keys of a block by index range, with a count
    and a digest; all reserved or none; overlaps refused; the same range again is no change."""
    keys = committed_block(store, 1, n=20, coordinator=False)   # the peer issues 0, 2, ... 18
    peer = [keys[i][0] for i in range(0, 20, 2)]
    own = [keys[i][0] for i in range(1, 20, 2)]
    first = _range(1, 0, 8, peer[:5])
    assert store.reserve_ranges(LINK, [first], slave_sae="Y", master_sae="X", ttl_s=60)
    assert store.reserve_ranges(LINK, [first], slave_sae="Y", master_sae="X")   # repeated
    assert not store.reserve_ranges(LINK, [first], slave_sae="Z", master_sae="X")
    assert not store.reserve_ranges(LINK, [_range(1, 8, 12, peer[4:7])], slave_sae="Y",
                                    master_sae="X")                         # overlaps
    wrong = KeyRange(1, 10, 14, 3, KeyRange.digest_of([k.bytes for k in peer[5:7] + own[:1]]))
    later = _range(1, 16, 18, peer[8:])
    assert not store.reserve_ranges(LINK, [later, wrong], slave_sae="Y", master_sae="X")
    assert not store.reserve_ranges(LINK, [_range(1, 10, 14, peer[5:7])], slave_sae="Y",
                                    master_sae="X")                         # count is 3
    states = store.key_states(LINK)
    assert {k for k, s in states.items() if s == "reserved"} == set(peer[:5])   # all or none
    assert store.reservation_counts(LINK) == {("X", "Y"): 5}
    assert store.reserve(LINK, [peer[0]], slave_sae="Z", master_sae="X") == [peer[0]]
    with pytest.raises(KeyNotReserved):
        store.deliver([peer[1]], sae_id="Z")
    got = store.deliver(peer[1:3], sae_id="Y")
    assert [bytes(b) for _, b in got] == [dict(keys)[k] for k in peer[1:3]]
    with pytest.raises(KeyNotFound):
        store.deliver([peer[1]], sae_id="Y")                                # once
    assert store.void_peer_keys(LINK, peer) == 5                 # spares the reserved ones
    assert store.void_reserved(LINK, [peer[3]]) == 1
    assert [e for _, e, _ in store.audit(peer[0])] == ["prepared", "committed", "reserved"]
    assert {k for k, s in store.key_states(LINK).items() if s == "reserved"} == \
        {peer[0], peer[4]}
    with pytest.raises(ValueError):
        store.reserve_ranges(LINK, [KeyRange(1, 5, 4, 1, first.digest)], slave_sae="Y",
                             master_sae="X")


def test_a_leases_key_ranges_never_span_a_key_it_does_not_hold(store):
    """Keys returned by two leases meet in a later one with a taken key between them: the
    ranges the peer is told must leave that key out (the peer holds it reserved, or in doubt),
    so they split there and name every index they span."""
    keys = committed_block(store, 1, n=20)                  # this end issues 0, 2, 4, ...
    first = store.lease(LINK, 3)                             # 0, 2, 4
    first.take(2, master_sae="X", slave_sae="Y")
    second = store.lease(LINK, 3)                            # 6, 8, 10
    second.take(1, master_sae="X", slave_sae="Y")           # 6 taken
    store.close_leases([second, first])                      # 8, 10 and 4 come back
    third = store.lease(LINK, 4)
    assert third.key_ids == tuple(keys[i][0] for i in (4, 8, 10, 12))
    ranges = third.key_ranges(0, 4)
    assert [(r.block_id, r.lo, r.hi, r.n_keys) for r in ranges] == [(1, 4, 4, 1), (1, 8, 12, 3)]
    assert ranges[1].digest == KeyRange.digest_of([keys[i][0].bytes for i in (8, 10, 12)])


def test_reserved_ranges_expire_and_keep_keys_from_age_expiry(tmp_path):
    with KeyStore(tmp_path / "k.db", max_key_age_s=100) as s:
        keys = committed_block(s, 1, n=8, coordinator=False)
        peer = [keys[i][0] for i in range(0, 8, 2)]
        t0 = store_mod._now_ns()
        assert s.reserve_ranges(LINK, [_range(1, 0, 2, peer[:2])], slave_sae="Y",
                                master_sae="X", ttl_s=10, now_ns=t0)
        assert s.reserve_ranges(LINK, [_range(1, 4, 6, peer[2:])], slave_sae="Y",
                                master_sae="X", now_ns=t0)          # no time limit
        assert s.expire(now_ns=t0 + 5 * 10**9) == 0
        assert s.expire(now_ns=t0 + 15 * 10**9) == 2                # the first range's keys
        assert s.expire(now_ns=t0 + 200 * 10**9) == 4               # the own keys, by age
        assert set(s.key_states(LINK)) == set(peer[2:])             # reserved: never by age
        s.deliver(peer[2:], sae_id="Y")
        s.expire()
        assert s._conn.execute("SELECT count(*) FROM reserved_ranges").fetchone()[0] == 0


def test_expiry(tmp_path):
    with KeyStore(tmp_path / "k.db", max_key_age_s=100) as s:
        keys = committed_block(s, 1, n=6, coordinator=False)
        t0 = store_mod._now_ns()
        s.reserve(LINK, [keys[0][0]], slave_sae="Y", master_sae="X", ttl_s=10, now_ns=t0)
        lease = s.lease(LINK, 1, ttl_s=20, now_ns=t0)
        assert s.expire(now_ns=t0 + 5 * 10**9) == 0
        assert s.expire(now_ns=t0 + 15 * 10**9) == 1                  # the reservation
        assert keys[0][0] not in s.key_states()
        assert s.expire(now_ns=t0 + 25 * 10**9) == 1                  # the lease's key
        assert lease.key_ids[0] not in s.key_states()
        assert s.expire(now_ns=t0 + 200 * 10**9) == 4                 # the rest, by age
        assert s.fill().keys == 0


# ---------------------------------------------------------------------------- cutting rule
def test_cut_rule_msb_first_and_leftover_dropped():
    bits = np.array([1, 0, 0, 0, 0, 0, 0, 1] + [0, 1, 1, 1, 1, 1, 1, 1] + [1, 1, 1], np.uint8)
    ids = new_key_ids(2)
    keys, packed = cut_block_key(bits, 8, ids)
    assert [(k, bytes(v)) for k, v in keys] == [(ids[0], b"\x81"), (ids[1], b"\x7f")]
    packed.fill(0)
    assert bytes(keys[0][1]) == b"\x00"                   # views into the wiped array
    assert keys_in_block(1_000_000, 256) == 3906
    with pytest.raises(ValueError, match="3 key IDs"):
        cut_block_key(bits, 8, new_key_ids(3))
    with pytest.raises(ValueError, match="multiple of 8"):
        cut_block_key(bits, 12, ids)


def test_new_key_ids_are_v8_in_key_order():
    """RFC 9562 version 8 and variant bits; IDs of a block sort in key-index order (what keeps
    a lease's erase local in the key-ID index); two blocks' prefixes differ."""
    ids = new_key_ids(1000)
    again = new_key_ids(1000)
    assert {k.version for k in ids} == {8} and {k.variant for k in ids} == {uuid.RFC_4122}
    assert ids == sorted(ids) and len(set(ids) | set(again)) == 2000
    assert len({k.int >> 80 for k in ids}) == 1 and ids[0].int >> 80 != again[0].int >> 80
    # the counter is the key's index: bits 64..75 and 48..61
    assert [((k.int >> 64) & 0xFFF) << 14 | ((k.int >> 48) & 0x3FFF) for k in ids] == \
        list(range(1000))
    # the 48 random bits: 1000 keys, none equal (a repeat would be ~1e-9 likely)
    assert len({k.int & (2**48 - 1) for k in ids}) == 1000


def test_uuid_of_makes_what_the_constructor_makes():
    import pickle
    from daemon.keystore.cutting import uuid_of
    for raw in (os.urandom(16), bytes(16), b"\xff" * 16, new_key_ids(1)[0].bytes):
        made, real = uuid_of(raw), uuid.UUID(bytes=raw)
        assert made == real and hash(made) == hash(real) and str(made) == str(real)
        assert made.bytes == raw and made.version == real.version and made.is_safe == real.is_safe
        assert pickle.loads(pickle.dumps(made)) == real and made < uuid.UUID(int=2**128 - 1) \
            or raw == b"\xff" * 16


def test_new_key_ids_past_the_counter_step_to_the_next_prefix():
    import numpy as np
    from daemon.keystore.cutting import COUNTER_BITS, _layout
    step = 1 << COUNTER_BITS
    flat = _layout(np.array([0, step - 1, step, step + 1], np.uint64), 1_000, bytes(24))
    ids = [uuid.UUID(bytes=flat[16 * i:16 * i + 16]) for i in range(4)]
    assert [k.int >> 80 for k in ids] == [1_000, 1_000, 1_001, 1_001]
    assert ids == sorted(ids) and {k.version for k in ids} == {8}
    # the counter starts again at 0 under the next prefix
    assert ids[2].int & (2**80 - 1) == ids[0].int & (2**80 - 1)
    top = _layout(np.array([step], np.uint64), 2**48 - 1, bytes(6))   # the prefix wraps
    assert uuid.UUID(bytes=top).int >> 80 == 0
    with pytest.raises(ValueError, match="entropy"):
        new_key_ids(2, entropy=bytes(12))


def test_readonly_open_sees_committed_keys(store, tmp_path):
    keys = committed_block(store, 1, n=2)
    with KeyStore(tmp_path / "keys.db", readonly=True) as ro:
        assert set(ro.key_states()) == {k for k, _ in keys}
        with pytest.raises(StorePermission, match="read-only"):
            ro.commit(LINK, 1)


def test_integrity_check_reports_damage(tmp_path):
    p = tmp_path / "k.db"
    with KeyStore(p) as s:
        for b in range(5):
            committed_block(s, b, n=200)
    raw = bytearray(p.read_bytes())
    half = len(raw) // 2 // 4096 * 4096
    raw[half:] = os.urandom(len(raw) - half)                 # scribble over half the pages
    p.write_bytes(bytes(raw))
    try:
        s = KeyStore(p)
    except StoreCorrupt:
        return                                               # detected at open: fine too
    try:
        assert s.integrity_check() != "ok"
    except StoreCorrupt:
        pass
    finally:
        s.close()


def test_sqlite3_is_imported_only_by_the_store():
    import pathlib
    root = pathlib.Path(store_mod.__file__).parents[2]
    users = [p.relative_to(root).as_posix() for p in (root / "daemon").rglob("*.py")
             if "import sqlite3" in p.read_text()]
    assert users == ["daemon/keystore/store.py"]
    assert sqlite3.sqlite_version_info >= (3, 7, 0)


# ---------------------------------------------------------------------------- leases as ranges
def test_a_lease_skips_keys_of_open_leases_and_reuses_returned_ones(store):
    keys = committed_block(store, 1, n=24)                 # 12 are this end's (even indices)
    mine = [k for i, (k, _) in enumerate(keys) if i % 2 == 0]
    first = store.lease(LINK, 4)
    second = store.lease(LINK, 4)
    assert first.key_ids == tuple(mine[:4]) and second.key_ids == tuple(mine[4:8])
    first.take(1, master_sae="m", slave_sae="s")
    assert store.close_lease(first) == 3                   # 3 back in the pool, before `second`
    assert store.issuable_count(LINK) == 12 - 1 - 4
    third = store.lease(LINK, 6)                           # the 3 returned, then past `second`
    assert third.key_ids == tuple(mine[1:4] + mine[8:11])
    states = store.key_states(LINK)
    assert all(states[k] == "leased" for k in second.key_ids + third.key_ids)
    assert states[mine[11]] == "committed"
    third.take(6, master_sae="m", slave_sae="s")           # a run on each side of `second`
    assert store.settle_lease(third) == 6
    left = store.key_states(LINK)
    assert not set(third.key_ids) & set(left)
    assert all(left[k] == "leased" for k in second.key_ids)   # `second` untouched
    assert store.issuable_count(LINK) == 1


def _lease_keys(store, n_keys, sizes=(32, 16, 64)):
    """Blocks of keys of several sizes (with NUL and non-UTF-8 bytes); a lease in the middle
    leaves two segments. Returns {key_id: bits} of the keys this end issues, and the middle
    lease."""
    expect = {}
    for block_id, size in enumerate(sizes, start=1):
        keys = random_keys(12, size)
        keys[0] = (keys[0][0], bytes(size))                     # all NUL
        keys[2] = (keys[2][0], b"\xff\xc3\x28" + bytes(size - 3))  # not UTF-8
        store.prepare(LINK, block_id, keys, coordinator=True)
        store.commit(LINK, block_id)
        expect.update({k: b for i, (k, b) in enumerate(keys) if i % 2 == 0})
    middle = store.lease(LINK, n_keys)
    return expect, middle


def test_a_lease_reads_every_key_id_and_its_bits_in_key_order(store, monkeypatch):
    expect, first = _lease_keys(store, 8)                  # block 1 and 2 keys of block 2
    second = store.lease(LINK, 4)
    store.close_lease(first)                               # a gap before `second`
    blobs = []
    real_wipe = store_mod.wipe_bytes
    monkeypatch.setattr(store_mod, "wipe_bytes",
                        lambda b: (real_wipe(b), blobs.append(b)))
    lease = store.lease(LINK, 100)                         # the gap, then past `second`
    order = [k for k in expect if k not in second.key_ids]
    assert lease.key_ids == tuple(order)
    assert lease.size_bits == tuple(8 * len(expect[k]) for k in order)
    got = lease.take(100, master_sae="m", slave_sae="s")
    assert [(k, bytes(b)) for k, b in got] == [(k, expect[k]) for k in order]
    # one joined read per segment, each wiped once split into the lease's own copies
    assert len(blobs) == 2 and sum(map(len, blobs)) == sum(len(expect[k]) for k in order)
    assert all(b == bytes(len(b)) for b in blobs)


def test_a_lease_is_in_key_order_whatever_order_sqlite_joins_rows_in(store, monkeypatch):
    # group_concat's order is undocumented: a run read backwards must still come out in order
    monkeypatch.setattr(store_mod, "_RUN_SQL",
                        store_mod._RUN_SQL.replace("ORDER BY block_id, key_index LIMIT ?",
                                                   "ORDER BY block_id DESC, key_index DESC"
                                                   " LIMIT -1 OFFSET 0) WHERE ? > 0 AND (1"))
    expect, lease = _lease_keys(store, 18)
    assert lease.key_ids == tuple(expect)
    got = lease.take(18, master_sae="m", slave_sae="s")
    assert [bytes(b) for _, b in got] == list(expect.values())
    assert lease.key_ranges(0, 18) == [
        KeyRange(b, 0, 10, 6, KeyRange.digest_of([k.bytes for k in lease.key_ids[i:i + 6]]))
        for i, b in ((0, 1), (6, 2), (12, 3))]


def test_a_grant_that_fails_leaves_no_key_bytes_in_its_buffers(store, monkeypatch):
    expect, first = _lease_keys(store, 2)
    store.close_lease(first)
    blobs, buffers = [], []
    real_wipe, real_join = store_mod.wipe_bytes, store_mod._join_bits
    monkeypatch.setattr(store_mod, "wipe_bytes", lambda b: (blobs.append(b), real_wipe(b)))
    monkeypatch.setattr(store_mod, "_join_bits",
                        lambda parts: (got := real_join(parts), buffers.append(got[0]))[0])

    def fail(*args):
        raise OSError("disk gone")
    monkeypatch.setattr(KeyStore, "_audit", staticmethod(fail))
    with pytest.raises(OSError):
        store.lease(LINK, 100)
    assert blobs and all(b == bytes(len(b)) for b in blobs)
    assert len(buffers[0]) == sum(map(len, expect.values())) and not any(buffers[0])
    monkeypatch.undo()
    assert len(store.lease(LINK, 100).key_ids) == len(expect)   # nothing was granted


def test_voiding_an_open_lease_erases_only_its_keys(tmp_path):
    s = KeyStore(tmp_path / "k.db")
    keys = committed_block(s, 1, n=16)
    committed_block(s, 2, n=4)
    a = s.lease(LINK, 3)
    b = s.lease(LINK, 6)                                   # spans blocks 1 and 2
    assert b._ranges(0, 6) == [(1, 6, 14), (2, 0, 0)]
    s.close_lease(a)
    s._conn.close()
    s._conn = None
    s._close_quietly()
    s = KeyStore(tmp_path / "k.db")
    voided = s.void_open_leases()
    assert set(voided[LINK]) == set(b.key_ids)
    left = s.key_states(LINK)
    assert set(a.key_ids) <= set(left) and not set(b.key_ids) & set(left)
    assert {k for k, _ in keys if k not in b.key_ids} <= set(left)
    assert s.issuable_count(LINK) == 3 + 1                 # a's three back, block 2's index 2
    s.close()


def test_settle_beside_take_erases_what_it_saw_and_the_rest_later(store):
    committed_block(store, 1, n=40)
    lease = store.lease(LINK, 20)
    lease.take(5, master_sae="m", slave_sae="s")
    settled, upto, runs = lease._taken_runs()
    lease.take(3, master_sae="m", slave_sae="t")           # taken after the settle looked
    assert (settled, upto) == (0, 5) and [r[2] for r in runs] == [f"lease {lease.lease_id}: m -> s"]
    assert store.settle_lease(lease) == 8
    assert store.close_lease(lease) == 12
    assert [e for _, e, d in store.audit(lease.key_ids[6])][-1] == "delivered"
    assert store.audit(lease.key_ids[6])[-1][2] == f"lease {lease.lease_id}: m -> t"
    assert store.audit(lease.key_ids[9])[-1][1] == "returned"


# ---------------------------------------------------------------------------- composite keys
def test_a_composite_key_is_delivered_whole_by_its_first_unit_id(tmp_path):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    keys = random_keys(16)
    for s, coord in ((a, True), (b, False)):
        s.prepare(LINK, 1, keys, coordinator=coord)
        s.commit(LINK, 1)
    lease = a.lease(LINK, 8)
    got = lease.take_units(2, 3, master_sae="m", slave_sae="s")
    assert [len(k) for _, k, _ in got] == [96, 96] and lease.remaining == 2
    units = [u for _, _, us in got for u in us]
    assert b.reserve(LINK, units, slave_sae="s", master_sae="m",
                     composites=[us for _, _, us in got]) == []
    with pytest.raises(KeyNotReserved):
        b.deliver([got[0][0]], sae_id="other")
    out = b.deliver([got[0][0], got[1][0]], sae_id="s")
    assert [(k, bytes(v)) for k, v in out] == [(k, bytes(v)) for k, v, _ in got]
    assert not set(units) & set(b.key_states(LINK))        # every unit erased
    with pytest.raises(KeyNotFound):
        b.deliver([got[0][0]], sae_id="s")
    assert b._conn.execute("SELECT COUNT(*) FROM composites").fetchone()[0] == 0
    a.close()
    b.close()


def test_a_composite_with_a_unit_gone_is_not_found_and_nothing_is_erased(tmp_path):
    s = KeyStore(tmp_path / "b.db")
    keys = random_keys(8)
    s.prepare(LINK, 1, keys, coordinator=False)           # the even keys are the peer's
    s.commit(LINK, 1)
    peer = [keys[i][0] for i in range(0, 8, 2)]
    assert s.reserve(LINK, peer[:2], slave_sae="s", master_sae="m",
                     composites=[tuple(peer[:3])]) == []   # the third unit was not reserved
    with pytest.raises(KeyNotReserved):
        s.deliver([peer[0]], sae_id="s")
    assert {s.key_states(LINK)[k] for k in peer[:2]} == {"reserved"}
    s.close()


def test_a_lease_left_open_by_a_schema_1_store_is_voided(store):
    keys = committed_block(store, 1, n=8)
    mine = [keys[i][0] for i in range(0, 8, 2)]
    conn = store._conn                      # a schema-1 lease: its keys marked one by one
    lease_id = conn.execute("INSERT INTO leases (link_id, state, created_ns) "
                            "VALUES (?, 'open', 0)", (LINK,)).lastrowid
    conn.executemany("UPDATE keys SET state='leased', lease_id=? WHERE key_id=?",
                     [(lease_id, k.bytes) for k in mine[:3]])
    voided = store.void_open_leases()
    assert set(voided[LINK]) == set(mine[:3])
    assert set(store.key_states(LINK)) == {k for k, _ in keys} - set(mine[:3])
    assert store.lease(LINK, 10).key_ids == (mine[3],)


def test_fill_does_not_wait_behind_a_transaction(store):
    """``fill`` is read on the event loop (status, capacity): a transaction holding the store
    through its fsync in another thread must not stall it."""
    import threading
    import time
    committed_block(store, 1, n=4)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with store._tx("test: a long transaction"):
            inside.set()
            release.wait(5)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(5)
        t0 = time.monotonic()
        fill = store.fill()
        waited = time.monotonic() - t0
    finally:
        release.set()
        t.join(5)
    assert fill.keys == 4 and waited < 1.0

"""The key service over two real key stores, reservations carried between two pools."""

from __future__ import annotations

import asyncio
import collections
import os
import uuid

import pytest

from daemon.keyservice import reservations as rv
from daemon.keyservice import service as svc
from daemon.keyservice.pool import NodeKeyPool
from daemon.keyservice.wire import decode_reply, encode_request
from daemon.keystore.errors import StoreDiskFull
from daemon.keystore.store import KeyStore
from tests.daemon.keyservice.test_service import LIMITS_A, LIMITS_B

KEY_BITS = 256


def _limits(base):
    return svc.KmeLimits(**{**base.__dict__, "key_size": KEY_BITS, "min_key_size": KEY_BITS,
                            "max_key_size": KEY_BITS, "max_sae_id_count": 0})


def stores(tmp_path, n_keys=64):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    keys = [(uuid.uuid4(), os.urandom(KEY_BITS // 8)) for _ in range(n_keys)]
    a.prepare("L", 1, keys, coordinator=True)
    b.prepare("L", 1, keys, coordinator=False)
    a.commit("L", 1)
    b.commit("L", 1)
    return a, b


class Wire:
    """Two pools' send functions joined in memory; ``drop`` loses messages to model a dead peer."""

    def __init__(self):
        self.pools = {}
        self.drop = False

    def sender(self, me: str):
        other = "B" if me == "A" else "A"

        async def send(msg_type, payload):
            if not self.drop:
                asyncio.get_running_loop().create_task(
                    self.pools[other].on_peer_message(msg_type, payload))
        return send


def services(a_store, b_store, **kw):
    wire = Wire()
    pa = NodeKeyPool(a_store, "L", wire.sender("A"), key_size_bits=KEY_BITS, lease_batch=8, **kw)
    pb = NodeKeyPool(b_store, "L", wire.sender("B"), key_size_bits=KEY_BITS, lease_batch=8, **kw)
    wire.pools = {"A": pa, "B": pb}
    return svc.KeyService(_limits(LIMITS_A), pa), svc.KeyService(_limits(LIMITS_B), pb), wire


async def call(service, sae, op, body, rid=None):
    rid = rid or uuid.uuid4().bytes
    return decode_reply(await service.handle(sae, encode_request(op, rid, body)))


def test_enc_at_a_dec_at_b_same_bytes_erased_at_both_ends(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, _ = services(a_store, b_store)

    async def run():
        st = await call(sa, "X", "status", {"slave_SAE_ID": "Y"})
        enc = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 5})
        ids = [{"key_ID": k["key_ID"]} for k in enc.body["keys"]]
        # B learnt of them as a range of the block (RESERVE_RANGES), not key by key
        assert b_store._conn.execute("SELECT block_id, n_keys, slave_sae, master_sae FROM "
                                     "reserved_ranges").fetchall() == [(1, 5, "Y", "X")]
        stolen = await call(sb, "Y2", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        dec = await call(sb, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        again = await call(sb, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        await sa.pool.settle()   # what the node does every few seconds
        return st, enc, stolen, dec, again

    st, enc, stolen, dec, again = asyncio.run(run())
    assert st.body["stored_key_count"] == 32          # the even half of 64 keys is A's to issue
    assert enc.status == 200 and dec.status == 200
    assert dec.body["keys"] == enc.body["keys"]
    assert stolen.status == 401
    assert again.status == 400
    states_a = a_store.key_states("L")
    states_b = b_store.key_states("L")
    for k in enc.body["keys"]:
        assert uuid.UUID(k["key_ID"]) not in states_a and uuid.UUID(k["key_ID"]) not in states_b
    assert a_store.integrity_check() == "ok" and b_store.integrity_check() == "ok"


def test_the_two_ends_issue_disjoint_keys(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, _ = services(a_store, b_store)

    async def run():
        ea = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 32})
        eb = await call(sb, "Y", "enc_keys", {"slave_SAE_ID": "X", "number": 32})
        more = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 1})
        return ea, eb, more

    ea, eb, more = asyncio.run(run())
    ids_a = {k["key_ID"] for k in ea.body["keys"]}
    ids_b = {k["key_ID"] for k in eb.body["keys"]}
    assert len(ids_a) == len(ids_b) == 32 and not ids_a & ids_b
    assert more.status == 503 and "exhausted" in more.body["message"]


def test_a_dead_peer_means_503_and_the_keys_are_never_issued_again(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, wire = services(a_store, b_store, reserve_timeout_s=0.2)

    async def run():
        wire.drop = True
        lost = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 4})
        wire.drop = False
        later = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 28})
        rest = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 1})
        return lost, later, rest

    lost, later, rest = asyncio.run(run())
    assert lost.status == 503 and "peer" in lost.body["message"]
    assert later.status == 200 and len(later.body["keys"]) == 28
    assert rest.status == 503      # the 4 keys in doubt were erased, not handed out again


def test_used_up_leases_are_closed_together_at_the_next_settle(tmp_path):
    """A lease used up is not closed at once (a transaction and an fsync each) but with the
    others and the open lease's settle, in one transaction: until then its handed-out keys
    are still in the file, after it they are gone."""
    a_store, b_store = stores(tmp_path)
    sa, _, _ = services(a_store, b_store)

    async def run():
        got = [await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 8})
               for _ in range(3)]                         # three leases of 8, used up
        before = (len(a_store.open_leases()), len(a_store.key_states("L")))
        await sa.pool.settle()
        return got, before

    got, (open_before, keys_before) = asyncio.run(run())
    ids = {uuid.UUID(k["key_ID"]) for r in got for k in r.body["keys"]}
    assert len(ids) == 24 and open_before >= 3 and keys_before == 64
    assert len(a_store.open_leases()) <= 1                # at most the spare is left open
    assert not ids & set(a_store.key_states("L"))         # erased at A
    assert a_store.fill().keys == 64 - 24


def test_a_store_failure_while_reserving_ahead_pauses_the_refill_and_says_why(tmp_path, caplog):
    a_store, b_store = stores(tmp_path)
    sa, _, _ = services(a_store, b_store, reserve_ahead=16)

    def full(*_a, **_k):
        raise StoreDiskFull("key store a.db (lease): disk full")

    a_store.lease = full
    pool = sa.pool

    async def run():
        pool._ahead[("X", "Y")] = collections.deque()
        pool._inflight[("X", "Y")] = 8
        await pool._refill(("X", "Y"), 8)            # no exception escapes the task
        return pool._inflight[("X", "Y")], pool._paused_until.get(("X", "Y"), 0.0)

    inflight, paused = asyncio.run(run())
    assert inflight == 0 and paused > 0
    assert any(r.levelname == "ERROR" and "disk full" in r.getMessage() for r in caplog.records)


def test_concurrent_requests_at_both_nodes_never_share_a_key(tmp_path):
    a_store, b_store = stores(tmp_path, n_keys=400)
    sa, sb, _ = services(a_store, b_store)

    async def run():
        reqs = [call(sa, sae, "enc_keys", {"slave_SAE_ID": "Y", "number": 3})
                for sae in ("X", "X2") for _ in range(30)]
        reqs += [call(sb, "Y", "enc_keys", {"slave_SAE_ID": "X", "number": 3})
                 for _ in range(60)]
        return await asyncio.gather(*reqs)

    ids = []
    for r in asyncio.run(run()):
        assert r.status == 200, r.body
        ids += [k["key_ID"] for k in r.body["keys"]]
    assert len(ids) == len(set(ids)) == 360


# -- ETSI 004 streams on the durable stores ------------------------------------------------------

QOS = {"key_chunk_size": KEY_BITS // 8, "timeout": 1000}


async def _open_both(sa, sb, ksid="stream-1"):
    a = await call(sa, "X", "open_connect", {"source": "X", "destination": "Y",
                                             "key_stream_id": ksid, "qos": QOS})
    b = await call(sb, "Y", "open_connect", {"source": "X", "destination": "Y",
                                             "key_stream_id": ksid, "qos": QOS})
    return a, b


def test_a_stream_gives_both_ends_the_same_key_per_index_whoever_asks_first(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, _ = services(a_store, b_store)

    async def run():
        opened = await _open_both(sa, sb)
        get = {"key_stream_id": "stream-1"}
        a0 = await call(sa, "X", "get_key", {**get, "index": 0})    # the source first
        b0 = await call(sb, "Y", "get_key", {**get, "index": 0})
        b5 = await call(sb, "Y", "get_key", {**get, "index": 5})    # the destination first
        a5 = await call(sa, "X", "get_key", {**get, "index": 5})
        a5_again = await call(sa, "X", "get_key", {**get, "index": 5})
        b0_again = await call(sb, "Y", "get_key", {**get, "index": 0})
        both = await asyncio.gather(call(sa, "X", "get_key", {**get, "index": 9}),
                                    call(sb, "Y", "get_key", {**get, "index": 9}))
        await sa.pool.settle()
        return opened, a0, b0, b5, a5, a5_again, b0_again, both

    opened, a0, b0, b5, a5, a5_again, b0_again, (a9, b9) = asyncio.run(run())
    assert [o.body["status"] for o in opened] == [svc.SUCCESSFUL, svc.SUCCESSFUL]
    for x, y in ((a0, b0), (a5, b5), (a9, b9)):
        assert x.body["status"] == y.body["status"] == svc.SUCCESSFUL
        assert x.body["key_ID"] == y.body["key_ID"]
        assert x.body["key_buffer"] == y.body["key_buffer"]
    assert len({a0.body["key_ID"], a5.body["key_ID"], a9.body["key_ID"]}) == 3
    assert a5_again.status == 400 and b0_again.status == 400
    for r in (a0, a5, a9):      # delivered at both ends: erased at both ends
        kid = uuid.UUID(r.body["key_ID"])
        assert kid not in a_store.key_states("L") and kid not in b_store.key_states("L")


def test_stream_status_codes_from_the_durable_pool(tmp_path):
    a_store, b_store = stores(tmp_path, n_keys=4)     # A may issue keys 0 and 2 only
    sa, sb, wire = services(a_store, b_store, reserve_timeout_s=0.2)

    async def run():
        out = {}
        out["no_link"] = await call(sa, "X", "open_connect",
                                    {"source": "X", "destination": "Z9", "qos": QOS})
        out["qos"] = await call(sa, "X", "open_connect", {"source": "X", "destination": "Y",
                                                          "qos": {**QOS, "key_chunk_size": 16}})
        await call(sb, "Y", "open_connect", {"source": "X", "destination": "Y",
                                             "key_stream_id": "s", "qos": QOS})
        out["app_missing"] = await call(sb, "Y", "get_key", {"key_stream_id": "s", "index": 0})
        await call(sa, "X", "open_connect", {"source": "X", "destination": "Y",
                                             "key_stream_id": "s", "qos": QOS})
        out["in_use"] = await call(sa, "X", "open_connect", {"source": "X", "destination": "Y",
                                                             "key_stream_id": "s", "qos": QOS})
        out["k0"] = await call(sa, "X", "get_key", {"key_stream_id": "s", "index": 0})
        out["k1"] = await call(sa, "X", "get_key", {"key_stream_id": "s", "index": 1})
        out["empty"] = await call(sa, "X", "get_key", {"key_stream_id": "s", "index": 2})
        out["empty_b"] = await call(sb, "Y", "get_key", {"key_stream_id": "s", "index": 3})
        wire.drop = True
        out["peer_down"] = await call(sb, "Y", "get_key", {"key_stream_id": "s", "index": 4})
        out["meta"] = await call(sa, "X", "get_key", {"key_stream_id": "s", "index": 5,
                                                      "metadata_size": 0})
        return out

    out = asyncio.run(run())
    codes = {k: r.body["status"] for k, r in out.items()}
    assert codes == {"no_link": svc.NO_QKD_CONNECTION, "qos": svc.QOS_NOT_MET,
                     "app_missing": svc.PEER_APPLICATION_NOT_CONNECTED,
                     "in_use": svc.KEY_STREAM_ID_IN_USE, "k0": svc.SUCCESSFUL,
                     "k1": svc.SUCCESSFUL, "empty": svc.INSUFFICIENT_KEY,
                     "empty_b": svc.INSUFFICIENT_KEY, "peer_down": svc.TIMEOUT,
                     "meta": svc.METADATA_TOO_SMALL}


def test_closing_a_stream_voids_at_the_peer_the_keys_the_source_never_took(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, _ = services(a_store, b_store)

    async def run():
        await _open_both(sa, sb)
        # index 7 bound by a pull from B whose caller gave up before taking the key: A holds
        # it for X, B holds it reserved for Y
        st_a = sa.pool._streams["stream-1"]
        await sa.pool._issuer_key(st_a, 7, for_pull=True)
        unit = st_a.pending[7].key_id
        reserved_at_b = b_store.key_states("L").get(unit)
        closed = await call(sa, "X", "close", {"key_stream_id": "stream-1"})
        for _ in range(50):
            if not sa.pool.unacknowledged_voids:
                break
            await asyncio.sleep(0.01)
        await sa.pool.settle()
        late = await call(sb, "Y", "get_key", {"key_stream_id": "stream-1", "index": 7})
        return unit, reserved_at_b, closed, late

    unit, reserved_at_b, closed, late = asyncio.run(run())
    assert reserved_at_b == "reserved"
    assert closed.body["status"] == svc.SUCCESSFUL
    assert sa.pool.unacknowledged_voids == 0             # B answered VOIDED
    assert unit not in a_store.key_states("L")           # never delivered at A, erased
    assert unit not in b_store.key_states("L")           # voided at B, never delivered there
    assert late.body["status"] == svc.PEER_APPLICATION_NOT_CONNECTED


def test_a_lease_left_open_by_a_stop_is_voided_at_both_ends(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, sb, _ = services(a_store, b_store)

    async def first_life():
        enc = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 3})
        return enc, sa.pool.leased_remaining

    enc, left = asyncio.run(first_life())      # the node stops without settling its lease
    assert left == 5
    voided = a_store.void_open_leases()["L"]   # what the runner does at start
    assert len(voided) == 8
    sa2, sb2, _ = services(a_store, b_store)

    async def second_life():
        await sa2.pool.void_keys(rv.VoidScope.LEASE, voided)
        for _ in range(50):
            if not sa2.pool.unacknowledged_voids:
                break
            await asyncio.sleep(0.01)
        dec = await call(sb2, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": [
            {"key_ID": k["key_ID"]} for k in enc.body["keys"]]})
        more = await call(sa2, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 24})
        return dec, more

    dec, more = asyncio.run(second_life())
    assert sa2.pool.unacknowledged_voids == 0
    assert dec.status == 200 and dec.body["keys"] == enc.body["keys"]   # reserved: still there
    undelivered = set(voided) - {uuid.UUID(k["key_ID"]) for k in enc.body["keys"]}
    assert len(undelivered) == 5
    for kid in undelivered:                     # erased at both ends, never issued again
        assert kid not in a_store.key_states("L") and kid not in b_store.key_states("L")
    assert more.status == 200
    assert not undelivered & {uuid.UUID(k["key_ID"]) for k in more.body["keys"]}
    assert sa2.pool.stored_key_count_now(KEY_BITS) == 0     # 32 = 3 delivered + 5 voided + 24


def test_a_peer_channel_that_blocks_its_send_gives_503_in_time(tmp_path):
    """A real peer channel waits (backpressure) while the peer is away; the pool must not."""
    a_store, b_store = stores(tmp_path)
    forever = asyncio.Event()

    async def stuck_send(msg_type, payload):
        await forever.wait()

    pa = NodeKeyPool(a_store, "L", stuck_send, key_size_bits=KEY_BITS, lease_batch=8,
                     reserve_timeout_s=0.2)
    sa = svc.KeyService(_limits(LIMITS_A), pa)

    async def run():
        t0 = asyncio.get_running_loop().time()
        r = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2})
        return r, asyncio.get_running_loop().time() - t0

    r, took = asyncio.run(run())
    assert r.status == 503 and "peer" in r.body["message"]
    assert took < 2.0        # the 0.2 s reserve timeout, plus the lease: not for ever


def _sized_services(a_store, b_store, max_bits):
    wire = Wire()
    pa = NodeKeyPool(a_store, "L", wire.sender("A"), key_size_bits=KEY_BITS, lease_batch=8)
    pb = NodeKeyPool(b_store, "L", wire.sender("B"), key_size_bits=KEY_BITS, lease_batch=8)
    wire.pools = {"A": pa, "B": pb}

    def lim(base):
        return svc.KmeLimits(**{**_limits(base).__dict__, "max_key_size": max_bits,
                                "key_unit": KEY_BITS})
    return svc.KeyService(lim(LIMITS_A), pa), svc.KeyService(lim(LIMITS_B), pb)


def test_a_key_of_several_units_is_one_key_id_with_the_same_bytes_at_both_ends(tmp_path):
    a_store, b_store = stores(tmp_path, n_keys=64)
    sa, sb = _sized_services(a_store, b_store, 8 * KEY_BITS)

    async def run():
        st = await call(sa, "X", "status", {"slave_SAE_ID": "Y"})
        enc = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2,
                                              "size": 4 * KEY_BITS})
        ids = [{"key_ID": k["key_ID"]} for k in enc.body["keys"]]
        stolen = await call(sb, "Y2", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        dec = await call(sb, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        again = await call(sb, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
        left = await sa.pool.stored_key_count(4 * KEY_BITS)
        await sa.pool.settle()
        return st, enc, stolen, dec, again, left

    st, enc, stolen, dec, again, left = asyncio.run(run())
    assert st.body["min_key_size"] == KEY_BITS and st.body["max_key_size"] == 8 * KEY_BITS
    assert enc.status == 200 and len(enc.body["keys"]) == 2
    assert stolen.status == 401
    assert dec.status == 200 and dec.body["keys"] == enc.body["keys"]
    assert again.status == 400
    for k in enc.body["keys"]:
        import base64
        assert len(base64.b64decode(k["key"])) == 4 * KEY_BITS // 8
    # A issues the 32 even keys; 8 units went into the two keys
    assert left == (32 - 8) // 4
    assert len(a_store.key_states("L")) == 64 - 8      # the units are erased at A after settle
    assert len(b_store.key_states("L")) == 64 - 8      # and at B on delivery
    assert b_store._conn.execute("SELECT COUNT(*) FROM composites").fetchone()[0] == 0


def test_a_size_not_a_multiple_of_the_unit_is_refused_with_400(tmp_path):
    a_store, b_store = stores(tmp_path)
    sa, _sb = _sized_services(a_store, b_store, 8 * KEY_BITS)

    async def run():
        odd = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 1,
                                              "size": KEY_BITS + 8})
        big = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 1,
                                              "size": 9 * KEY_BITS})
        return odd, big

    odd, big = asyncio.run(run())
    assert odd.status == 400 and f"key unit of {KEY_BITS} bits" in odd.body["message"]
    assert big.status == 400 and "max_key_size" in big.body["message"]
    assert a_store.issuable_count("L") == 32          # nothing was taken


def test_a_reservation_whose_size_is_not_its_units_is_refused(tmp_path):
    a_store, b_store = stores(tmp_path)
    replies = []

    async def send(t, payload):
        replies.append(rv.decode_reply(t, payload))

    async def run():
        pb = NodeKeyPool(b_store, "L", send, key_size_bits=KEY_BITS)
        unit = sorted(k for k, s in b_store.key_states("L").items() if s == "committed")[0]
        await pb.on_peer_message(*rv.encode_reserve(7, [rv.Reservation(
            unit, 2 * KEY_BITS, (unit,), "X", ("Y",))]))

    asyncio.run(run())
    assert replies == [(7, rv.RefusalReason.MALFORMED)]


def test_an_exhausted_pool_asked_again_and_again_counts_once_off_the_event_loop(tmp_path,
                                                                              monkeypatch):
    """A client hammering an exhausted pool: each 503 names the stored key count; the count
    (a scan of the store's index) runs in the store's thread, and once while no key moves
    (its age limit is lifted here: 50 requests on a loaded machine can outlast 0.25 s)."""
    import threading
    from daemon.keyservice import pool as pool_mod
    monkeypatch.setattr(pool_mod, "COUNT_MAX_AGE_S", 60.0)
    a_store, b_store = stores(tmp_path, n_keys=8)
    sa, sb, _ = services(a_store, b_store)
    counts, real = [], a_store.issuable_count

    def counting(link_id):
        counts.append(threading.get_ident())
        return real(link_id)
    a_store.issuable_count = counting

    async def run():
        loop_thread = threading.get_ident()
        replies = [await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 5})
                   for _ in range(50)]
        after_50 = len(counts)
        got = await call(sa, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 4})
        left = await call(sa, "X", "status", {"slave_SAE_ID": "Y"})
        return loop_thread, replies, after_50, got, left

    loop_thread, replies, after_50, got, left = asyncio.run(run())
    assert {r.status for r in replies} == {503}
    assert {r.body["details"][0]["stored_key_count"] for r in replies} == {4}
    assert after_50 == 1 and loop_thread not in counts
    assert got.status == 200 and left.body["stored_key_count"] == 0   # counted again
    assert len(counts) == 2

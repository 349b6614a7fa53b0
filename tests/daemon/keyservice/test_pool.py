"""The key service over two real key stores, reservations carried between two pools."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from daemon.keyservice import service as svc
from daemon.keyservice.pool import NodeKeyPool
from daemon.keyservice.wire import decode_reply, encode_request
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
        assert r.status == 200
        ids += [k["key_ID"] for k in r.body["keys"]]
    assert len(ids) == len(set(ids)) == 360

"""ETSI 014/004 semantics of the key service, without sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from daemon.keyservice import service as svc
from daemon.keyservice.wire import PROTOCOL, decode_reply, encode_reply, encode_request
from tests.daemon.keyservice.pools import MemoryPool, SharedLink

LIMITS_A = svc.KmeLimits(kme_id="KME-A", peer_kme_id="KME-B", local_saes=frozenset({"X", "X2"}),
                         remote_saes=frozenset({"Y", "Y2"}), max_key_per_request=64,
                         max_sae_id_count=1)
LIMITS_B = svc.KmeLimits(kme_id="KME-B", peer_kme_id="KME-A", local_saes=frozenset({"Y", "Y2"}),
                         remote_saes=frozenset({"X", "X2"}), max_key_per_request=64,
                         max_sae_id_count=1)


def pair(n_bytes=1 << 16):
    link = SharedLink(n_bytes)
    return svc.KeyService(LIMITS_A, MemoryPool(link)), svc.KeyService(LIMITS_B, MemoryPool(link))


def call(service, sae, op, body, rid=None):
    rid = rid or uuid.uuid4().bytes
    frames = encode_request(op, rid, body)
    reply = decode_reply(asyncio.run(service.handle(sae, frames)))
    assert reply.request_id == rid and reply.op == op
    return reply


def test_status_reports_etsi_fields():
    a, _ = pair()
    r = call(a, "X", "status", {"slave_SAE_ID": "Y"})
    assert r.status == 200
    assert set(r.body) == {"source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID",
                           "key_size", "stored_key_count", "max_key_count",
                           "max_key_per_request", "max_key_size", "min_key_size",
                           "max_SAE_ID_count"}
    assert r.body["master_SAE_ID"] == "X" and r.body["slave_SAE_ID"] == "Y"
    assert r.body["stored_key_count"] == (1 << 16) // 32


def test_enc_keys_then_dec_keys_at_the_other_node_give_the_same_bytes():
    a, b = pair()
    enc = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 3, "size": 512})
    assert enc.status == 200 and len(enc.body["keys"]) == 3
    assert all(len(base64.b64decode(k["key"])) == 64 for k in enc.body["keys"])
    ids = [{"key_ID": k["key_ID"]} for k in enc.body["keys"]]
    dec = call(b, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
    assert dec.status == 200
    assert dec.body["keys"] == enc.body["keys"]
    again = call(b, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
    assert again.status == 400 and again.body["message"] == svc.MSG_NOT_FOUND


@pytest.mark.parametrize("op", ["enc_keys", "dec_keys"])
def test_delivered_keys_are_written_as_etsi_strings_and_their_buffers_wiped(op):
    link = SharedLink(1 << 12)
    handed: list[svc.IssuedKey] = []

    class Recording(MemoryPool):
        async def issue(self, master, slaves, number, size_bits):
            handed.extend(await super().issue(master, slaves, number, size_bits))
            return handed[-number:]

        async def fetch(self, caller, master, key_ids):
            handed.extend(await super().fetch(caller, master, key_ids))
            return handed[-len(key_ids):]

    a = svc.KeyService(LIMITS_A, Recording(link))
    b = svc.KeyService(LIMITS_B, Recording(link))
    material = bytes(link.material[:5 * 40])       # what the next keys will be
    enc = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 5, "size": 320})
    reply = enc if op == "enc_keys" else call(
        b, "Y", "dec_keys", {"master_SAE_ID": "X",
                             "key_IDs": [{"key_ID": k["key_ID"]} for k in enc.body["keys"]]})
    assert reply.status == 200
    got = reply.body["keys"]
    assert [k["key"] for k in got] == [base64.b64encode(material[i * 40:(i + 1) * 40]).decode()
                                       for i in range(5)]
    assert [k["key_ID"] for k in got] == [str(k.key_id) for k in handed[-5:]]
    assert handed and all(not any(k.key) for k in handed)


@pytest.mark.parametrize("n_keys", [1, 7, 128])
@pytest.mark.parametrize("key_bytes", [8, 32, 1024])
def test_a_reply_carrying_keys_is_encoded_into_a_buffer_that_never_has_to_grow(n_keys,
                                                                              key_bytes):
    """A buffer that grows while written is moved, leaving key bytes in memory nobody wipes:
    the capacity the service gives covers the whole body, for key containers and for ETSI
    004's key_buffer (with the longest request id and stream index)."""
    keys = [bytearray(b"\xff" * key_bytes) for _ in range(n_keys)]
    container = {"keys": [{"key_ID": uuid.uuid4(), "key": k} for k in keys]}
    stream = {"status": svc.SUCCESSFUL, "index": 2**63 - 1, "key_ID": uuid.uuid4(),
              "key_buffer": keys[0], "metadata": {}}
    for body, buffers in ((container, keys), (stream, keys[:1])):
        frames = encode_reply("enc_keys", b"r" * 64, 200, body,
                              capacity=svc.reply_capacity(buffers))
        assert len(frames[4]) <= svc.reply_capacity(buffers)
        assert decode_reply(frames).status == 200


def test_dec_keys_by_another_sae_is_401_and_consumes_nothing():
    a, b = pair()
    enc = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y"})
    ids = [{"key_ID": k["key_ID"]} for k in enc.body["keys"]]
    stolen = call(b, "Y2", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids})
    assert stolen.status == 401
    assert call(b, "Y", "dec_keys", {"master_SAE_ID": "X", "key_IDs": ids}).status == 200


def test_a_mixed_request_with_one_foreign_key_consumes_none():
    a, b = pair()
    mine = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y"}).body["keys"][0]["key_ID"]
    other = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y2"}).body["keys"][0]["key_ID"]
    r = call(b, "Y", "dec_keys", {"master_SAE_ID": "X",
                                  "key_IDs": [{"key_ID": mine}, {"key_ID": other}]})
    assert r.status == 401
    assert call(b, "Y", "dec_keys", {"master_SAE_ID": "X",
                                     "key_IDs": [{"key_ID": mine}]}).status == 200


def test_retry_with_the_same_request_id_returns_the_same_keys_new_id_new_keys():
    a, _ = pair()
    rid = b"retry-me"
    first = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2}, rid=rid)
    second = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2}, rid=rid)
    third = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2})
    assert first.body == second.body
    assert not {k["key_ID"] for k in third.body["keys"]} & {k["key_ID"] for k in first.body["keys"]}
    assert a.counters["retries_served"] == 1


def test_retries_arriving_while_the_request_is_served_wait_for_its_keys():
    link = SharedLink(1 << 12)
    gate = asyncio.Event()

    class Gated(MemoryPool):
        async def issue(self, master, slaves, number, size_bits):
            await gate.wait()
            return await super().issue(master, slaves, number, size_bits)

    a = svc.KeyService(LIMITS_A, Gated(link))
    frames = encode_request("enc_keys", b"slow", {"slave_SAE_ID": "Y", "number": 2})

    async def run():
        first = asyncio.create_task(a.handle("X", frames))
        await asyncio.sleep(0)
        retries = [asyncio.create_task(a.handle("X", frames)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not first.done() and not any(r.done() for r in retries)
        gate.set()
        return [decode_reply(r) for r in await asyncio.gather(first, *retries)]

    replies = asyncio.run(run())
    assert all(r.status == 200 and r.body == replies[0].body for r in replies)
    assert len(replies[0].body["keys"]) == 2 and link.offset == 2 * 32
    assert a.counters["retries_served"] == 3 and not a._cache._pending


def test_the_same_request_id_from_another_client_is_a_new_request():
    a, _ = pair()
    one = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y"}, rid=b"same")
    two = call(a, "X2", "enc_keys", {"slave_SAE_ID": "Y"}, rid=b"same")
    assert one.body["keys"][0]["key_ID"] != two.body["keys"][0]["key_ID"]


def test_evicted_replies_are_wiped():
    now = [0.0]
    link = SharedLink(4096)
    a = svc.KeyService(LIMITS_A, MemoryPool(link), reply_ttl_s=10, clock=lambda: now[0])
    frames = encode_request("enc_keys", b"r1", {"slave_SAE_ID": "Y"})
    asyncio.run(a.handle("X", frames))
    cached = a._cache._done[("X", b"r1")][1]
    assert any(any(f) for f in cached)
    now[0] = 11.0
    asyncio.run(a.handle("X", encode_request("status", b"r2", {"slave_SAE_ID": "Y"})))
    assert ("X", b"r1") not in a._cache._done
    assert all(not any(f) for f in cached)


def test_the_reply_cache_evicts_by_age_and_by_count_and_wipes_what_it_evicts():
    cache = svc._ReplyCache(ttl_s=10, max_entries=3)
    frames = [[bytearray(b"key %d" % i)] for i in range(5)]
    key = [("X", b"r%d" % i) for i in range(5)]
    for i in range(4):
        cache.put(key[i], frames[i], float(i))
    assert len(cache) == 3 and cache.get(key[0], 4.0) is None     # over the count
    assert not any(frames[0][0])
    assert cache.get(key[1], 10.5) is frames[1]
    assert cache.get(key[2], 11.0) is frames[2] and cache.get(key[1], 11.0) is None
    assert not any(frames[1][0]) and any(frames[2][0])
    assert cache.get(key[3], 12.0) is frames[3] and cache.get(key[2], 12.0) is None
    assert cache.get(key[3], 13.0) is None and len(cache) == 0     # all too old
    assert not any(any(f[0]) for f in frames[:4])
    cache.put(key[4], frames[4], 100.0)     # an emptied cache ages its next entry afresh
    assert cache.get(key[4], 109.9) is frames[4]
    assert cache.get(key[4], 110.0) is None and not any(frames[4][0])


def test_exhausted_pool_is_503_and_takes_nothing():
    a, _ = pair(n_bytes=64)
    r = call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 3})
    assert r.status == 503 and "exhausted" in r.body["message"]
    assert call(a, "X", "enc_keys", {"slave_SAE_ID": "Y", "number": 2}).status == 200


BAD_REQUESTS = [
    # (frames or (op, body)), status, fragment of the message
    ([PROTOCOL, b"enc_keys", b"r"], 400, "4 frames"),
    ([b"HTTP/1.1", b"enc_keys", b"r", b"{}"], 400, "unknown protocol"),
    ([PROTOCOL, b"drop_tables", b"r", b"{}"], 400, "unknown operation"),
    ([PROTOCOL, b"status", b"", b"{}"], 400, "request_id"),
    ([PROTOCOL, b"status", b"r" * 65, b"{}"], 400, "request_id"),
    ([PROTOCOL, b"status", b"r", b"{not json"], 400, "not valid JSON"),
    ([PROTOCOL, b"status", b"r", b"[1,2]"], 400, "schema"),
    ([PROTOCOL, b"status", b"r", b"x" * 70000], 400, "exceeds"),
    (("enc_keys", {"slave_SAE_ID": "Y", "number": "3"}), 400, "schema"),
    (("enc_keys", {"slave_SAE_ID": "Y", "number": -1}), 400, "schema"),
    (("enc_keys", {"slave_SAE_ID": "Y", "number": 10**30}), 400, "schema"),
    (("enc_keys", {"slave_SAE_ID": "Y", "number": 65}), 400, "max_key_per_request"),
    (("enc_keys", {"slave_SAE_ID": "Y", "size": 100}), 400, "size shall be a multiple of 8"),
    (("enc_keys", {"slave_SAE_ID": "Y", "size": 16}), 400, "min_key_size"),
    (("enc_keys", {"slave_SAE_ID": "Y", "numbr": 2}), 400, "schema"),
    (("enc_keys", {"slave_SAE_ID": "nobody"}), 400, "unknown SAE ID"),
    (("enc_keys", {"slave_SAE_ID": "Y", "additional_slave_SAE_IDs": ["Y2", "Y"]}), 400,
     "max_SAE_ID_count"),
    (("enc_keys", {"slave_SAE_ID": "Y", "extension_mandatory": [{"route": "fast"}]}), 400,
     "not all extension_mandatory parameters are supported"),
    (("dec_keys", {"master_SAE_ID": "Y", "key_IDs": [{"key_ID": "not-a-uuid"}]}), 400,
     "schema"),
    (("dec_keys", {"master_SAE_ID": "Y", "key_IDs": []}), 400, "schema"),
    (("dec_keys", {"master_SAE_ID": "Y", "key_IDs": [{"key_ID": str(uuid.UUID(int=5))}]}), 400,
     svc.MSG_NOT_FOUND),
]


@pytest.mark.parametrize("request_, status, fragment", BAD_REQUESTS)
def test_bad_requests_get_an_error_naming_the_problem_and_consume_nothing(request_, status,
                                                                          fragment):
    a, _ = pair(n_bytes=32 * 4)
    if isinstance(request_, tuple):
        frames = encode_request(request_[0], b"rid", request_[1])
    else:
        frames = request_
    reply = decode_reply(asyncio.run(a.handle("X", frames)))
    assert reply.status == status
    text = json.dumps(reply.body)
    assert fragment in text
    assert asyncio.run(a.pool.stored_key_count(256)) == 4


def test_many_clients_racing_never_share_a_key():
    a, _ = pair(n_bytes=32 * 400)

    async def race():
        tasks = [a.handle(sae, encode_request("enc_keys", uuid.uuid4().bytes,
                                              {"slave_SAE_ID": "Y", "number": 4}))
                 for sae in ("X", "X2") for _ in range(50)]
        return await asyncio.gather(*tasks)

    ids, keys = [], []
    for frames in asyncio.run(race()):
        r = decode_reply(frames)
        assert r.status == 200
        ids += [k["key_ID"] for k in r.body["keys"]]
        keys += [k["key"] for k in r.body["keys"]]
    assert len(ids) == len(set(ids)) == 400
    assert len(set(keys)) == 400


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["X", "X2"]), st.integers(1, 5),
                          st.booleans()), min_size=1, max_size=20))
def test_property_retries_and_new_requests_never_hand_out_a_key_twice(plan):
    a, _ = pair(n_bytes=32 * 200)
    seen: dict[str, tuple[str, bytes]] = {}
    last: dict[str, bytes] = {}
    for sae, number, retry in plan:
        rid = last.get(sae) if retry and sae in last else uuid.uuid4().bytes
        last[sae] = rid
        r = call(a, sae, "enc_keys", {"slave_SAE_ID": "Y", "number": number}, rid=rid)
        for k in r.body["keys"]:
            owner = seen.setdefault(k["key_ID"], (sae, rid))
            assert owner == (sae, rid), "a key went to two different requests"


def test_etsi004_both_ends_get_the_same_key_for_the_same_index():
    a, b = pair()
    qos = {"key_chunk_size": 32, "timeout": 100}
    opened = call(a, "X", "open_connect", {"source": "X", "destination": "Y", "qos": qos})
    assert opened.body["status"] == svc.SUCCESSFUL
    ksid = opened.body["key_stream_id"]
    # node B learns the stream over the peer channel; here both services share the link
    b.streams[ksid] = svc.KeyStream(ksid, "X", "Y", a.streams[ksid].qos)
    b.streams[ksid].opened_by.add("Y")
    handed = []
    for service in (a, b):                  # record the key buffers the pools hand over
        take = service.pool.stream_key

        async def recorded(*args, _take=take):
            handed.append(await _take(*args))
            return handed[-1]
        service.pool.stream_key = recorded
    ka = call(a, "X", "get_key", {"key_stream_id": ksid, "index": 7})
    kb = call(b, "Y", "get_key", {"key_stream_id": ksid, "index": 7})
    assert ka.body["status"] == kb.body["status"] == svc.SUCCESSFUL
    assert ka.body["key_buffer"] == kb.body["key_buffer"]
    assert len(base64.b64decode(ka.body["key_buffer"])) == 32
    assert ka.body["key_ID"] == str(handed[0].key_id)
    assert len(handed) == 2 and all(not any(k.key) for k in handed)   # wiped once encoded
    assert call(a, "X", "get_key", {"key_stream_id": ksid, "index": 7}).status == 400
    assert call(a, "X", "close", {"key_stream_id": ksid}).body["status"] == svc.SUCCESSFUL
    assert call(a, "X", "get_key", {"key_stream_id": ksid, "index": 8}).status == 400


def test_etsi004_status_codes():
    a, _ = pair(n_bytes=32)
    r = call(a, "X", "open_connect", {"source": "X", "destination": "Y",
                                      "qos": {"key_chunk_size": 4096}})
    assert r.body["status"] == svc.QOS_NOT_MET
    r = call(a, "X", "open_connect", {"source": "X", "destination": "Y", "key_stream_id": "s1",
                                      "qos": {"key_chunk_size": 32}})
    assert r.body["status"] == svc.SUCCESSFUL
    again = call(a, "X", "open_connect", {"source": "X", "destination": "Y",
                                          "key_stream_id": "s1", "qos": {"key_chunk_size": 32}})
    assert again.body["status"] == svc.KEY_STREAM_ID_IN_USE
    assert call(a, "X", "get_key", {"key_stream_id": "s1", "index": 0,
                                    "metadata_size": 1}).body["status"] == svc.METADATA_TOO_SMALL
    assert call(a, "X", "get_key", {"key_stream_id": "s1", "index": 0}).body["status"] == 0
    assert call(a, "X", "get_key", {"key_stream_id": "s1",
                                    "index": 1}).body["status"] == svc.INSUFFICIENT_KEY
    assert call(a, "Z", "open_connect", {"source": "X", "destination": "Y",
                                         "qos": {"key_chunk_size": 32}}).status == 401

"""Exactly once on the durable store: retries, races, and bad input over real sockets."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import zmq
from hypothesis import given, settings, strategies as st

from daemon.keyservice.wire import PROTOCOL, decode_reply, encode_request
from tests.daemon.keyservice.test_pool import call, services, stores
from tests.daemon.keyservice.test_runner import Pair, make_stores


def test_a_lazy_pirate_retry_of_a_slow_request_gets_the_same_keys_once(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store)
        await p.start()
        try:
            p.link.delay_s["A"] = 0.35     # RESERVED reaches A late: the client times out
            x = p.client("A", "X", timeout_s=0.15, retries=6)
            keys = await x.enc_keys("Y", number=2)
            p.link.delay_s["A"] = 0.0
            return keys, p.runners["A"].status(), p.runners["B"].status()
        finally:
            await p.close()

    keys, status_a, status_b = asyncio.run(run())
    assert len(keys) == 2
    assert status_a["counters"]["retries_served"] >= 1       # the retry did happen
    assert status_a["counters"]["issued"] == 2                # and consumed nothing new
    assert status_a["pool"]["issuable"] == 32 - 2
    assert status_b["reservations"] == [{"master_SAE_ID": "X", "slave_SAE_ID": "Y", "keys": 2}]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.sampled_from([0, 1]),
                          st.integers(1, 6)), min_size=1, max_size=40))
def test_property_racing_clients_at_both_nodes_never_get_the_same_key(plan):
    """Requests of random sizes from several SAEs at both nodes, all in flight at once, over
    two real stores: every key ID is delivered to one request only, and the keys delivered
    are exactly as many as the granted requests asked for."""
    with tempfile.TemporaryDirectory() as tmp:
        a_store, b_store = stores(Path(tmp), n_keys=200)
        sa, sb, _ = services(a_store, b_store)
        masters = {"A": (sa, ["X", "X2"], "Y"), "B": (sb, ["Y", "Y2"], "X")}

        async def run():
            reqs = []
            for node, who, number in plan:
                service, saes, slave = masters[node]
                reqs.append(call(service, saes[who], "enc_keys",
                                 {"slave_SAE_ID": slave, "number": number}))
            return await asyncio.gather(*reqs)

        replies = asyncio.run(run())
        asked = {"A": 0, "B": 0}
        ids = []
        for (node, _who, number), r in zip(plan, replies):
            assert r.status in (200, 503)
            if r.status == 200:
                assert len(r.body["keys"]) == number
                asked[node] += number
                ids += [k["key_ID"] for k in r.body["keys"]]
        assert len(ids) == len(set(ids)) == asked["A"] + asked["B"]
        a_store.close()
        b_store.close()


def test_malformed_frames_over_curve_get_400_and_the_service_keeps_serving(tmp_path):
    a_store, b_store = make_stores(tmp_path)
    bad = [[b"QKDKS/1"], [PROTOCOL, b"enc_keys", b"r1", b"{\"slave_SAE_ID\": 5}"],
           [PROTOCOL, b"enc_keys", b"r2", b"\xff\xfe"], [PROTOCOL, b"nope", b"r3", b"{}"],
           [PROTOCOL, b"enc_keys", b"r4", b'{"slave_SAE_ID":"Y","number":-3}'],
           [PROTOCOL, b"enc_keys", b"r5", b'{"slave_SAE_ID":"Y","size":255}'],
           [PROTOCOL, b"dec_keys", b"r6", b'{"master_SAE_ID":"X","key_IDs":[{"key_ID":"x"}]}'],
           [b"", b"", b"", b"", b"", b""]]

    async def run():
        p = Pair(a_store, b_store)
        await p.start()
        pub, sec = p.client_keys["X"]
        sock = p.ctx.socket(zmq.DEALER)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
            p.server_keys["A"][0], pub, sec
        sock.connect(p.runners["A"].endpoint)
        try:
            statuses = []
            for frames in bad:
                await sock.send_multipart(frames)
                assert await sock.poll(2000)
                statuses.append(decode_reply(await sock.recv_multipart()).status)
            await sock.send_multipart(encode_request("enc_keys", b"good",
                                                     {"slave_SAE_ID": "Y", "number": 1}))
            assert await sock.poll(2000)
            good = decode_reply(await sock.recv_multipart())
            return statuses, good, p.runners["A"].status()
        finally:
            sock.close(0)
            await p.close()

    statuses, good, status = asyncio.run(run())
    assert statuses == [400] * len(bad)
    assert good.status == 200 and len(good.body["keys"]) == 1
    assert status["pool"]["issuable"] == 31       # only the good request took a key

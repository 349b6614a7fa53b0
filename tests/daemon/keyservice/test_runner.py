"""Two key-service runners against each other: real key stores, real CURVE sockets, and an
in-process peer link standing in for the authenticated peer channel."""

from __future__ import annotations

import asyncio
import threading
import os
import time
import uuid
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from daemon.keyservice.client import AsyncKeyClient, KeyServiceError
from daemon.keyservice.runner import (MESSAGE_TYPES, KeyServiceRunner, KeyServiceSettings,
                                      parse_clients, parse_settings)
from daemon.keystore.store import KeyStore

KEY_BITS = 256


class PeerLink:
    """Messages between the two runners in order, as the peer channel delivers them; ``up``
    False makes ``send`` raise ConnectionError like a channel whose peer is gone."""

    def __init__(self):
        self.runners: dict[str, KeyServiceRunner] = {}
        self.up = True
        self.delay_s = {"A": 0.0, "B": 0.0}       # per receiving node: a slow channel
        self.seen_types: set[int] = set()
        self._queues = {"A": asyncio.Queue(), "B": asyncio.Queue()}
        self._tasks = [asyncio.create_task(self._pump(n)) for n in ("A", "B")]

    def sender(self, me: str):
        other = "B" if me == "A" else "A"

        async def send(msg_type: int, payload: bytes) -> None:
            if not self.up:
                raise ConnectionError("peer channel down")
            assert isinstance(payload, bytes) and 0 <= msg_type < 256
            self.seen_types.add(msg_type)
            self._queues[other].put_nowait((msg_type, payload))
        return send

    async def _pump(self, name: str) -> None:
        while True:
            msg_type, payload = await self._queues[name].get()
            if self.delay_s[name]:
                await asyncio.sleep(self.delay_s[name])
            assert msg_type in MESSAGE_TYPES          # the node routes only these to us
            await self.runners[name].on_peer_message(msg_type, payload)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def make_stores(tmp_path: Path, n_keys: int = 64):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    keys = [(uuid.uuid4(), os.urandom(KEY_BITS // 8)) for _ in range(n_keys)]
    a.prepare("L", 1, keys, coordinator=True)
    b.prepare("L", 1, keys, coordinator=False)
    a.commit("L", 1)
    b.commit("L", 1)
    return a, b


class Pair:
    """Two runners, their clients' keypairs, and helpers to make clients."""

    def __init__(self, a_store, b_store, **settings):
        self.server_keys = {n: zmq.curve_keypair() for n in "AB"}
        self.client_keys = {sae: zmq.curve_keypair() for sae in ("X", "X2", "Y", "Y2")}
        self.stores = {"A": a_store, "B": b_store}
        self.settings = {}
        for name, local, remote, kme, peer in (("A", ("X",), ("Y", "Y2"), "KME-A", "KME-B"),
                                               ("B", ("Y", "Y2"), ("X", "X2"), "KME-B", "KME-A")):
            pub, sec = self.server_keys[name]
            self.settings[name] = KeyServiceSettings(
                endpoint="tcp://127.0.0.1:*", link_id="L", kme_id=kme, peer_kme_id=peer,
                public_key=pub, secret_key=sec,
                clients={self.client_keys[s][0]: s for s in local},
                remote_saes=frozenset(remote), lease_batch=8, settle_interval_s=0.05,
                reserve_timeout_s=2.0, **{"reserve_ahead": 0, **settings})
        self.ctx = zmq.asyncio.Context()
        self.link: PeerLink | None = None
        self.runners: dict[str, KeyServiceRunner] = {}
        self._clients: list[AsyncKeyClient] = []

    async def start(self, names=("A", "B")):
        if self.link is None:
            self.link = PeerLink()
        for n in names:
            r = KeyServiceRunner(self.settings[n], self.stores[n], self.link.sender(n),
                                 key_size_bits=KEY_BITS)
            self.runners[n] = self.link.runners[n] = r
            await r.start()

    def client(self, node: str, sae: str, **kw) -> AsyncKeyClient:
        pub, sec = self.client_keys[sae]
        c = AsyncKeyClient(self.runners[node].endpoint,
                           server_public_key=self.server_keys[node][0], public_key=pub,
                           secret_key=sec, context=self.ctx,
                           **{"timeout_s": 2.0, "retries": 1, **kw})
        self._clients.append(c)
        return c

    async def close(self):
        for c in self._clients:
            c.close()
        for r in self.runners.values():
            await r.close()
        await self.link.stop()
        self.ctx.term()


def test_keys_from_enc_keys_at_a_are_the_same_bytes_by_dec_keys_at_b(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store)
        await p.start()
        try:
            x, y = p.client("A", "X"), p.client("B", "Y")
            keys = await x.enc_keys("Y", number=4)
            admin_b = p.runners["B"].status()
            fetched = await y.dec_keys("X", [k.key_id for k in keys])
            admin_b_after = p.runners["B"].status()
            await asyncio.sleep(0.2)          # a settle tick
            # the admin socket's view: the same figures, its store scans off the event loop
            loop_thread, scans = threading.get_ident(), []
            real = b_store.reservation_counts
            b_store.reservation_counts = lambda link: scans.append(threading.get_ident()) \
                or real(link)
            view_b = await p.runners["B"].status_view()
            b_store.reservation_counts = real
            assert scans and loop_thread not in scans
            assert view_b["reservations"] == admin_b_after["reservations"]
            assert view_b["pool"] == admin_b_after["pool"]
            return keys, fetched, admin_b, admin_b_after, p.runners["A"].status()
        finally:
            await p.close()

    keys, fetched, admin_b, admin_b_after, admin_a = asyncio.run(run())
    assert [(k.key_id, bytes(k.key)) for k in keys] == \
        [(k.key_id, bytes(k.key)) for k in fetched]
    assert admin_b["reservations"] == [{"master_SAE_ID": "X", "slave_SAE_ID": "Y", "keys": 4}]
    assert admin_b_after["reservations"] == []
    assert [c["sae_id"] for c in admin_b["clients"]] == ["Y", "Y2"]
    assert admin_a["pool"]["issuable"] == 32 - 4
    for k in keys:      # erased at both ends once delivered at both
        assert k.key_id not in a_store.key_states("L")
        assert k.key_id not in b_store.key_states("L")
    text = repr(admin_a) + repr(admin_b)
    for k in keys:      # the admin view never shows key material
        assert bytes(k.key).hex() not in text


def test_reload_adds_and_removes_clients_without_a_restart(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store)
        await p.start()
        try:
            x, x2 = p.client("A", "X"), p.client("A", "X2", timeout_s=0.3)
            before = await x.status("Y")
            with pytest.raises(Exception) as stranger:     # X2 not yet on A's list: silence
                await x2.status("Y")
            p.runners["A"].reload({p.client_keys["X2"][0]: "X2"})
            after = await p.client("A", "X2").status("Y")
            with pytest.raises(KeyServiceError) as removed:
                await x.enc_keys("Y")
            with pytest.raises(ValueError):
                p.runners["A"].reload({})
            return before, stranger.value, after, removed.value, p.runners["A"].status()
        finally:
            await p.close()

    before, stranger, after, removed, status = asyncio.run(run())
    assert before["master_SAE_ID"] == "X" and after["master_SAE_ID"] == "X2"
    assert type(stranger).__name__ == "KeyServiceTimeout"
    assert removed.status == 401
    assert [c["sae_id"] for c in status["clients"]] == ["X2"]
    assert status["rejected_client_keys"] >= 1


def test_an_etsi004_stream_between_two_runners_over_curve(tmp_path):
    a_store, b_store = make_stores(tmp_path)
    qos = {"key_chunk_size": KEY_BITS // 8, "timeout": 2000}

    async def run():
        p = Pair(a_store, b_store)
        await p.start()
        try:
            x, y = p.client("A", "X"), p.client("B", "Y")
            opened = await x.open_connect("X", "Y", qos)
            ksid = opened["key_stream_id"]
            joined = await y.open_connect("X", "Y", qos, key_stream_id=ksid)
            got_x = [await x.get_stream_key(ksid, i) for i in range(3)]
            got_y = list(await asyncio.gather(*(y.get_stream_key(ksid, i)
                                                for i in (2, 1, 0, 3))))
            got_x.append(await x.get_stream_key(ksid, 3))
            closed = (await x.close_stream(ksid), await y.close_stream(ksid))
            return opened, joined, got_x, got_y, closed, p.runners["A"].status()
        finally:
            await p.close()

    opened, joined, got_x, got_y, closed, status = asyncio.run(run())
    assert opened["status"] == joined["status"] == 0
    by_index_y = {k.index: k for k in got_y}
    for kx in got_x:
        ky = by_index_y[kx.index]
        assert kx.status == ky.status == 0
        assert kx.key.key_id == ky.key.key_id and bytes(kx.key.key) == bytes(ky.key.key)
    assert len({kx.key.key_id for kx in got_x}) == 4
    assert [c["status"] for c in closed] == [0, 0]
    assert status["counters"]["stream_keys"] == 4 and status["streams"] == []


def test_a_restart_voids_the_open_lease_at_both_ends(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store, housekeeping_interval_s=0.1)
        p.settings["A"] = p.settings["A"].__class__(**{**p.settings["A"].__dict__,
                                                       "settle_interval_s": 3600.0})
        await p.start()
        x = p.client("A", "X")
        keys = await x.enc_keys("Y", number=3)
        # node A stops hard: its socket goes, its lease is never settled nor closed
        a = p.runners.pop("A")
        for t in a._timers:
            t.cancel()
        await a.server.stop()
        leased = {k for k, s in a_store.key_states("L").items() if s == "leased"}
        p.link.up = False                         # and the peer channel is down at restart
        await p.start(names=("A",))
        await asyncio.sleep(0.05)
        pending = p.runners["A"].status()["unacknowledged_voids"]
        p.link.up = True                          # the channel comes back: VOID resent
        await p.runners["A"].peer_connected()
        for _ in range(100):
            if not p.runners["A"].status()["unacknowledged_voids"]:
                break
            await asyncio.sleep(0.02)
        y = p.client("B", "Y")
        fetched = await y.dec_keys("X", [k.key_id for k in keys])
        status_a = p.runners["A"].status()
        await p.close()
        return keys, leased, pending, fetched, status_a

    keys, leased, pending, fetched, status_a = asyncio.run(run())
    delivered = {k.key_id for k in keys}
    assert len(leased) == 8 and delivered <= leased      # the whole lease, taken or not
    undelivered = leased - delivered
    assert pending == 8 and status_a["voided_at_start"] == 8
    assert status_a["unacknowledged_voids"] == 0
    assert [bytes(k.key) for k in fetched] == [bytes(k.key) for k in keys]
    for kid in undelivered | delivered:
        assert kid not in a_store.key_states("L") and kid not in b_store.key_states("L")


def _write_cert(path: Path, public: bytes, secret: bytes | None = None) -> None:
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def test_settings_from_the_node_toml_table(tmp_path):
    pub, sec = zmq.curve_keypair()
    cpub, _ = zmq.curve_keypair()
    _write_cert(tmp_path / "ks.key_secret", pub, sec)
    _write_cert(tmp_path / "x.key", cpub)
    table = {"endpoint": "tcp://127.0.0.1:7200", "link": "L", "kme_id": "KME-A",
             "peer_kme_id": "KME-B", "secret_key_file": "ks.key_secret", "remote_saes": ["Y"],
             "clients": [{"sae_id": "X", "public_key_file": "x.key"}], "lease_batch": 256}
    s = parse_settings(table, base_dir=tmp_path)
    assert s.clients == {cpub: "X"} and s.public_key == pub and s.lease_batch == 256
    assert sec.decode() not in repr(s)


@pytest.mark.parametrize("change, fragment", [
    ({"clients": []}, "keyservice.clients"),
    ({"clients": [{"sae_id": "X"}]}, "keyservice.clients[0].public_key_file is missing"),
    ({"clients": [{"sae_id": "bad id", "public_key": "a" * 40}]}, "clients[0].sae_id"),
    ({"clients": [{"sae_id": "X", "public_key": "short"}]}, "40 Z85"),
    ({"remote_saes": []}, "keyservice.remote_saes"),
    ({"lease_batch": 0}, "keyservice.lease_batch"),
    ({"lease_batch": 1.5}, "positive integer"),
    ({"secret_key_file": "missing.key_secret"}, "keyservice.secret_key_file"),
    ({"endpoint": 7200}, "keyservice.endpoint"),
])
def test_settings_errors_name_the_key(tmp_path, change, fragment):
    pub, sec = zmq.curve_keypair()
    _write_cert(tmp_path / "ks.key_secret", pub, sec)
    table = {"endpoint": "tcp://127.0.0.1:7200", "link": "L", "kme_id": "KME-A",
             "peer_kme_id": "KME-B", "secret_key_file": "ks.key_secret", "remote_saes": ["Y"],
             "clients": [{"sae_id": "X", "public_key": zmq.curve_keypair()[0].decode()}]}
    with pytest.raises(ValueError) as err:
        parse_settings({**table, **change}, base_dir=tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_parse_clients_refuses_one_key_for_two_saes(tmp_path):
    key = zmq.curve_keypair()[0].decode()
    with pytest.raises(ValueError, match="already given"):
        parse_clients([{"sae_id": "X", "public_key": key}, {"sae_id": "Z", "public_key": key}],
                      base_dir=tmp_path)


def test_reserving_ahead_answers_from_keys_already_reserved_and_a_stop_voids_the_rest(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store, reserve_ahead=6)
        await p.start()
        x, y = p.client("A", "X"), p.client("B", "Y")
        first = await x.enc_keys("Y", number=2)
        for _ in range(100):                       # the background refill
            if p.runners["A"].status()["reserved_ahead"].get("X -> Y") == 6:
                break
            await asyncio.sleep(0.01)
        ahead = p.runners["A"].status()["reserved_ahead"]
        reserved_b = p.runners["B"].status()["reservations"]
        second = await x.enc_keys("Y", number=3)   # straight from the keys reserved ahead
        fetched = await y.dec_keys("X", [k.key_id for k in first + second])
        a = p.runners.pop("A")
        await a.close()                            # a clean stop: VOID for the 3 left
        reserved_after = p.runners["B"].status()["reservations"]
        await p.close()
        return first + second, ahead, reserved_b, fetched, reserved_after

    keys, ahead, reserved_b, fetched, reserved_after = asyncio.run(run())
    assert ahead == {"X -> Y": 6}
    assert reserved_b == [{"master_SAE_ID": "X", "slave_SAE_ID": "Y", "keys": 2 + 6}]
    assert [bytes(k.key) for k in fetched] == [bytes(k.key) for k in keys]
    assert reserved_after == []                    # the 3 never handed out: voided at B
    assert not {k for k, s in b_store.key_states("L").items() if s == "reserved"}


def test_after_a_crash_keys_reserved_ahead_stay_reserved_until_their_ttl(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store, reserve_ahead=4, reservation_ttl_s=600.0)
        await p.start()
        x = p.client("A", "X")
        keys = await x.enc_keys("Y", number=1)
        for _ in range(100):
            if p.runners["A"].status()["reserved_ahead"].get("X -> Y") == 4:
                break
            await asyncio.sleep(0.01)
        a = p.runners.pop("A")                      # kill: no close, nothing voided
        for t in a._timers:
            t.cancel()
        await a.server.stop()
        await p.close()
        return keys

    keys = asyncio.run(run())
    reserved = {k for k, s in b_store.key_states("L").items() if s == "reserved"}
    assert len(reserved) == 5 and keys[0].key_id in reserved
    a_store.void_open_leases()                     # what A's restart does
    for kid in reserved:                           # never deliverable at A again
        assert kid not in a_store.key_states("L")
    assert b_store.expire(now_ns=time.time_ns() + int(601e9)) >= 5
    assert not {k for k, s in b_store.key_states("L").items() if s == "reserved"}


def test_a_key_of_several_units_between_two_runners_over_curve(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store, max_key_size=4 * KEY_BITS)
        await p.start()
        try:
            x, y = p.client("A", "X"), p.client("B", "Y")
            st = await x.status("Y")
            keys = await x.enc_keys("Y", number=2, size=3 * KEY_BITS)
            fetched = await y.dec_keys("X", [k.key_id for k in keys])
            refusals = []
            for size in (KEY_BITS + 8, 5 * KEY_BITS):
                try:
                    await x.enc_keys("Y", number=1, size=size)
                except KeyServiceError as exc:
                    refusals.append((exc.status, exc.message))
            await asyncio.sleep(0.2)          # a settle tick
            return st, keys, fetched, refusals
        finally:
            await p.close()

    st, keys, fetched, refusals = asyncio.run(run())
    assert (st["min_key_size"], st["key_size"], st["max_key_size"]) == \
        (KEY_BITS, KEY_BITS, 4 * KEY_BITS)
    assert [len(k.key) for k in keys] == [3 * KEY_BITS // 8] * 2
    assert [(k.key_id, bytes(k.key)) for k in keys] == \
        [(k.key_id, bytes(k.key)) for k in fetched]
    assert [s for s, _ in refusals] == [400, 400]
    assert "key unit" in refusals[0][1] and "max_key_size" in refusals[1][1]
    # 6 units gone at both ends: A issued them, B delivered them
    assert len(a_store.key_states("L")) == len(b_store.key_states("L")) == 64 - 6


def test_a_max_key_size_that_is_not_whole_units_is_refused_at_start(tmp_path):
    a_store, b_store = make_stores(tmp_path)

    async def run():
        p = Pair(a_store, b_store, max_key_size=KEY_BITS + 8)
        try:
            await p.start(names=("A",))
        finally:
            for r in p.runners.values():
                if r.server is not None:
                    await r.close()
            p.ctx.term()

    with pytest.raises(ValueError, match="max_key_size = 264: expected a multiple of"):
        asyncio.run(run())

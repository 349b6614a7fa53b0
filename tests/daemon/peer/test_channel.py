"""The peer channel on loopback: authenticated delivery, forged and replayed frames rejected and
reported, CurveZMQ refusing unpinned keys, reconnection after a peer restart or a network drop,
backpressure, and the delay proxy."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import zmq

from daemon.peer import session as ss
from daemon.peer.channel import PeerChannelError
from daemon.peer.envelope import Envelope
from tests.daemon.peer.helpers import (Keys, channel, channel_pair, drain_events, free_port,
                                       make_pools, next_event_of, start_echo_peer)
from tests.daemon.peer_proxy import PeerProxy


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_messages_flow_both_ways_in_order(tmp_path):
    async def body():
        async with channel_pair(tmp_path) as (a, b, _):
            seqs = [await a.send(1, 10, i, 1, b"a%d" % i) for i in range(20)]
            assert seqs == sorted(seqs)
            got = [await b.recv() for _ in range(20)]
            assert [e.payload for e in got] == [b"a%d" % i for i in range(20)]
            assert [e.seq for e in got] == seqs
            assert all((e.link_id, e.block_id, e.msg_type) == (1, 10, 1) for e in got)
            await b.send(1, 10, 99, 2, b"reply")
            env = await a.recv()
            assert isinstance(env, Envelope) and (env.step, env.payload) == (99, b"reply")
            assert a.auth_bits_used(10) == b.auth_bits_used(10) == 21 * 64
            assert a.status()["sent"] == 20 and a.status()["rejected"] == {}
            kinds = [e.kind for e in drain_events(b)]
            assert ss.EVENT_CONNECTED in kinds and ss.EVENT_PEER_HELLO in kinds
            with pytest.raises(PeerChannelError, match="link id 2 sent on the channel of link 1"):
                await a.send(2, 10, 0, 1, b"")
    run(body())


def test_forged_replayed_reordered_and_foreign_frames_are_rejected_and_reported(tmp_path):
    async def body():
        async with channel_pair(tmp_path) as (a, b, _):
            drain_events(b)
            good = a.session.encode(5, 0, 1, b"genuine")
            await a._send_frame(good)
            assert (await b.recv()).payload == b"genuine"
            forged = bytearray(a.session.encode(5, 1, 1, b"parities"))
            forged[40] ^= 0x04                                     # tampered payload
            await a._send_frame(bytes(forged))
            await a._send_frame(good)                              # replay
            f1, f2 = a.session.encode(5, 2, 1, b"first"), a.session.encode(5, 3, 1, b"second")
            await a._send_frame(f2)                                # reordered
            await a._send_frame(f1)
            await a._send_frame(a.session.encode(5, 4, 1, b"x", link_id=9))   # foreign link
            await a.send(1, 5, 5, 1, b"after")
            assert (await b.recv()).payload == b"second"
            assert (await b.recv()).payload == b"after"
            events = [e for e in drain_events(b)
                      if e.kind not in (ss.EVENT_CONNECTED, ss.EVENT_PEER_HELLO)]
            kinds = [e.kind for e in events]
            # seq 2 forged, 1 replayed, 4 before 3 (a gap over the forged 2 and the late 3),
            # the third rejection raises the alarm, 5 from another link
            assert kinds == [ss.REJECT_BAD_TAG, ss.REJECT_REPLAY, ss.EVENT_SEQ_GAP,
                             ss.REJECT_REPLAY, ss.EVENT_ALARM, ss.REJECT_FOREIGN_LINK]
            assert all(e.block_id == 5 for e in events if e.is_rejection)
            assert b.alarm and b.status()["rejected"] == {"bad_tag": 1, "replay": 2,
                                                          "foreign_link": 1}
            assert b._inbox.empty()                                # nothing else delivered
    run(body())


def test_unpinned_client_key_is_refused_and_seen_by_the_monitor(tmp_path):
    async def body():
        pa, pb = make_pools(tmp_path)
        keys, intruder = Keys(), zmq.curve_keypair()
        a = channel(pa, keys.alice, keys.bob[0], "bind", "tcp://127.0.0.1:*")
        await a.start()
        b = channel(pb, intruder, keys.alice[0], "connect", a.bound_endpoint)
        await b.start()
        try:
            e = await next_event_of(a, ss.EVENT_HANDSHAKE_FAILED)
            assert "ZAP" in e.detail
            await next_event_of(b, ss.EVENT_HANDSHAKE_FAILED)
            with pytest.raises(asyncio.TimeoutError):
                await a.wait_connected(0.5)
            assert not b.connected and a._inbox.empty()
        finally:
            await b.close()
            await a.close()
    run(body())


def test_wrong_server_key_fails_the_handshake_within_a_timeout(tmp_path):
    async def body():
        pa, pb = make_pools(tmp_path)
        keys = Keys()
        a = channel(pa, keys.alice, keys.bob[0], "bind", "tcp://127.0.0.1:*")
        await a.start()
        b = channel(pb, keys.bob, zmq.curve_keypair()[0], "connect", a.bound_endpoint)
        await b.start()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await b.wait_connected(1.0)
            assert b.handshakes_failed > 0 and a.handshakes_failed > 0
            assert a.alarm and b.alarm              # repeated refusals: alarm at both ends
        finally:
            await b.close()
            await a.close()
    run(body())


@pytest.mark.slow
def test_reconnects_after_the_peer_process_is_killed_and_restarted(tmp_path):
    """Bob (the binding side) runs in its own process and echoes; we kill -9 it and start it
    again on the same port; Alice reconnects on her own and learns that Bob restarted."""
    async def body():
        pa, pb = make_pools(tmp_path)
        pb.close()
        keys = Keys()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        proc, _ = start_echo_peer(tmp_path / "bob", "bob", "bind", endpoint, keys.bob,
                                  keys.alice[0])
        a = channel(pa, keys.alice, keys.bob[0], "connect", endpoint)
        await a.start()
        try:
            await a.wait_connected(10)
            await a.send(1, 1, 0, 1, b"before")
            assert (await asyncio.wait_for(a.recv(), 10)).payload == b"before"
            await next_event_of(a, ss.EVENT_PEER_HELLO)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            await next_event_of(a, ss.EVENT_DISCONNECTED)
            proc, _ = start_echo_peer(tmp_path / "bob", "bob", "bind", endpoint, keys.bob,
                                      keys.alice[0])
            e = await next_event_of(a, ss.EVENT_PEER_HELLO, timeout=15)
            assert e.detail == "peer restarted"
            await a.send(1, 2, 0, 1, b"after")
            assert (await asyncio.wait_for(a.recv(), 10)).payload == b"after"
            assert not a.alarm
        finally:
            await a.close()
            proc.kill()
            proc.wait()
            pa.close()
    run(body())


def test_delay_proxy_adds_round_trip_time(tmp_path):
    async def body():
        async with channel_pair(tmp_path, proxy_factory=PeerProxy) as (a, b, proxy):
            await a.send(1, 1, 0, 1, b"warm")
            await b.recv()
            proxy.delay_s = 0.025                         # one way: 50 ms round trip
            t0 = time.monotonic()
            await a.send(1, 1, 1, 1, b"ping")
            await b.recv()
            await b.send(1, 1, 2, 1, b"pong")
            await a.recv()
            rtt = time.monotonic() - t0
            assert 0.05 <= rtt < 1.0
            # pipelined: 50 messages in flight take about one trip, not fifty
            t0 = time.monotonic()
            for i in range(50):
                await a.send(1, 1, 3, 1, b"x")
            for i in range(50):
                await b.recv()
            assert time.monotonic() - t0 < 0.025 * 10
    run(body())


def test_network_drop_and_outage_recover_without_operator(tmp_path):
    async def body():
        async with channel_pair(tmp_path, proxy_factory=PeerProxy) as (a, b, proxy):
            drain_events(a)
            proxy.drop_connections()
            await next_event_of(a, ss.EVENT_DISCONNECTED)
            e = await next_event_of(a, ss.EVENT_PEER_HELLO)
            assert e.detail == "peer reconnected, same process"
            await b.send(1, 3, 0, 1, b"again")
            assert (await asyncio.wait_for(a.recv(), 5)).payload == b"again"
            drain_events(b)       # b's events of the first drop: the wait below is for the outage
            proxy.unplug()
            await next_event_of(b, ss.EVENT_DISCONNECTED)
            send = asyncio.create_task(b.send(1, 4, 0, 1, b"queued while down"))
            await asyncio.sleep(0.3)
            proxy.replug()
            await send
            await next_event_of(a, ss.EVENT_PEER_HELLO, timeout=10)
            env = await asyncio.wait_for(a.recv(), 10)
            assert env.payload == b"queued while down"
            assert not a.alarm and not b.alarm
    run(body())


def test_a_send_waiting_for_a_peer_that_never_came_ends_when_the_channel_closes(tmp_path):
    """No peer: the send waits for the hello of a connection; closing the channel ends that
    wait with a clear error instead of leaving the sender hanging."""
    async def body():
        pa, pb = make_pools(tmp_path)
        keys = Keys()
        a = channel(pa, keys.alice, keys.bob[0], "connect", f"tcp://127.0.0.1:{free_port()}")
        await a.start()
        try:
            send = asyncio.create_task(a.send(1, 1, 0, 1, b"to nobody"))
            await asyncio.sleep(0.3)
            assert not send.done()
        finally:
            await a.close()
        with pytest.raises(PeerChannelError, match="not running"):
            await asyncio.wait_for(send, 5)
        pa.close()
        pb.close()
    run(body())


@pytest.mark.parametrize("fault", ["tamper_next", "replay_next"])
def test_tampering_below_curve_breaks_the_connection_which_recovers(tmp_path, fault):
    """Bytes altered or replayed on the wire never reach the envelope layer: CurveZMQ's
    authenticated encryption drops the connection; the link reconnects and goes on."""
    async def body():
        async with channel_pair(tmp_path, proxy_factory=PeerProxy) as (a, b, proxy):
            drain_events(b)
            getattr(proxy, fault)("to_server")
            await a.send(1, 1, 0, 1, b"damaged on the wire" * 10)
            await next_event_of(b, ss.EVENT_DISCONNECTED)
            await next_event_of(b, ss.EVENT_PEER_HELLO)
            await a.send(1, 1, 1, 1, b"intact")
            env = await asyncio.wait_for(b.recv(), 5)
            if env.payload != b"intact":             # a replayed chunk may arrive before the
                assert env.payload == b"damaged on the wire" * 10      # cut, never twice
                env = await asyncio.wait_for(b.recv(), 5)
            assert env.payload == b"intact"
            assert b.status()["rejected"] == {}
    run(body())


@pytest.mark.slow
def test_backpressure_blocks_the_sender_when_the_receiver_does_not_read(tmp_path):
    async def body():
        # a stall longer than the heartbeat timeout would count as a dead link: not here
        small = dict(inbox_size=4, hwm=4, heartbeat_timeout_s=20.0)
        async with channel_pair(tmp_path, alice_kw=small, bob_kw=small) as (a, b, _):
            payload = os.urandom(256 * 1024)
            sent = 0

            async def pump():
                nonlocal sent
                for _ in range(120):                      # 30 MiB if nothing pushed back
                    await a.send(1, 1, 0, 1, payload)
                    sent += 1
            task = asyncio.create_task(pump())
            await asyncio.sleep(1.0)
            assert not task.done()
            stalled_at = sent
            assert stalled_at < 100                       # bounded by queues + socket buffers
            for _ in range(120):
                env = await asyncio.wait_for(b.recv(), 10)
                assert env.payload == payload
            await task
            assert sent == 120 > stalled_at
            assert b.status()["rejected"] == {} and a.connections == 1
    run(body())

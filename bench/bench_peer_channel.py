"""Peer channel: throughput and round trips through the authenticated channel, against bare
pyzmq CURVE sockets measured in the same run.

Both ends run in this one process (one asyncio loop for the channels; threads for the bare
sockets), on loopback, so every figure includes both nodes' work on a shared core. Delay is
injected by the test proxy (one way = half the round trip). Figures:
- ``tag``: Wegman-Carter tag of one message (µs) and the sans-I/O encode + receive of a frame.
- ``stream``: one-way messages/s and MB/s, bare CURVE vs authenticated channel.
- ``rtt``: one request/reply round trip at 0, 1 and 10 ms injected RTT, bare vs channel.
- ``pipeline``: request/reply throughput with W messages in flight at each RTT; with W large
  enough it stays flat as the RTT grows (what Cascade's many frames in flight rely on).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import zmq

from bench.common import emit, progress
from daemon.peer import envelope as ev
from daemon.peer.session import PeerSession
from tests.daemon.peer.helpers import channel_pair, make_pools
from tests.daemon.peer_proxy import PeerProxy

BENCH = "peer_channel"
SIZES = (64, 1024, 65536)
RTTS_MS = (0, 1, 10)
WINDOWS = (1, 16, 256)
# production heartbeats: a receiver that falls behind must not look like a dead link here
STEADY = dict(heartbeat_timeout_s=10.0)


def _mb(n_msgs: int, size: int, dt: float) -> float:
    return n_msgs * size / dt / 1e6


# -- tag cost --------------------------------------------------------------------------------------

def bench_tag() -> None:
    with tempfile.TemporaryDirectory() as d:
        pa, pb = make_pools(Path(d), 1 << 24, chunk_messages=1 << 16)
        sa, sb = PeerSession(pa, 1), PeerSession(pb, 1)
        for size in SIZES:
            payload = bytes(size)
            body = ev.authenticated_bytes(ev.Envelope(1, 1, 0, 1, 0, payload))
            ev.compute_tag(body, 12345, 0)
            n = max(200, 200_000 // max(size // 64, 1))
            t0 = time.perf_counter()
            for _ in range(n):
                ev.compute_tag(body, 12345, 0)
            tag_us = (time.perf_counter() - t0) / n * 1e6
            m = min(n, 20_000)
            t0 = time.perf_counter()
            frames = [sa.encode(1, 0, 1, payload) for _ in range(m)]
            t1 = time.perf_counter()
            for f in frames:
                sb.receive(f)
            t2 = time.perf_counter()
            emit(BENCH, figure="tag", payload_bytes=size, tag_us=round(tag_us, 2),
                 encode_us=round((t1 - t0) / m * 1e6, 2),
                 receive_us=round((t2 - t1) / m * 1e6, 2),
                 forgery_bound_log2=round(
                     __import__("math").log2(ev.hashed_word_count(size)) - 64, 1))
        pa.close()
        pb.close()


# -- bare pyzmq CURVE baseline ---------------------------------------------------------------------

class BarePair:
    """Two DEALER sockets with CURVE, no ZAP, no envelope: what pyzmq alone does."""

    def __init__(self, proxy_delay_s: float | None = None):
        self.ctx = zmq.Context()
        spub, ssec = zmq.curve_keypair()
        cpub, csec = zmq.curve_keypair()
        self.server = self.ctx.socket(zmq.DEALER)
        self.server.curve_secretkey, self.server.curve_publickey = ssec, spub
        self.server.curve_server = True
        self.server.linger = 0
        port = self.server.bind_to_random_port("tcp://127.0.0.1")
        self.proxy = None
        if proxy_delay_s is not None:
            self.proxy = PeerProxy(port)
            self.proxy.delay_s = proxy_delay_s
            port = self.proxy.port
        self.client = self.ctx.socket(zmq.DEALER)
        self.client.curve_secretkey, self.client.curve_publickey = csec, cpub
        self.client.curve_serverkey = spub
        self.client.linger = 0
        self.client.connect(f"tcp://127.0.0.1:{port}")
        self.client.send(b"hi")
        self.server.recv()

    def echo_thread(self, n: int) -> threading.Thread:
        def run():
            for _ in range(n):
                self.server.send(self.server.recv(copy=False), copy=False)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self):
        if self.proxy:
            self.proxy.close()
        self.client.close()
        self.server.close()
        self.ctx.term()


def bare_stream(size: int, n: int) -> float:
    pair = BarePair()
    payload = bytes(size)

    def send():
        for _ in range(n):
            pair.client.send(payload, copy=False)
    t0 = time.perf_counter()
    threading.Thread(target=send, daemon=True).start()
    for _ in range(n):
        pair.server.recv(copy=False)
    dt = time.perf_counter() - t0
    pair.close()
    return dt


def bare_rtt(delay_s: float, n: int) -> float:
    pair = BarePair(delay_s if delay_s else None)
    t = pair.echo_thread(n + 1)
    pair.client.send(b"warm")
    pair.client.recv()
    t0 = time.perf_counter()
    for _ in range(n):
        pair.client.send(b"x" * 64)
        pair.client.recv()
    dt = (time.perf_counter() - t0) / n
    t.join()
    pair.close()
    return dt


# -- the authenticated channel -----------------------------------------------------------------------

async def channel_stream(size: int, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with channel_pair(Path(d), pool_bytes=1 << 24,
                                alice_kw=STEADY, bob_kw=STEADY) as (a, b, _):
            payload = bytes(size)
            await a.send(1, 0, 0, 1, b"warm")
            await b.recv()

            async def send():
                for _ in range(n):
                    await a.send(1, 0, 0, 1, payload)
            t0 = time.perf_counter()
            task = asyncio.create_task(send())
            for _ in range(n):
                await b.recv()
            dt = time.perf_counter() - t0
            await task
            return dt


async def channel_pipeline(delay_s: float, window: int, n: int) -> tuple[float, float]:
    """Seconds per reply with ``window`` requests in flight, and the mean round trip."""
    with tempfile.TemporaryDirectory() as d:
        factory = PeerProxy if delay_s else None
        async with channel_pair(Path(d), proxy_factory=factory, pool_bytes=1 << 24,
                                alice_kw=STEADY, bob_kw=STEADY) as (a, b, p):
            async def echo():
                while True:
                    env = await b.recv()
                    await b.send(1, env.block_id, env.step, env.msg_type, env.payload)
            echo_task = asyncio.create_task(echo())
            await a.send(1, 0, 0, 1, b"warm")
            await a.recv()
            if p:
                p.delay_s = delay_s
            payload = bytes(64)
            sent_at: dict[int, float] = {}
            rtts = []
            t0 = time.perf_counter()
            for i in range(min(window, n)):
                sent_at[i] = time.perf_counter()
                await a.send(1, i, 0, 1, payload)
            nxt = min(window, n)
            for _ in range(n):
                env = await a.recv()
                rtts.append(time.perf_counter() - sent_at.pop(env.block_id))
                if nxt < n:
                    sent_at[nxt] = time.perf_counter()
                    await a.send(1, nxt, 0, 1, payload)
                    nxt += 1
            dt = time.perf_counter() - t0
            echo_task.cancel()
            return dt / n, sum(rtts) / len(rtts)


def main() -> None:
    progress("peer channel: tag cost")
    bench_tag()
    progress("peer channel: one-way streams")
    for size in SIZES:
        n = 20_000 if size <= 1024 else 1_500
        bare = bare_stream(size, n)
        chan = asyncio.run(asyncio.wait_for(channel_stream(size, n), 120))
        emit(BENCH, figure="stream", payload_bytes=size, messages=n,
             bare_curve_msgs_per_s=round(n / bare), bare_curve_MB_per_s=round(_mb(n, size, bare), 1),
             channel_msgs_per_s=round(n / chan), channel_MB_per_s=round(_mb(n, size, chan), 1),
             channel_vs_bare=round(bare / chan, 2))
    progress("peer channel: round trips and pipelining through the delay proxy")
    for rtt_ms in RTTS_MS:
        delay = rtt_ms / 2000
        n_rtt = 300 if rtt_ms < 10 else 60
        bare = bare_rtt(delay, n_rtt)
        one, chan_rtt = asyncio.run(asyncio.wait_for(channel_pipeline(delay, 1, n_rtt), 120))
        emit(BENCH, figure="rtt", injected_rtt_ms=rtt_ms, bare_curve_rtt_ms=round(bare * 1e3, 3),
             channel_rtt_ms=round(chan_rtt * 1e3, 3))
        for window in WINDOWS:
            n = max(n_rtt, 20 * window) if window > 1 else n_rtt
            per_reply, mean_rtt = asyncio.run(asyncio.wait_for(channel_pipeline(delay, window, n), 120))
            emit(BENCH, figure="pipeline", injected_rtt_ms=rtt_ms, in_flight=window,
                 replies_per_s=round(1 / per_reply), mean_rtt_ms=round(mean_rtt * 1e3, 2),
                 bare_one_in_flight_per_s=round(1 / bare))


if __name__ == "__main__":
    main()

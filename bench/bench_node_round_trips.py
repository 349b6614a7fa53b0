"""Reconciliation alone through the real peer channel at 0, 1 and 10 ms round-trip time.

Issue 8 §7 "round trips": the node's source (the simulator) bounds ``bench_node``'s delay-line
figures, so here the source is taken away. Keys: PRE-GENERATED in this process (numpy, bench
only): ``PAIRS`` pairs of ``BLOCK_BITS`` bits whose copies differ at 2 % of the positions
(independent flips), standing in for the sifted key of a block after estimation.

Channel: two real ``PeerChannel`` ends (CurveZMQ, ZAP-pinned keys, Wegman-Carter envelope with
its sequence numbers) in this process, Bob connecting through ``PeerProxy`` (a TCP delay line
below CurveZMQ, half the round trip each way). Over it, Bob and Alice run the block roles'
reconciliation step as the link engine does: Cascade's two roles (``CascadeBob`` /
``CascadeAlice``) on the block cut into frames by the block roles' own ``_split_frames``, one
asyncio task per block with its own inbox, the numba work in a thread pool, up to ``blocks``
blocks at once (``policy.blocks_in_flight``). Both nodes' work shares this process and the
machine's cores.

Figures per (RTT, frame_bits, blocks in flight): sifted Mbit/s reconciled (block bits over wall
time from the first block's start to the last block's end), round trips per block, frames in
flight (frames per block x blocks), peak memory of the process during the setting (VmHWM,
reset before each setting) and ``ratio`` = that rate over the baseline. Baseline, same run:
the same blocks reconciled in this process through encoded messages without any channel, one
block after the other on one thread (``inprocess``), and one block per worker in ``blocks``
threads (``inprocess_parallel``: what the CPU alone allows at that concurrency).

``python -m bench.bench_node_round_trips [BLOCKS_PER_SETTING]`` (default 2 waves of blocks per
setting; about 2 minutes).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import emit, progress
from postprocessing.block.params import DEFAULT_FRAME_BITS
from postprocessing.block.roles import _split_frames
from postprocessing.reconciliation import (CascadeAlice, CascadeBob, CascadeSetup, ParityReply,
                                           ParityRequest)
from postprocessing.block.messages import MessageType as M
from tests.daemon.peer.helpers import channel_pair
from tests.daemon.peer_proxy import PeerProxy

BENCH = "node_round_trips"
BLOCK_BITS = 1 << 21          # ~2.1 Mbit of sifted key per block
QBER = 0.02
PAIRS = 3
RTTS_MS = (0.0, 1.0, 10.0)
SCHEDULE = "yan"
# (frame_bits, blocks in flight): the daemon before this benchmark (one frame per block, the
# demo's 2 blocks) and after (frames of DEFAULT_FRAME_BITS, 8 blocks)
SETTINGS = ((None, 2), (DEFAULT_FRAME_BITS, 8))
POOL_BYTES = 1 << 24          # Wegman-Carter bootstrap: far more tags than a run spends
WORKERS = 2


def key_pairs(n_pairs: int, n_bits: int, qber: float, seed: int = 8) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_pairs):
        a = rng.integers(0, 2, n_bits, dtype=np.uint8)
        out.append((a, a ^ (rng.random(n_bits) < qber).astype(np.uint8)))
    return out


def _frames(bits: np.ndarray, frame_bits) -> list[np.ndarray]:
    return _split_frames(bits.copy(), frame_bits, SCHEDULE, QBER)


def reconcile_in_process(pair, frame_bits, seed: int) -> int:
    """One block through encoded messages, no channel; returns its round trips."""
    a, b = pair
    bob = CascadeBob(_frames(b, frame_bits), QBER, SCHEDULE, seed=seed)
    alice = CascadeAlice(_frames(a, frame_bits))
    alice.handle_setup(CascadeSetup.from_bytes(bob.setup().to_bytes()))
    req, rounds = bob.start(), 0
    while req is not None:
        rounds += 1
        reply = alice.handle_request(ParityRequest.from_bytes(req.to_bytes()))
        req = bob.handle_reply(ParityReply.from_bytes(reply.to_bytes()))
    return rounds


def baseline(pairs, frame_bits, n_blocks: int, threads: int) -> float:
    reconcile_in_process(pairs[0], frame_bits, 1)          # warm the kernels and buffers
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: reconcile_in_process(pairs[i % len(pairs)], frame_bits, i + 2),
                      range(n_blocks)))
    return n_blocks * BLOCK_BITS / (time.perf_counter() - t0) / 1e6


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Side:
    """One node's end: a reader task routing envelopes to per-block inboxes (as the engine)."""

    def __init__(self, channel, pool):
        self.channel, self.pool = channel, pool
        self.inboxes: dict[int, asyncio.Queue] = {}
        self.on_new = None            # Alice: first message of an unknown block opens it

    async def read(self) -> None:
        while True:
            env = await self.channel.recv()
            box = self.inboxes.get(env.block_id)
            if box is None and self.on_new is not None:
                box = self.inboxes[env.block_id] = asyncio.Queue()
                self.on_new(env.block_id, box)
            if box is not None:
                box.put_nowait(env)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


async def _bob_block(side: _Side, block_id: int, pair, frame_bits, rounds: list) -> None:
    box = side.inboxes[block_id] = asyncio.Queue()
    step = 0

    async def send(t, payload):
        nonlocal step
        step += 1
        await side.channel.send(1, block_id, step, int(t), payload)

    def open_block():
        bob = CascadeBob(_frames(pair[1], frame_bits), QBER, SCHEDULE, seed=block_id)
        return bob, bob.setup().to_bytes(), bob.start().to_bytes()

    bob, setup, first = await side.run(open_block)
    # the pair's index travels in the block id (the stand-in for sifting's shared positions)
    await send(M.CASCADE_SETUP, setup)
    await send(M.PARITY_REQUEST, first)
    n = 1
    while True:
        env = await box.get()
        nxt = await side.run(lambda p: bob.handle_reply(ParityReply.from_bytes(p)), env.payload)
        if nxt is None:
            break
        n += 1
        await send(M.PARITY_REQUEST, await side.run(nxt.to_bytes))
    side.inboxes.pop(block_id)
    rounds.append(n)


async def _alice_block(side: _Side, block_id: int, box: asyncio.Queue, pairs, frame_bits
                       ) -> None:
    pair = pairs[block_id % len(pairs)]
    alice = CascadeAlice(await side.run(_frames, pair[0], frame_bits))
    step = 0
    while True:
        env = await box.get()
        if env.msg_type == M.CASCADE_SETUP:
            await side.run(lambda p: alice.handle_setup(CascadeSetup.from_bytes(p)), env.payload)
            continue
        if env.msg_type != M.PARITY_REQUEST:
            break
        reply = await side.run(
            lambda p: alice.handle_request(ParityRequest.from_bytes(p)).to_bytes(), env.payload)
        step += 1
        await side.channel.send(1, block_id, step, int(M.PARITY_REPLY), reply)


async def through_channel(pairs, rtt_ms: float, frame_bits, blocks: int, n_blocks: int
                          ) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-rtt-") as d:
        def proxy(port):
            p = PeerProxy(port)
            p.delay_s = rtt_ms / 2000
            return p
        pools = [ThreadPoolExecutor(WORKERS, thread_name_prefix=n) for n in ("alice", "bob")]
        async with channel_pair(Path(d), proxy_factory=proxy, pool_bytes=POOL_BYTES,
                                alice_kw=dict(heartbeat_timeout_s=10.0),
                                bob_kw=dict(heartbeat_timeout_s=10.0)) as (ca, cb, _):
            alice, bob = _Side(ca, pools[0]), _Side(cb, pools[1])
            alice_tasks = []
            alice.on_new = lambda bid, box: alice_tasks.append(asyncio.create_task(
                _alice_block(alice, bid, box, pairs, frame_bits)))
            readers = [asyncio.create_task(s.read()) for s in (alice, bob)]
            slots = asyncio.Semaphore(blocks)
            rounds: list[int] = []
            peak_live = 0

            async def one(i):
                nonlocal peak_live
                async with slots:
                    peak_live = max(peak_live, blocks - slots._value)
                    await _bob_block(bob, i, pairs[i % len(pairs)], frame_bits, rounds)

            reset_peak_rss()
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(1, n_blocks + 1)))
            dt = time.perf_counter() - t0
            peak = peak_rss_mb()
            for t in readers + alice_tasks:
                t.cancel()
            await asyncio.gather(*readers, *alice_tasks, return_exceptions=True)
            sent = cb.session.sent + ca.session.sent
        for p in pools:
            p.shutdown()
    n_frames = len(_split_frames(pairs[0][1], frame_bits, SCHEDULE, QBER))
    return {"blocks": n_blocks, "seconds": round(dt, 2),
            "sifted_mbit_s": round(n_blocks * BLOCK_BITS / dt / 1e6, 2),
            "round_trips_per_block": round(float(np.mean(rounds)), 1),
            "blocks_in_flight": peak_live, "frames_per_block": n_frames,
            "frames_in_flight": peak_live * n_frames, "messages": sent,
            "peak_rss_mb": round(peak, 1)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    waves = int(argv[0]) if argv else 2
    progress(f"pre-generating {PAIRS} key pairs of {BLOCK_BITS} bits at QBER {QBER:g}")
    pairs = key_pairs(PAIRS, BLOCK_BITS, QBER)
    for frame_bits, blocks in SETTINGS:
        n_blocks = waves * blocks
        progress(f"in-process baseline, frame_bits={frame_bits}, {n_blocks} blocks")
        base = {"inprocess": round(baseline(pairs, frame_bits, n_blocks, 1), 2),
                "inprocess_parallel": round(baseline(pairs, frame_bits, n_blocks,
                                                     min(blocks, os.cpu_count() or 1)), 2)}
        for rtt_ms in RTTS_MS:
            progress(f"channel, {rtt_ms:g} ms RTT, frame_bits={frame_bits}, {blocks} in flight")
            r = asyncio.run(through_channel(pairs, rtt_ms, frame_bits, blocks, n_blocks))
            emit(BENCH, figure="reconciliation", rtt_ms=rtt_ms, frame_bits=frame_bits,
                 block_bits=BLOCK_BITS, qber=QBER, schedule=SCHEDULE, **r,
                 baseline_mbit_s=base,
                 baseline_what="same blocks, encoded messages, no channel, in this process",
                 ratio=round(r["sifted_mbit_s"] / base["inprocess"], 3),
                 target="sifted >= 20 Mbit/s at 1 ms")


if __name__ == "__main__":
    main()

"""Reconciliation alone through the real peer channel at 0, 1 and 10 ms round-trip time.

Issue 8 §7 "round trips": the node's source (the simulator) bounds ``bench_node``'s delay-line
figures, so here the source is taken away. Keys: PRE-GENERATED in this process (numpy, bench
only): ``PAIRS`` pairs of ``BLOCK_BITS`` bits (in the last setting ``NODE_BLOCK_BITS``, what
a node block at 10 km reconciles) whose copies differ at 2 % of the positions (independent
flips), standing in for the sifted key of a block after estimation.

Channel: two real ``PeerChannel`` ends (CurveZMQ, ZAP-pinned keys, Wegman-Carter envelope with
its sequence numbers): Alice's in a process of her own, Bob's in this one, and between them
``PeerProxy`` (a TCP delay line below CurveZMQ, half the round trip each way) in a third, so
no end shares an interpreter lock with another. Over it, Bob and Alice run the block roles'
reconciliation step as the link engine does: Cascade's two roles (``CascadeBob`` /
``CascadeAlice``) on the block cut into frames by the block roles' own ``_split_frames``, one
asyncio task per block with its own inbox, the numba work in a thread pool (one hop per
message, except Alice's answers to small requests, which run on the loop as the engine runs
every step ``is_light_step`` calls light), up to ``blocks`` blocks at once
(``policy.blocks_in_flight``). The block id names the key pair (the stand-in for what sifting makes common). All three processes share the
machine's cores.

Figures per (RTT, frame_bits, blocks in flight): sifted Mbit/s reconciled (block bits over wall
time from the first block's start to the last block's end), round trips per block, frames in
flight (frames per block x blocks), ``ms_per_round_trip`` (wall time per round of one block),
CPU seconds per second of each end, Bob's peak memory during the setting (VmHWM, reset before
it) and Alice's over the whole setting, and ``ratio`` = that rate over the baseline.
Baseline, same run: the same blocks reconciled in this process through encoded messages
without any channel, one block after the other on one thread (``inprocess``), and one block
per worker in up to 2 threads (``inprocess_parallel``).

``python -m bench.bench_node_round_trips [WAVES]`` (blocks per setting = WAVES x blocks in
flight, default 2; about 4 minutes on a loaded machine).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import cpu_seconds, emit, peak_rss_mb, progress
from postprocessing.block.params import DEFAULT_FRAME_BITS
from postprocessing.block.roles import _split_frames
from postprocessing.reconciliation import (CascadeAlice, CascadeBob, CascadeSetup, ParityReply,
                                           ParityRequest)
from postprocessing.block.messages import MessageType as M
from postprocessing.block.messages import is_light_step
from daemon.peer.auth_keys import AuthKeyPool, write_bootstrap
from tests.daemon.peer.helpers import Keys, channel
from tests.daemon.peer_proxy import PeerProxy

BENCH = "node_round_trips"
BLOCK_BITS = 1 << 21          # ~2.1 Mbit of sifted key per block
QBER = 0.02
PAIRS = 3
RTTS_MS = (0.0, 1.0, 10.0)
SCHEDULE = "yan"
# what a node block at 10 km (GYS, 2e9 pulses, decoy BB84) hands to reconciliation: its
# BlockStats.key_input_bits was 5 496 671 (half the 11.0 Mbit sifted goes to the sample)
NODE_BLOCK_BITS = 5_500_000
# (frame_bits, blocks in flight, block bits): the daemon before this benchmark (one frame per
# block, the demo's 2 blocks), after (frames of DEFAULT_FRAME_BITS, 8 blocks), and the
# node's own block size with its default 4 blocks in flight
SETTINGS = ((None, 2, BLOCK_BITS), (DEFAULT_FRAME_BITS, 8, BLOCK_BITS),
            (DEFAULT_FRAME_BITS, 4, NODE_BLOCK_BITS))
POOL_BYTES = 1 << 24          # Wegman-Carter bootstrap: far more tags than a run spends
WORKERS = 2
DEADLINE_S = 240.0            # per setting: a stalled block is an error, not a hang
# production heartbeats (a busy receiver must not look like a dead link)
STEADY = dict(heartbeat_s=1.0, heartbeat_timeout_s=10.0, reconnect_s=0.05,
              reconnect_max_s=1.0, handshake_timeout_s=5.0)


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
    block_bits = pairs[0][0].size
    reconcile_in_process(pairs[0], frame_bits, 1)          # warm the kernels and buffers
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: reconcile_in_process(pairs[i % len(pairs)], frame_bits, i + 2),
                      range(n_blocks)))
    return n_blocks * block_bits / (time.perf_counter() - t0) / 1e6


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


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

    async def step(self, env, fn):
        """``fn(payload)`` where the engine's ``_role_step`` would run it: on the loop for a
        light step (``is_light_step``), else in the pool."""
        if is_light_step(env.msg_type, len(env.payload)):
            return fn(env.payload)
        return await self.run(fn, env.payload)


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
    def on_reply(payload):  # one hop to the pool per message, as the engine's role.receive
        nxt = bob.handle_reply(ParityReply.from_bytes(payload))
        return None if nxt is None else nxt.to_bytes()

    while True:
        env = await box.get()
        nxt = await side.run(on_reply, env.payload)
        if nxt is None:
            break
        n += 1
        await send(M.PARITY_REQUEST, nxt)
    side.inboxes.pop(block_id)
    del bob
    # the engine's next message (verification) ends Alice's Cascade role and frees its state;
    # without it every block of hers would stay in memory and the next one fault in fresh pages
    await send(M.VERIFY_TAGS, b"")
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
            break               # VERIFY_TAGS: Cascade is over, as in the engine's _on_tags
        reply = await side.step(env, lambda p: alice.handle_request(
            ParityRequest.from_bytes(p)).to_bytes())
        step += 1
        await side.channel.send(1, block_id, step, int(M.PARITY_REPLY), reply)
    side.inboxes.pop(block_id, None)


def _alice_process(conn, directory: str, mine, bob_public: bytes, frame_bits,
                   block_bits: int) -> None:
    """Alice's node: binds, answers every block, reports her CPU and peak memory at the end."""
    asyncio.run(_alice_serve(conn, Path(directory), mine, bob_public, frame_bits, block_bits))


async def _alice_serve(conn, directory: Path, mine, bob_public: bytes, frame_bits,
                       block_bits: int) -> None:
    pairs = key_pairs(PAIRS, block_bits, QBER)
    pool = AuthKeyPool(directory / "alice", local_role="alice",
                       bootstrap=directory / "bootstrap.bin")
    ch = channel(pool, mine, bob_public, "bind", "tcp://127.0.0.1:*", **STEADY)
    await ch.start()
    workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="alice")
    side = _Side(ch, workers)
    tasks = []
    side.on_new = lambda bid, box: tasks.append(asyncio.create_task(
        _alice_block(side, bid, box, pairs, frame_bits)))
    reader = asyncio.create_task(side.read())
    conn.send(ch.bound_endpoint)
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)     # "stop"
    for t in [reader, *tasks]:
        t.cancel()
    await asyncio.gather(reader, *tasks, return_exceptions=True)
    await ch.close()
    pool.close()
    workers.shutdown()
    conn.send(peak_rss_mb())


def _proxy_process(conn, port: int) -> None:
    """The delay line: each message from the pipe is the new one-way delay, None ends it."""
    with PeerProxy(port) as proxy:
        conn.send(proxy.endpoint)
        while (delay_s := conn.recv()) is not None:
            proxy.delay_s = delay_s
            conn.send("ok")


async def through_channel(frame_bits, blocks: int, n_blocks: int,
                          block_bits: int = BLOCK_BITS) -> list[dict]:
    """Bob here, Alice and the delay line each in a process of its own (as two nodes and a
    network would be: no shared interpreter lock); one figure per RTT in ``RTTS_MS``."""
    ctx = mp.get_context("spawn")
    keys = Keys()
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-rtt-") as d:
        write_bootstrap(Path(d) / "bootstrap.bin", POOL_BYTES)
        a_conn, a_child = ctx.Pipe()
        alice = ctx.Process(target=_alice_process, args=(a_child, d, keys.alice, keys.bob[0],
                                                         frame_bits, block_bits), daemon=True)
        alice.start()
        p_conn, p_child = ctx.Pipe()
        proxy = None
        try:
            alice_endpoint = a_conn.recv()
            proxy = ctx.Process(target=_proxy_process, args=(
                p_child, int(alice_endpoint.rsplit(":", 1)[1])), daemon=True)
            proxy.start()
            endpoint = p_conn.recv()
            pairs = key_pairs(PAIRS, block_bits, QBER)
            pool = AuthKeyPool(Path(d) / "bob", local_role="bob",
                               bootstrap=Path(d) / "bootstrap.bin")
            cb = channel(pool, keys.bob, keys.alice[0], "connect", endpoint, **STEADY)
            await cb.start()
            await cb.wait_connected(30)
            workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="bob")
            bob = _Side(cb, workers)
            reader = asyncio.create_task(bob.read())
            next_id = 1
            async with asyncio.timeout(DEADLINE_S):
                # warm-up; Alice keys block i with pair i % PAIRS, and so must Bob (with
                # another pair the two keys differ at half the positions)
                await _bob_block(bob, next_id, pairs[next_id % len(pairs)], frame_bits, [])
            for rtt_ms in RTTS_MS:
                progress(f"channel, {rtt_ms:g} ms RTT, frame_bits={frame_bits}, "
                         f"{blocks} in flight")
                p_conn.send(rtt_ms / 2000)
                p_conn.recv()
                slots = asyncio.Semaphore(blocks)
                rounds: list[int] = []
                live = peak_live = 0

                async def one(i):
                    nonlocal live, peak_live
                    async with slots:
                        live += 1
                        peak_live = max(peak_live, live)
                        await _bob_block(bob, i, pairs[i % len(pairs)], frame_bits, rounds)
                        live -= 1

                ids = range(next_id + 1, next_id + 1 + n_blocks)
                next_id += n_blocks
                reset_peak_rss()
                cpu0 = {"alice": cpu_seconds(alice.pid), "bob": cpu_seconds(os.getpid())}
                t0 = time.perf_counter()
                async with asyncio.timeout(DEADLINE_S):       # fail loudly, never hang
                    await asyncio.gather(*(one(i) for i in ids))
                dt = time.perf_counter() - t0
                cpu = {"alice": round((cpu_seconds(alice.pid) - cpu0["alice"]) / dt, 2),
                       "bob": round((cpu_seconds(os.getpid()) - cpu0["bob"]) / dt, 2)}
                n_frames = len(_split_frames(pairs[0][1], frame_bits, SCHEDULE, QBER))
                waves = n_blocks / blocks
                out.append({"rtt_ms": rtt_ms, "blocks": n_blocks, "seconds": round(dt, 2),
                            "sifted_mbit_s": round(n_blocks * block_bits / dt / 1e6, 2),
                            "round_trips_per_block": round(float(np.mean(rounds)), 1),
                            "ms_per_round_trip": round(dt * 1000 / (np.mean(rounds) * waves),
                                                       2),
                            "blocks_in_flight": peak_live, "frames_per_block": n_frames,
                            "frames_in_flight": peak_live * n_frames, "cpu_s_per_s": cpu,
                            "peak_rss_mb_bob": round(peak_rss_mb(), 1)})
            a_conn.send("stop")
            alice_peak = a_conn.recv()
            for r in out:
                r["peak_rss_mb_alice_whole_run"] = round(alice_peak, 1)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await cb.close()
            pool.close()
            workers.shutdown()
        finally:
            if proxy is not None and proxy.is_alive():
                p_conn.send(None)
            for proc in (proxy, alice):
                if proc is not None:
                    proc.join(10)
                    if proc.is_alive():
                        proc.kill()
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    waves = int(argv[0]) if argv else 2
    for frame_bits, blocks, block_bits in SETTINGS:
        progress(f"pre-generating {PAIRS} key pairs of {block_bits} bits at QBER {QBER:g}")
        pairs = key_pairs(PAIRS, block_bits, QBER)
        n_blocks = waves * blocks
        progress(f"in-process baseline, frame_bits={frame_bits}, {n_blocks} blocks")
        base = {"inprocess": round(baseline(pairs, frame_bits, n_blocks, 1), 2),
                "inprocess_parallel": round(baseline(pairs, frame_bits, n_blocks,
                                                     min(blocks, os.cpu_count() or 1)), 2)}
        for r in asyncio.run(through_channel(frame_bits, blocks, n_blocks, block_bits)):
            emit(BENCH, figure="reconciliation", frame_bits=frame_bits,
                 block_bits=block_bits, qber=QBER, schedule=SCHEDULE, **r,
                 baseline_mbit_s=base,
                 baseline_what="same blocks, encoded messages, no channel, in this process",
                 ratio=round(r["sifted_mbit_s"] / base["inprocess"], 3),
                 target="sifted >= 20 Mbit/s at 1 ms")

if __name__ == "__main__":
    main()

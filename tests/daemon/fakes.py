"""Test doubles for the engine's ports: FAKES, not the real channel, store or block roles.

- ``loopback_channel_pair``: two in-memory PeerChannel ends (no authentication; faults are
  injected by hand).
- ``InMemoryKeyStore``: the KeyStore port in a dict, with a capacity.
- ``FakeRoleFactory``: block roles that swap two nonces and derive a fixed-length "key" from
  them with SHA-256 — enough to drive the engine, nothing like the real protocol.
- ``FakeBoard`` / ``FakeAcquisition``: Alice's public parameters and Bob's blocks, no hardware.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from daemon.engine.acquisition import AcquisitionError
from daemon.engine.ports import AcquiredBlock, Rejected, StoreDigest, StoreUsage
from daemon.keystore.errors import BlockStateError, StoreFull
from daemon.keystore.store import BlockInfo
from firmware_protocol import ParamId


# -- peer channel -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FakeEnvelope:
    link_id: str
    block_id: int
    step: int
    msg_type: int
    payload: bytes


class LoopbackChannel:
    """One end of an in-memory channel; ``peer`` is the other end."""

    def __init__(self, name: str, auth_bits: int = 1 << 20):
        self.name = name
        self.peer: LoopbackChannel | None = None
        self.inbox: asyncio.Queue | None = None
        self.sent: list[FakeEnvelope] = []
        self.auth_bits = auth_bits
        self.refill_bits = 64
        self.refills: list[tuple[int, bytes]] = []     # (refill number, bytes) as taken
        self.refill_delay_s = 0.0
        self.tamper = None          # callable(env) -> "drop" | "reject" | None, on the sender
        self.delay_s = 0.0
        self.started = self.closed = False

    async def start(self) -> None:
        if self.inbox is None:
            self.inbox = asyncio.Queue()
        self.started, self.closed = True, False      # a restarted node reopens its channel

    async def send(self, link_id, block_id, step, msg_type, payload) -> None:
        env = FakeEnvelope(link_id, block_id, step, int(msg_type), bytes(payload))
        self.sent.append(env)
        peer = self.peer
        if peer is None or peer.inbox is None or peer.closed:
            return                    # like ZeroMQ with nobody connected: the message is lost
        verdict = self.tamper(env) if self.tamper else None
        if verdict == "drop":
            return
        item = Rejected(link_id, block_id, "bad tag (injected)") if verdict == "reject" else env
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, peer.inbox.put_nowait, item)
        else:
            peer.inbox.put_nowait(item)

    async def recv(self):
        return await self.inbox.get()

    async def close(self) -> None:
        self.closed = True

    def auth_key_bits_left(self) -> int:
        return self.auth_bits

    def auth_refill_bits(self, key_bits: int) -> int:
        return min(self.refill_bits, int(key_bits) // 2)

    def next_auth_refill(self, link_id) -> int:
        return len(self.refills)

    def refill_auth_key(self, link_id, index, key_bytes) -> int:
        if index < len(self.refills):
            return 0
        assert index == len(self.refills), f"refill {index} taken before {len(self.refills)}"
        if self.refill_delay_s:       # a pool write of uneven length (durable consumption)
            time.sleep(self.refill_delay_s * (os.urandom(1)[0] / 255))
        self.auth_bits += 8 * len(key_bytes)
        self.refills.append((index, bytes(key_bytes)))
        return 8 * len(key_bytes)


def loopback_channel_pair() -> tuple[LoopbackChannel, LoopbackChannel]:
    a, b = LoopbackChannel("a"), LoopbackChannel("b")
    a.peer, b.peer = b, a
    return a, b


# -- key store ----------------------------------------------------------------------------------

class InMemoryKeyStore:
    """Blocks by (link, block): state, keys and commit tag, with the block semantics of the real
    store that LinkCommit relies on; prepared and committed keys count as stored."""

    def __init__(self, capacity_bits: int = 1 << 40):
        self.capacity_bits = capacity_bits
        self.blocks: dict[tuple[str, int], dict] = {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, int]] = []

    def prepare(self, link_id, block_id, keys, *, coordinator, commit_tag=b"",
                auth_bits=None) -> None:
        with self.lock:
            if (link_id, block_id) in self.blocks:
                raise BlockStateError(f"block {block_id} exists")
            new_bits = sum(8 * len(v) for _, v in keys)
            if self._bits(link_id) + new_bits > self.capacity_bits:
                raise StoreFull("full")
            self.calls.append(("prepare", block_id))
            self.blocks[(link_id, block_id)] = {
                "state": "prepared", "keys": [(k, bytes(v)) for k, v in keys],
                "role": "coordinator" if coordinator else "participant",
                "tag": bytes(commit_tag), "size": 8 * len(keys[0][1]) if keys else 0,
                "auth": None if auth_bits is None else bytes(auth_bits), "refill": None}

    def commit(self, link_id, block_id, *, refill_index=None):
        with self.lock:
            rec = self.blocks.get((link_id, block_id))
            if rec is None or rec["state"] == "discarded":
                raise BlockStateError(f"cannot commit block {block_id}")
            if rec["state"] == "committed":
                return rec["refill"]
            self.calls.append(("commit", block_id))
            rec["state"] = "committed"
            if rec["auth"] is not None:
                if rec["role"] == "coordinator":
                    rec["refill"] = 1 + max((r["refill"] for (lk, _), r in self.blocks.items()
                                             if lk == link_id and r["refill"] is not None),
                                            default=-1)
                else:
                    rec["refill"] = refill_index
            return rec["refill"]

    def pending_auth_refills(self, link_id, start=0):
        with self.lock:
            return sorted((r["refill"], r["auth"]) for (lk, _), r in self.blocks.items()
                          if lk == link_id and r["refill"] is not None and r["refill"] >= start
                          and r["auth"] is not None)

    def auth_refills_taken(self, link_id, below):
        with self.lock:
            for (lk, _), r in self.blocks.items():
                if lk == link_id and r["refill"] is not None and r["refill"] < below:
                    r["auth"] = None

    def discard(self, link_id, block_id) -> bool:
        with self.lock:
            rec = self.blocks.get((link_id, block_id))
            if rec is None:
                return False
            if rec["state"] == "committed":
                raise BlockStateError(f"cannot discard committed block {block_id}")
            self.calls.append(("discard", block_id))
            rec["state"], rec["keys"], rec["auth"] = "discarded", [], None
            return True

    def block_state(self, link_id, block_id):
        rec = self.blocks.get((link_id, block_id))
        return None if rec is None else rec["state"]

    def block_info(self, link_id, block_id):
        rec = self.blocks.get((link_id, block_id))
        if rec is None:
            return None
        return BlockInfo(link_id, block_id, rec["role"], rec["state"], rec["size"],
                         len(rec["keys"]), rec["tag"], rec["refill"])

    def in_doubt(self, link_id) -> list[int]:
        return sorted(b for (lk, b), r in self.blocks.items()
                      if lk == link_id and r["state"] == "prepared")

    def _bits(self, link_id) -> int:
        return sum(8 * len(v) for (lk, _), r in self.blocks.items() if lk == link_id
                   and r["state"] != "discarded" for _, v in r["keys"])

    def committed(self, link_id) -> dict:
        return {k: v for (lk, b), r in sorted(self.blocks.items()) if lk == link_id
                and r["state"] == "committed" for k, v in r["keys"]}

    def usage(self, link_id) -> StoreUsage:
        return StoreUsage(self._bits(link_id), self.capacity_bits)

    def digest(self, link_id, nonce: bytes) -> StoreDigest:
        keys = sorted(self.committed(link_id).items())
        ids = hashlib.sha256(b"".join(k.bytes for k, _ in keys)).hexdigest()
        mac = hmac.new(nonce, b"".join(k.bytes + v for k, v in keys), "sha256").hexdigest()
        return StoreDigest(len(keys), sum(8 * len(v) for _, v in keys), ids, mac)


# -- block roles --------------------------------------------------------------------------------

NONCE, REPLY, PING, FAKE_ABORT = 1, 2, 3, 9


@dataclass
class FakeStats:
    qber_estimate: float

    def to_dict(self) -> dict:
        return {"qber_estimate": self.qber_estimate}


@dataclass
class FakeOutcome:
    key: np.ndarray
    stats: FakeStats
    aborted: bool = False
    reasons: list = field(default_factory=list)


def _fake_key(nonce_b: bytes, nonce_a: bytes, n_bits: int) -> np.ndarray:
    stream = b"".join(hashlib.sha256(nonce_b + nonce_a + i.to_bytes(4, "little")).digest()
                      for i in range((n_bits + 255) // 256))
    return np.unpackbits(np.frombuffer(stream, np.uint8))[:n_bits].copy()


class FakeBobBlock:
    """``factory.rounds`` round trips: NONCE/REPLY, then PING/REPLY (the key comes from the
    first two nonces); the extra rounds give a block a middle for fault injection."""

    def __init__(self, factory):
        self.f = factory
        self.nonce = os.urandom(16)
        self.replies = 0
        self.first_reply = b""
        self.done, self.outcome = False, None

    def start(self):
        return [(NONCE, self.nonce)]

    def receive(self, msg):
        msg_type, payload = msg
        if self.f.role_delay_s:       # stands in for numba work of uneven length in the pool
            time.sleep(self.f.role_delay_s * (os.urandom(1)[0] / 255))
        if msg_type == FAKE_ABORT:
            self.done = True
            self.outcome = FakeOutcome(np.zeros(0, np.uint8), FakeStats(self.f.abort_qber),
                                       True, [payload.decode()])
            return []
        self.replies += 1
        if self.replies == 1:
            self.first_reply = payload
        if self.replies < self.f.rounds:
            return [(PING, self.replies.to_bytes(4, "little"))]
        self.done = True
        self.outcome = FakeOutcome(_fake_key(self.nonce, self.first_reply, self.f.key_bits),
                                   FakeStats(self.f.qber))
        return []


class FakeAliceBlock:
    def __init__(self, factory, abort: bool):
        self.f, self.abort = factory, abort
        self.done, self.outcome = False, None
        self.received = 0
        self.key = None

    def start(self):
        return []

    def receive(self, msg):
        msg_type, payload = msg
        if self.f.stall:
            return []
        if self.abort:
            self.done = True
            self.outcome = FakeOutcome(np.zeros(0, np.uint8), FakeStats(self.f.abort_qber),
                                       True, ["qber_above_threshold"])
            return [(FAKE_ABORT, b"qber_above_threshold")]
        self.received += 1
        nonce_a = os.urandom(16)
        if self.received == 1:
            self.key = _fake_key(payload, nonce_a, self.f.key_bits)
        if self.received >= self.f.rounds:
            self.done = True
            self.outcome = FakeOutcome(self.key, FakeStats(self.f.qber))
        return [(REPLY, nonce_a)]


class FakeRoleFactory:
    """``abort_every``: Alice aborts every n-th block she sees (QBER) — both ends must abort."""

    def __init__(self, key_bits: int = 1000, qber: float = 0.02, abort_every: int = 0,
                 abort_qber: float = 0.25, stall: bool = False, role_delay_s: float = 0.0,
                 rounds: int = 1, light_types: tuple = ()):
        self.rounds = rounds
        self.light_types = light_types       # message types ``is_light_step`` calls light
        self.key_bits, self.qber, self.abort_every = key_bits, qber, abort_every
        self.abort_qber, self.stall, self.role_delay_s = abort_qber, stall, role_delay_s
        self.alice_blocks = 0
        self.boards_seen = []

    def alice(self, link, board, pattern_of):
        self.alice_blocks += 1
        self.boards_seen.append(board)
        abort = bool(self.abort_every) and self.alice_blocks % self.abort_every == 0
        return FakeAliceBlock(self, abort)

    def bob(self, link, board, block):
        self.boards_seen.append(board)
        return FakeBobBlock(self)

    def is_light_step(self, msg_type, payload_bytes):
        return msg_type in self.light_types


# -- hardware -----------------------------------------------------------------------------------

class FakeBoard:
    """Alice's board as the engine sees it: public parameters and a pattern lookup."""

    PARAMS = {ParamId.CLOCK_HZ: 1e9, ParamId.SYNC_PERIOD: 1000, ParamId.SYNC_KEY: 1234,
              ParamId.MU: 0.5, ParamId.NU1: 0.1, ParamId.NU2: 0.0,
              ParamId.P_SIGNAL: 0.8, ParamId.P_DECOY1: 0.15, ParamId.P_BASIS_X: 0.5}

    def __init__(self):
        self.closed = False

    def get_parameter(self, param):
        return self.PARAMS[param]

    def request_pattern(self, slots):
        return np.zeros(len(slots), np.uint8)

    def close(self):
        self.closed = True


class FakeAcquisition:
    """Bob's blocks without hardware: a few fake events per block after a short wait."""

    def __init__(self, board, params, block_pulses, *, interval_s: float = 0.005,
                 max_blocks: int | None = None):
        self.params, self.block_pulses, self.interval_s = params, block_pulses, interval_s
        self.max_blocks = max_blocks
        self.blocks = 0
        self.next_slot = 0
        self.stopped = 0

    def next_block(self) -> AcquiredBlock:
        time.sleep(self.interval_s)
        if self.max_blocks is not None and self.blocks >= self.max_blocks:
            time.sleep(0.05)
            raise AcquisitionError("fake_source_exhausted", "the fake source gave its blocks")
        self.blocks += 1
        first = self.next_slot
        self.next_slot += self.block_pulses
        slots = np.arange(first, first + 10, dtype=np.int64)
        return AcquiredBlock(slots, np.zeros(10, np.uint8), np.ones(10, bool),
                             self.block_pulses, first)

    def stop(self):
        self.stopped += 1


# -- a cross-process channel for subprocess tests -----------------------------------------------

class FakeTcpChannel:
    """PeerChannel FAKE over plain TCP (no CurveZMQ, no tag): lets two node processes talk in
    tests. Frame: u32 length, then link-id length u8, link id, block id u64, step u32, type u8,
    payload. The binding end keeps the newest connection; unsent messages are dropped (the
    engine's hello repeats)."""

    def __init__(self, endpoint: str, bind: bool):
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        self.host, self.port, self.bind = host, int(port), bind
        self.inbox: asyncio.Queue | None = None
        self.writer = None
        self.server = None
        self.tasks: list = []

    async def start(self) -> None:
        self.inbox = asyncio.Queue()
        if self.bind:
            self.server = await asyncio.start_server(self._accepted, self.host, self.port)
        else:
            self.tasks.append(asyncio.create_task(self._connect_loop()))

    async def _accepted(self, reader, writer):
        self.writer = writer
        await self._read(reader)

    async def _connect_loop(self):
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.writer = writer
            await self._read(reader)
            self.writer = None

    async def _read(self, reader):
        import struct
        try:
            while True:
                (n,) = struct.unpack("<I", await reader.readexactly(4))
                frame = await reader.readexactly(n)
                k = frame[0]
                link = frame[1:1 + k].decode()
                block_id, step, msg_type = struct.unpack_from("<QIB", frame, 1 + k)
                payload = frame[1 + k + 13:]
                self.inbox.put_nowait(FakeEnvelope(link, block_id, step, msg_type, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def send(self, link_id, block_id, step, msg_type, payload) -> None:
        import struct
        if self.writer is None:
            return
        lk = link_id.encode()
        frame = bytes([len(lk)]) + lk + struct.pack("<QIB", block_id, step, msg_type) + payload
        try:
            self.writer.write(struct.pack("<I", len(frame)) + frame)
            await self.writer.drain()
        except ConnectionError:
            self.writer = None

    async def recv(self):
        return await self.inbox.get()

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()

    def auth_key_bits_left(self) -> int:
        return 1 << 20

    def auth_refill_bits(self, key_bits: int) -> int:
        return 0

    def next_auth_refill(self, link_id) -> int:
        return 0

    def refill_auth_key(self, link_id, index, key_bytes) -> int:
        return 0

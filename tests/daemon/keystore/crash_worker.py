"""Child process for the kill -9 tests (``python -m tests.daemon.keystore.crash_worker``).

``single PATH LOG SEED``: one store; loops prepare/commit-or-discard/lease/deliver/reserve
as fast as it can. Before storing a key it appends "K id sha" to LOG (the ID's one true bit
string); after each delivery "D id sha role". Both by O_APPEND writes, which survive kill -9.

``node A|B PATH LOG SEED``: one end of a link; peer messages are frames on stdin/stdout
(type u8, length u32 LE, payload), relayed by the test, which may drop them while the other
end is dead. A starts a block every few ms (BLOCK frame 0x01 tells B the block id; both
derive the same block key from it), both run the two-step commit, both lease and deliver the
keys they issue (logged "D id sha master"), and A tells B (RESERVE frame 0x02) which IDs it
delivered so that B reserves them for the slave SAE and delivers them (logged "D id sha
slave"). A line "ready" on stderr means recovery is done. The test ends a node only by
kill -9, then settles both stores itself.
"""

from __future__ import annotations

import hashlib
import os
import random
import selectors
import struct
import sys
import time
import uuid

import numpy as np

from daemon.keystore.commit import LinkCommit
from daemon.keystore.cutting import new_key_ids
from daemon.keystore.errors import StoreFull
from daemon.keystore.store import KeyStore

LINK = "L"
BLOCK_FRAME, RESERVE_FRAME = 0x01, 0x02
KEY_BITS = 64
BLOCK_BITS = 64 * 40 + 13


def sha(b) -> str:
    return hashlib.sha256(bytes(b)).hexdigest()[:16]


def block_bits(block_id: int) -> np.ndarray:
    """The block key both ends hold after a (simulated) successful distillation."""
    return np.random.default_rng(block_id).integers(0, 2, BLOCK_BITS, dtype=np.uint8)


class Log:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def run_single(path, log_path, seed):
    rnd = random.Random(seed)
    log = Log(log_path)
    store = KeyStore(path, max_keys=4000)
    store.void_open_leases()
    for block_id in store.in_doubt(LINK):
        store.discard(LINK, block_id)          # a lone store settles its own doubts
    print("ready", file=sys.stderr, flush=True)
    block_id = time.time_ns()
    while True:
        block_id += 1
        n = rnd.randrange(1, 60)
        keys = [(k, os.urandom(8)) for k in new_key_ids(n)]
        for k, b in keys:
            log.write(f"K {k} {sha(b)}")
        try:
            store.prepare(LINK, block_id, keys, coordinator=rnd.random() < 0.5)
        except StoreFull:
            pass
        else:
            if rnd.random() < 0.8:
                store.commit(LINK, block_id)
            else:
                store.discard(LINK, block_id)
        lease = store.lease(LINK, rnd.randrange(1, 40))
        if lease is not None:
            ids = list(lease.key_ids)
            rnd.shuffle(ids)
            ids = ids[:rnd.randrange(0, len(ids) + 1)]
            for i in range(0, len(ids), 4):
                for k, b in store.deliver_leased(lease.lease_id, ids[i:i + 4], master_sae="m",
                                                 slave_sae="s"):
                    log.write(f"D {k} {sha(b)} master")
                    b[:] = bytes(len(b))
            if rnd.random() < 0.7:
                store.close_lease(lease.lease_id)
        peer = [k for k, s in store.key_states(LINK).items() if s == "committed"][:20]
        if peer:
            store.reserve(LINK, peer, slave_sae="Y", master_sae="X")
            reserved = [k for k, s in store.key_states(LINK).items() if s == "reserved"]
            for k, b in store.deliver(reserved[:rnd.randrange(1, 8)], sae_id="Y"):
                log.write(f"D {k} {sha(b)} slave")
        if rnd.random() < 0.05:
            store.expire()


class Node:
    def __init__(self, who, path, log_path, seed):
        self.who = who
        self.rnd = random.Random(seed)
        self.log = Log(log_path)
        self.store = KeyStore(path)
        self.commit = LinkCommit(self.store, LINK, coordinator=(who == "A"),
                                 key_size_bits=KEY_BITS, max_retries=4, max_wait_ticks=20)
        self.out = sys.stdout.buffer
        self.buf = b""
        self.lease = None

    def send(self, frames):
        for t, p in frames:
            self.out.write(struct.pack("<BI", t, len(p)) + p)
        self.out.flush()

    def recover(self):
        voided = self.store.void_open_leases()
        for k in voided.get(LINK, []):
            self.log.write(f"V {k}")
        self.send(self.commit.recover())
        print("ready", file=sys.stderr, flush=True)

    def on_frame(self, t, p):
        if t == BLOCK_FRAME:
            block_id = struct.unpack("<Q", p)[0]
            self.commit.expect(block_id)
            self.send(self.commit.block_done(block_id, block_bits(block_id)))
        elif t == RESERVE_FRAME:
            ids = [uuid.UUID(bytes=p[i:i + 16]) for i in range(0, len(p), 16)]
            self.store.reserve(LINK, ids, slave_sae="Y", master_sae="X")
            ok = [k for k in ids if self.store.key_states(LINK).get(k) == "reserved"]
            for k, b in self.store.deliver(ok, sae_id="Y") if ok else []:
                self.log.write(f"D {k} {sha(b)} slave")
        else:
            self.send(self.commit.receive(t, p))

    def deliver_some(self):
        if self.lease is None:
            self.lease = self.store.lease(LINK, self.rnd.randrange(1, 30))
            if self.lease is None:
                return
            self.todo = list(self.lease.key_ids)
        m = self.rnd.randrange(1, 5)
        take, self.todo = self.todo[:m], self.todo[m:]
        got = self.store.deliver_leased(self.lease.lease_id, take, master_sae="X",
                                        slave_sae="Y") if take else []
        for k, b in got:
            self.log.write(f"D {k} {sha(b)} master")
        if self.who == "A" and got:
            self.send([(RESERVE_FRAME, b"".join(k.bytes for k, _ in got))])
        if not self.todo or self.rnd.random() < 0.1:
            self.store.close_lease(self.lease.lease_id)
            self.lease = None

    def run(self):
        self.recover()
        sel = selectors.DefaultSelector()
        sel.register(sys.stdin.buffer.raw, selectors.EVENT_READ)
        block_id = time.time_ns()
        next_block = next_timer = time.monotonic()
        while True:
            for _ in sel.select(timeout=0.005):
                chunk = os.read(sys.stdin.fileno(), 1 << 20)
                if not chunk:
                    return
                self.buf += chunk
            while len(self.buf) >= 5:
                t, n = struct.unpack_from("<BI", self.buf)
                if len(self.buf) < 5 + n:
                    break
                p, self.buf = self.buf[5:5 + n], self.buf[5 + n:]
                self.on_frame(t, p)
            now = time.monotonic()
            if self.who == "A" and now >= next_block:
                block_id = max(block_id + 1, time.time_ns())
                self.send([(BLOCK_FRAME, struct.pack("<Q", block_id))])
                self.send(self.commit.block_done(block_id, block_bits(block_id)))
                next_block = now + 0.01
            if now >= next_timer:
                self.send(self.commit.on_timer())
                next_timer = now + 0.05
            self.deliver_some()


def main(argv):
    if argv[0] == "single":
        run_single(argv[1], argv[2], int(argv[3]))
    else:
        Node(argv[1], argv[2], argv[3], int(argv[4])).run()


if __name__ == "__main__":
    main(sys.argv[1:])

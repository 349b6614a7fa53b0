"""Authentication refills across crashes and reordered COMMITs, with the real pieces in one
process: two SQLite key stores, two Wegman-Carter pools grown from a 1 KiB bootstrap (63
messages each way), two peer sessions that tag and verify every commit message, and the
two-step commit. A "crash" drops everything in memory of one end (its LinkCommit, session and
open files) right after its store committed a block and before the engine's refill step ran,
and reopens it from its files, as a restarted node would. Every frame must verify: once the
bootstrap is used up, pools that differ by one refill reject every tag.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from daemon.engine.auth_refill import move_refills
from daemon.keystore.commit import LinkCommit
from daemon.keystore.store import KeyStore
from daemon.peer.auth_keys import MIN_BOOTSTRAP_BYTES, AuthKeyPool, write_bootstrap
from daemon.peer.session import REJECTIONS, PeerSession

LINK = "alice-bob"
KEY_BITS = 256
REFILL_BYTES = 256             # 16 messages each way per block
BOOTSTRAP_MESSAGES = MIN_BOOTSTRAP_BYTES // 16 - 1


class PoolPort:
    """The two pool calls of the engine's channel port, on a real pool."""

    def __init__(self, pool: AuthKeyPool):
        self.pool = pool

    def next_auth_refill(self, link_id: str) -> int:
        return self.pool.next_refill

    def refill_auth_key(self, link_id: str, index: int, key_bytes) -> int:
        return 8 * self.pool.refill(key_bytes, index)


class End:
    def __init__(self, directory, role: str, bootstrap):
        self.directory, self.role, self.bootstrap = directory, role, bootstrap
        directory.mkdir()
        self.crashes = 0
        self._open()

    def _open(self) -> None:
        self.store = KeyStore(self.directory / "keys.sqlite")
        self.pool = AuthKeyPool(self.directory / "auth", local_role=self.role,
                                bootstrap=self.bootstrap, chunk_messages=4)
        self.session = PeerSession(self.pool, 1)
        self.commit = LinkCommit(self.store, LINK, coordinator=self.role == "alice",
                                 key_size_bits=KEY_BITS)

    def step(self, fn, *args) -> list:
        """One commit call and the engine's refill step after it."""
        out = fn(*args)
        move_refills(self.store, PoolPort(self.pool), LINK)
        return out

    def crash_and_restart(self) -> list:
        self.store.close()
        self.pool.close()
        self.crashes += 1
        self._open()
        return self.step(self.commit.recover)

    def close(self) -> None:
        self.store.close()
        self.pool.close()


class Link:
    def __init__(self, tmp_path):
        boot = tmp_path / "boot.auth"
        write_bootstrap(boot, MIN_BOOTSTRAP_BYTES)
        self.end = {r: End(tmp_path / r, r, boot) for r in ("alice", "bob")}
        self.frames = 0
        self.hellos()

    def peer(self, role: str) -> End:
        return self.end["bob" if role == "alice" else "alice"]

    def hellos(self) -> None:
        """A new connection: each end's hello, verified by the other."""
        for role, end in self.end.items():
            env, events = self.peer(role).session.receive(end.session.hello())
            assert not [e for e in events if e.kind in REJECTIONS], events

    def deliver(self, sender: str, message, block_id: int):
        """One frame from ``sender``, verified at the peer: the envelope."""
        frame = self.end[sender].session.encode(block_id, 0, *message)
        env, events = self.peer(sender).session.receive(frame)
        assert env is not None, events          # the tag verified
        self.frames += 1
        return env

    def send(self, role: str, messages, *, crash_after: bool = False) -> None:
        """Tag ``messages`` at ``role``'s end, verify them at the peer, feed them to its
        commit and so on until the exchange is quiet. With ``crash_after`` the receiving end
        crashes right after its commit call (before its refill step) the first time."""
        queue = [(role, msg) for msg in messages]
        while queue:
            sender, message = queue.pop(0)
            receiver = self.peer(sender)
            env = self.deliver(sender, message, 0)
            to = "bob" if sender == "alice" else "alice"
            if crash_after:
                crash_after = False
                receiver.commit.receive(env.msg_type, env.payload)   # its replies are lost
                queue += [(to, m) for m in receiver.crash_and_restart()]
                self.hellos()
            else:
                queue += [(to, m) for m in receiver.step(receiver.commit.receive, env.msg_type,
                                                         env.payload)]

    def timers(self) -> None:
        for role in ("bob", "alice"):
            end = self.end[role]
            self.send(role, end.step(end.commit.on_timer))

    def block(self, block_id: int, *, crash: str | None = None, lose_commit: bool = False):
        """One block: both ends hand over the same key and refill bits, then the commit."""
        bits = np.frombuffer(os.urandom(2 * KEY_BITS), np.uint8) & 1
        auth = os.urandom(REFILL_BYTES)
        alice, bob = self.end["alice"], self.end["bob"]
        bob.step(bob.commit.block_done, block_id, bits.copy(), bytearray(auth))
        prepare = alice.step(alice.commit.block_done, block_id, bits.copy(), bytearray(auth))
        env = self.deliver("alice", prepare[0], block_id)
        prepared = bob.step(bob.commit.receive, env.msg_type, env.payload)
        if lose_commit:            # Alice commits; her COMMIT never reaches Bob
            env = self.deliver("bob", prepared[0], block_id)
            alice.step(alice.commit.receive, env.msg_type, env.payload)
            return
        if crash == "alice":       # crash between Alice's commit and her refill
            self.send("bob", prepared, crash_after=True)
            return
        if crash == "bob":         # Bob gets COMMIT, commits, crashes before his refill
            env = self.deliver("bob", prepared[0], block_id)
            commit = alice.step(alice.commit.receive, env.msg_type, env.payload)
            self.send("alice", commit, crash_after=True)
            return
        self.send("bob", prepared)

    def pools(self) -> dict[str, tuple[int, bytes]]:
        return {r: (e.pool.next_refill, bytes(e.pool._material)) for r, e in self.end.items()}


@pytest.mark.parametrize("victim", ["alice", "bob"])
def test_a_crash_between_commit_and_refill_leaves_pools_that_still_authenticate(tmp_path,
                                                                               victim):
    link = Link(tmp_path)
    try:
        for b in range(1, 61):
            link.block(b, crash=victim if b % 3 == 0 else None)
            link.timers()          # every few seconds at a node: settles what is in doubt
        for _ in range(3):
            link.timers()
        assert link.end[victim].crashes == 20
        pools = link.pools()
        assert pools["alice"] == pools["bob"]
        assert pools["alice"][0] == 60                   # every committed block refilled once
        assert len(pools["alice"][1]) == MIN_BOOTSTRAP_BYTES + 60 * REFILL_BYTES
        # the bootstrap is long used up at both ends, and the last frames still verified
        for end in link.end.values():
            assert end.pool.send_next > 2 * BOOTSTRAP_MESSAGES, end.role
        link.block(61)
        link.timers()
        assert link.pools()["alice"] == link.pools()["bob"]
        for end in link.end.values():    # the refill bits left the store once in the pool
            assert end.store.pending_auth_refills(LINK) == []
    finally:
        for end in link.end.values():
            end.close()


def test_commits_that_reach_bob_out_of_order_refill_in_alices_order(tmp_path):
    """Every other block's COMMIT is lost; the next block's arrives first, the lost one on
    Bob's question after his timer. Bob's pool waits for the gap and ends equal to Alice's."""
    link = Link(tmp_path)
    try:
        committed_at_bob = []
        for b in range(1, 61):
            link.block(b, lose_commit=b % 2 == 1)
            if b % 2 == 0:
                committed_at_bob.append(b)
                assert link.end["bob"].pool.next_refill < link.end["alice"].pool.next_refill
                link.timers()                 # Bob asks about the block in doubt
                committed_at_bob.append(b - 1)
                assert link.pools()["alice"] == link.pools()["bob"]
        bob_order = [link.end["bob"].store.block_info(LINK, b).refill_index
                     for b in committed_at_bob]
        assert bob_order != sorted(bob_order)             # Bob did commit out of order
        assert link.pools()["alice"][0] == 60
        for end in link.end.values():        # past the bootstrap, every frame verified
            assert end.pool.send_next > BOOTSTRAP_MESSAGES, end.role
    finally:
        for end in link.end.values():
            end.close()

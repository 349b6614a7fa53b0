"""The link engine with FAKE ports: blocks flow, aborts reach both ends, the store pauses it,
rejected messages abort a block at both ends, the two-step commit (LinkCommit) settles blocks
in doubt after lost messages and restarts."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from daemon import config as cfg
from daemon.engine import link as link_mod
from daemon.engine.link import LinkEngine
from daemon.engine.messages import EngineMessage
from daemon.keystore.messages import CommitMsgType
from tests.daemon.configs import example_in
from tests.daemon.fakes import NONCE, PING, FakeAcquisition, FakeBoard, FakeRoleFactory, \
    InMemoryKeyStore, loopback_channel_pair

KEY_BITS = 1000          # fake block key; the channel takes 64 bits for authentication
KEYS_PER_BLOCK = (KEY_BITS - 64) // 256


@pytest.fixture(autouse=True)
def fast_hello(monkeypatch):
    monkeypatch.setattr(link_mod, "HELLO_REPEAT_S", 0.05)
    monkeypatch.setattr(link_mod, "STORE_POLL_S", 0.05)
    monkeypatch.setattr(link_mod, "COMMIT_TICK_S", 0.05)


def links(tmp_path, **policy):
    conf = cfg.load(example_in(tmp_path))
    bob = conf.links[0]
    bob = replace(bob, policy=replace(bob.policy, **{"blocks_in_flight": 3,
                                                      "block_timeout_s": 2.0, **policy}))
    alice = replace(bob, role="alice", peer=replace(bob.peer, bind=True))
    return conf, alice, bob


class Pair:
    """Alice's and Bob's engines of one link in one event loop, through the loopback double."""

    def __init__(self, tmp_path, *, alice_roles=None, bob_roles=None, alice_store=None,
                 bob_store=None, max_blocks=None, **policy):
        self.conf, self.alice_link, self.bob_link = links(tmp_path, **policy)
        self.ch_a, self.ch_b = loopback_channel_pair()
        self.alice_roles = alice_roles or FakeRoleFactory(KEY_BITS)
        self.bob_roles = bob_roles or FakeRoleFactory(KEY_BITS)
        self.alice_store = alice_store or InMemoryKeyStore()
        self.bob_store = bob_store or InMemoryKeyStore()
        self.pools = [ThreadPoolExecutor(2), ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
        self.acquisition = functools.partial(FakeAcquisition, max_blocks=max_blocks)
        self.alice = self.new_alice()
        self.bob = LinkEngine(self.bob_link, self.conf.keystore, node_id="bob", board=None,
                              channel=self.ch_b, store=self.bob_store, roles=self.bob_roles,
                              compute=self.pools[0], io=self.pools[2],
                              acquisition_factory=self.acquisition)
        self.tasks = {}

    def new_alice(self):
        return LinkEngine(self.alice_link, self.conf.keystore, node_id="alice",
                          board=FakeBoard(), channel=self.ch_a, store=self.alice_store,
                          roles=self.alice_roles, compute=self.pools[0], io=self.pools[1])

    def start(self, *engines):
        for e in engines or (self.alice, self.bob):
            self.tasks[e] = asyncio.create_task(e.run())

    async def stop(self, *engines):
        for e in engines or list(self.tasks):
            task = self.tasks.pop(e)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def until(self, cond, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while not cond():
            for task in self.tasks.values():
                if task.done():
                    task.result()       # an engine died: show why
            assert time.monotonic() < deadline, f"timed out: alice {self.alice.status()} " \
                                                f"bob {self.bob.status()}"
            await asyncio.sleep(0.01)

    def close(self):
        for p in self.pools:
            p.shutdown(wait=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_blocks_flow_and_both_stores_hold_the_same_keys(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=6)
        pair.start()
        await pair.until(lambda: pair.alice.figures.blocks_ok == 6
                         and pair.bob.figures.blocks_ok == 6)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 6 * KEYS_PER_BLOCK and a == b
    assert all(len(v) == 32 for v in a.values())
    bob = pair.bob.status()
    assert bob["keys_stored"] == 6 * KEYS_PER_BLOCK and bob["blocks_aborted"] == \
        bob["abort_reasons"].get("fake_source_exhausted", 0)
    assert bob["secret_bits"] == 6 * KEYS_PER_BLOCK * 256 and bob["auth_bits_used"] == 6 * 64
    assert bob["qber"] == pytest.approx(0.02) and bob["state"] == "stopped"
    assert pair.alice.status()["blocks_aborted"] == 0
    # Alice's public board parameters reached Bob's role factory through the hello
    assert pair.bob_roles.boards_seen[0].sync_key == 1234


class _ThreadRecordingRoles(FakeRoleFactory):
    """Alice's roles note, per message type, the thread each ``receive`` ran in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = {}

    def alice(self, link, board, pattern_of):
        role = super().alice(link, board, pattern_of)
        receive = role.receive

        def recording(msg):
            self.threads.setdefault(msg[0], set()).add(threading.get_ident())
            return receive(msg)
        role.receive = recording
        return role


def test_light_steps_run_on_the_event_loop_and_the_rest_in_the_compute_pool(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=3,
                    alice_roles=_ThreadRecordingRoles(KEY_BITS, rounds=3, light_types=(PING,)),
                    bob_roles=FakeRoleFactory(KEY_BITS, rounds=3))
        pair.start()
        await pair.until(lambda: pair.alice.figures.blocks_ok == 3
                         and pair.bob.figures.blocks_ok == 3)
        await pair.stop()
        return pair, threading.get_ident()
    pair, loop_thread = run(main())
    pair.close()
    seen = pair.alice_roles.threads
    assert seen[PING] == {loop_thread}                      # 2 light rounds per block
    assert loop_thread not in seen[NONCE]                   # the first step: the pool's
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 3 * KEYS_PER_BLOCK and a == b


def test_an_abort_at_one_end_aborts_the_block_at_both(tmp_path):
    async def main():
        pair = Pair(tmp_path, alice_roles=FakeRoleFactory(KEY_BITS, abort_every=2),
                    max_blocks=6)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok + pair.bob.figures.abort_reasons[
            "qber_above_threshold"] == 6 and pair.alice.figures.blocks_ok == 3)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    for engine in (pair.alice, pair.bob):
        s = engine.status()
        assert s["blocks_ok"] == 3 and s["abort_reasons"]["qber_above_threshold"] == 3
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 3 * KEYS_PER_BLOCK and a == b
    assert all(b not in [blk for (_, blk) in pair.alice_store.blocks]
               for b in pair.bob_store.in_doubt("alice-bob"))


def test_qber_aborts_in_a_row_raise_the_alarm_and_store_nothing(tmp_path):
    async def main():
        pair = Pair(tmp_path, alice_roles=FakeRoleFactory(KEY_BITS, abort_every=1),
                    qber_alarm_blocks=3)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_aborted >= 4
                         and pair.alice.figures.blocks_aborted >= 4)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    for engine, store in ((pair.alice, pair.alice_store), (pair.bob, pair.bob_store)):
        s = engine.status()
        assert "possible eavesdropping" in s["alarms"]["qber"] and s["qber"] == 0.25
        assert s["blocks_ok"] == 0 and store.calls == []


def test_a_full_store_pauses_distillation_and_says_so(tmp_path):
    block_bits = KEYS_PER_BLOCK * 256

    async def main():
        pair = Pair(tmp_path, bob_store=InMemoryKeyStore(capacity_bits=2 * block_bits))
        pair.start()
        await pair.until(lambda: pair.bob.status()["state"] == "paused: key store full")
        started = pair.bob.figures.blocks_started
        await asyncio.sleep(0.3)
        assert pair.bob.figures.blocks_started == started    # nothing new while full
        # a consumer takes keys out: distillation resumes
        pair.bob_store.capacity_bits = 100 * block_bits
        await pair.until(lambda: pair.bob.figures.blocks_ok > started)
        assert pair.bob.status()["state"] == "running"
        await pair.stop()
        return pair, started
    pair, started = run(main())
    pair.close()
    assert 2 <= started <= 2 + 3      # at most the blocks already in flight finish


def test_a_full_store_at_alice_aborts_and_pauses_bob(tmp_path):
    async def main():
        pair = Pair(tmp_path, alice_store=InMemoryKeyStore(capacity_bits=100))
        pair.start()
        await pair.until(lambda: pair.bob.status()["state"] == "paused: peer's key store full")
        await pair.until(lambda: pair.bob.figures.abort_reasons["commit_discarded"] >= 1)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.alice.figures.abort_reasons["commit_discarded"] >= 1
    assert pair.bob.figures.blocks_ok == 0 == pair.alice.figures.blocks_ok
    assert pair.bob_store.committed("alice-bob") == {} == pair.alice_store.committed("alice-bob")


def test_a_rejected_message_aborts_its_block_at_both_ends(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=3)
        rejected = []

        def tamper(env):          # the first block's reply arrives with a bad tag
            if env.msg_type == 2 and not rejected:
                rejected.append(env.block_id)
                return "reject"
        pair.ch_a.tamper = tamper
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 2
                         and pair.alice.figures.blocks_aborted == 1
                         and pair.alice.figures.blocks_ok == 2)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.figures.abort_reasons["rejected_message"] == 1
    assert pair.bob.figures.rejected_messages == 1
    # Alice had finished her part and prepared the block: Bob's refusal discards it there,
    # counted under the reason Bob gave
    assert pair.alice.figures.abort_reasons["peer: rejected_message"] == 1
    assert pair.alice_store.in_doubt("alice-bob") == []
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 2 * KEYS_PER_BLOCK and a == b


def test_repeated_rejections_raise_the_authentication_alarm(tmp_path):
    async def main():
        pair = Pair(tmp_path)
        pair.ch_a.tamper = lambda env: "reject" if env.msg_type == 2 else None
        pair.start()
        await pair.until(lambda: "authentication" in pair.bob.status()["alarms"])
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.figures.blocks_ok == 0 and pair.bob.figures.rejected_messages >= 5
    assert pair.alice_store.committed("alice-bob") == {}


def test_a_foreign_link_message_is_rejected_and_counted(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 1)
        await pair.ch_a.send("carol-dave", 5, 1, 1, b"x")
        await pair.until(lambda: pair.bob.figures.rejected_messages == 1)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.status()["state"] == "stopped"


def _drop_first(msg_type):
    dropped = []

    def tamper(env):
        if env.msg_type == msg_type and not dropped:
            dropped.append(env.block_id)
            return "drop"
    return tamper


def test_a_lost_commit_is_asked_for_again_and_both_ends_keep_the_block(tmp_path):
    """Alice committed, her COMMIT is lost: Bob's PREPARED again gets COMMIT again."""
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.ch_a.tamper = _drop_first(CommitMsgType.COMMIT)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 1
                         and pair.alice.figures.blocks_ok == 1)
        await pair.until(lambda: pair.bob_store.in_doubt("alice-bob") == [])
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == KEYS_PER_BLOCK and a == b


def test_a_block_whose_vote_never_arrives_is_discarded_at_both_ends(tmp_path):
    """Every PREPARED is lost: Alice resends PREPARE, gives up, discards, says ABORT."""
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.ch_b.tamper = lambda env: "drop" if env.msg_type == CommitMsgType.PREPARED \
            else None
        pair.start()
        await pair.until(lambda: pair.alice.figures.abort_reasons["commit_discarded"] == 1
                         and pair.bob.figures.abort_reasons["commit_discarded"] == 1)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    for store in (pair.alice_store, pair.bob_store):
        assert store.committed("alice-bob") == {} and store.in_doubt("alice-bob") == []
    assert [op for op, _ in pair.alice_store.calls] == ["prepare", "discard"]
    assert [op for op, _ in pair.bob_store.calls] == ["prepare", "discard"]


def test_alice_restarting_undecided_discards_the_block_at_both_ends(tmp_path):
    """Both ends prepared, Alice dies before deciding: presumed abort after her restart."""
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.ch_b.tamper = lambda env: "drop" if env.msg_type == CommitMsgType.PREPARED \
            else None
        pair.start()
        await pair.until(lambda: pair.alice_store.in_doubt("alice-bob") != []
                         and pair.bob_store.in_doubt("alice-bob") != [])
        await pair.stop(pair.alice)              # crash: nothing decided on the way out
        pair.ch_b.tamper = None
        pair.alice = pair.new_alice()            # Alice's node restarts on the same store
        pair.start(pair.alice)
        await pair.until(lambda: pair.alice_store.in_doubt("alice-bob") == []
                         and pair.bob_store.in_doubt("alice-bob") == [])
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    for store in (pair.alice_store, pair.bob_store):
        assert store.committed("alice-bob") == {}
        assert [op for op, _ in store.calls] == ["prepare", "discard"]


def test_bob_restarting_in_doubt_learns_the_commit_and_keeps_the_block(tmp_path):
    """Alice committed, COMMIT lost, Bob dies: his restarted node asks and commits."""
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.ch_a.tamper = lambda env: "drop" if env.msg_type == CommitMsgType.COMMIT else None
        pair.start()
        await pair.until(lambda: pair.alice_store.committed("alice-bob") != {}
                         and pair.bob_store.in_doubt("alice-bob") != [])
        await pair.stop(pair.bob)                 # crash: nothing decided on the way out
        pair.ch_a.tamper = None
        pair.bob = LinkEngine(pair.bob_link, pair.conf.keystore, node_id="bob", board=None,
                              channel=pair.ch_b, store=pair.bob_store, roles=pair.bob_roles,
                              compute=pair.pools[0], io=pair.pools[2],
                              acquisition_factory=functools.partial(FakeAcquisition,
                                                                    max_blocks=0))
        pair.start(pair.bob)
        await pair.until(lambda: pair.bob_store.in_doubt("alice-bob") == [])
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == KEYS_PER_BLOCK and a == b


def test_blocks_overlap_when_the_peer_is_far_away(tmp_path):
    """With a 20 ms one-way delay, Bob keeps his whole allowance of blocks in flight."""
    async def main():
        pair = Pair(tmp_path, max_blocks=8, blocks_in_flight=4)
        pair.ch_a.delay_s = pair.ch_b.delay_s = 0.02
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 8
                         and pair.alice.figures.blocks_ok == 8)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.status()["in_flight_peak"] == 4
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 8 * KEYS_PER_BLOCK and a == b


class _ExplodingAliceRoles(FakeRoleFactory):
    """Alice's role fails on the second block's message, as on malformed peer input."""

    def alice(self, link, board, pattern_of):
        role = super().alice(link, board, pattern_of)
        if self.alice_blocks == 2:
            def receive(msg):
                raise ValueError("payload of 3 bytes, expected 16")
            role.receive = receive
        return role


def test_a_role_that_fails_aborts_its_block_at_both_ends_and_the_link_goes_on(tmp_path,
                                                                              caplog):
    async def main():
        pair = Pair(tmp_path, alice_roles=_ExplodingAliceRoles(KEY_BITS), max_blocks=4)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 3
                         and pair.alice.figures.blocks_ok == 3
                         and pair.bob.figures.blocks_aborted >= 1)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.alice.figures.abort_reasons["internal_error"] == 1
    assert pair.bob.figures.abort_reasons["peer: internal_error"] == 1
    assert "ValueError: payload of 3 bytes, expected 16" in caplog.text
    a, b = (s.committed("alice-bob") for s in (pair.alice_store, pair.bob_store))
    assert len(a) == 3 * KEYS_PER_BLOCK and a == b


def test_a_held_link_drains_and_resumes(tmp_path):
    async def main():
        pair = Pair(tmp_path)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok >= 2)
        pair.bob.hold(True)
        await pair.until(lambda: pair.bob.status()["in_flight"] == 0
                         and pair.alice.status()["in_flight"] == 0)
        ok = pair.bob.figures.blocks_ok
        await asyncio.sleep(0.2)
        held = (pair.bob.status()["state"], pair.bob.figures.blocks_ok)
        # drained: both stores hold exactly the same committed keys
        same = pair.alice_store.committed("alice-bob") == pair.bob_store.committed("alice-bob")
        pair.bob.hold(False)
        await pair.until(lambda: pair.bob.figures.blocks_ok > ok)
        await pair.stop()
        return pair, ok, held, same
    pair, ok, held, same = run(main())
    pair.close()
    assert held == ("held by operator", ok) and same


def test_a_peer_with_another_policy_gets_no_block_and_an_alarm(tmp_path):
    async def main():
        pair = Pair(tmp_path)
        pair.alice.link = replace(pair.alice_link, policy=replace(pair.alice_link.policy,
                                                                  eps_sec=1e-9))
        pair.start()
        await pair.until(lambda: "config" in pair.bob.status()["alarms"]
                         and "config" in pair.alice.status()["alarms"])
        await asyncio.sleep(0.2)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.figures.blocks_started == 0 == pair.alice.figures.blocks_started
    assert "policy differs" in pair.bob.figures.alarms["config"]


def test_a_malformed_hello_is_rejected_and_the_engine_keeps_running(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.start(pair.bob)
        await pair.ch_a.start()
        await pair.until(lambda: pair.ch_b.started)
        await pair.ch_a.send("alice-bob", 0, 0, EngineMessage.HELLO, b"{not json")
        bad = {"session": "x", "peer_session": None, "node": "alice", "role": "alice",
               "policy": link_mod.policy_summary(pair.alice_link)}        # no board
        await pair.ch_a.send("alice-bob", 0, 0, EngineMessage.HELLO, json.dumps(bad).encode())
        await pair.until(lambda: pair.bob.figures.rejected_messages == 2)
        pair.start(pair.alice)
        await pair.until(lambda: pair.bob.figures.blocks_ok == 1)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert len(pair.bob_store.committed("alice-bob")) == KEYS_PER_BLOCK


def test_auth_key_refills_happen_in_the_same_block_order_at_both_ends(tmp_path):
    """Blocks finish out of order (uneven work, slow pool writes); both pools still refill in
    one order, the order of Alice's commits, and an aborted block refills nothing."""
    async def main():
        pair = Pair(tmp_path, bob_roles=FakeRoleFactory(KEY_BITS, role_delay_s=0.03),
                    alice_roles=FakeRoleFactory(KEY_BITS, abort_every=5),
                    max_blocks=15, blocks_in_flight=4)
        pair.pools[0].shutdown()
        pair.alice.compute = pair.bob.compute = pair.pools[0] = ThreadPoolExecutor(4)
        pair.ch_a.delay_s = pair.ch_b.delay_s = 0.005
        pair.ch_b.refill_delay_s = 0.05          # Bob's pool writes are slow and uneven
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 12
                         and pair.alice.figures.blocks_ok == 12)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert len(pair.ch_b.refills) == 12 and pair.ch_a.refills == pair.ch_b.refills
    assert [i for i, _ in pair.ch_b.refills] == list(range(12))
    committed = {b for (_, b), r in pair.bob_store.blocks.items() if r["state"] == "committed"}
    assert len(committed) == 12
    assert all(len(data) == 8 for _, data in pair.ch_b.refills)      # 64 bits each


def test_a_lost_commit_resent_after_later_ones_changes_nothing_in_the_pools(tmp_path):
    """Alice's first COMMIT of every other block is lost, so Bob commits later blocks first
    and the lost ones on the resend; his pool still takes the refills in Alice's order (it
    waits for the gap), so both pools hold the same bytes in the same order."""
    seen: list[int] = []           # blocks in the order of their first COMMIT
    dropped: set[int] = set()

    def lose_first_commit(env):
        if env.msg_type != CommitMsgType.COMMIT or env.block_id in seen:
            return None
        seen.append(env.block_id)
        if len(seen) % 2:
            dropped.add(env.block_id)
            return "drop"
        return None

    async def main():
        pair = Pair(tmp_path, max_blocks=10, blocks_in_flight=4)
        pair.ch_a.tamper = lose_first_commit
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 10
                         and pair.alice.figures.blocks_ok == 10
                         and len(pair.ch_b.refills) == 10)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert len(dropped) == 5
    order = {n: [b for op, b in store.calls if op == "commit"]
             for n, store in (("alice", pair.alice_store), ("bob", pair.bob_store))}
    assert sorted(order["alice"]) == sorted(order["bob"]) and order["alice"] != order["bob"]
    assert pair.ch_a.refills == pair.ch_b.refills
    assert [i for i, _ in pair.ch_b.refills] == list(range(10))


def test_a_link_level_message_other_than_hello_is_rejected_and_counted(tmp_path):
    async def main():
        pair = Pair(tmp_path, max_blocks=1)
        pair.start()
        await pair.until(lambda: pair.bob.figures.blocks_ok == 1)
        for msg_type in (EngineMessage.ABORT, 0xF6, 0x01):
            await pair.ch_a.send("alice-bob", 0, 0, msg_type, b"{}")
        await pair.until(lambda: pair.bob.figures.rejected_messages == 3)
        await pair.stop()
        return pair
    pair = run(main())
    pair.close()
    assert pair.bob.status()["blocks_ok"] == 1

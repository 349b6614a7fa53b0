"""The sans-I/O session: tampered, replayed, reordered, foreign-link and unexpected-type frames
are dropped, counted and reported; restarts resynchronise through the hello."""

from __future__ import annotations

import pytest

from daemon.peer import envelope as ev
from daemon.peer import session as ss
from daemon.peer.auth_keys import AuthKeyPool, write_bootstrap
from daemon.peer.session import PeerSession


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def pair(tmp_path):
    boot = tmp_path / "boot.bin"
    write_bootstrap(boot, 256 * 1024)

    def make(role, **kw):
        pool = AuthKeyPool(tmp_path / role, local_role=role, bootstrap=boot, chunk_messages=16)
        return PeerSession(pool, 7, allowed_types={1, 2, 3}, clock=Clock(), **kw)

    return make("alice"), make("bob"), make


def kinds(events):
    return [e.kind for e in events]


def test_messages_pass_in_order_with_their_fields(pair):
    a, b, _ = pair
    for i in range(5):
        env, events = b.receive(a.encode(100 + i, i, 1 + i % 3, b"x" * i))
        assert events == []
        assert (env.link_id, env.block_id, env.step, env.msg_type, env.payload) == \
            (7, 100 + i, i, 1 + i % 3, b"x" * i)
    assert b.received == 5 and a.sent == 5
    assert a.auth_bits_used(102) == b.auth_bits_used(102) == 64


def test_tampered_frame_is_rejected_and_the_next_one_passes(pair):
    a, b, _ = pair
    frame = bytearray(a.encode(9, 0, 1, b"parities"))
    frame[40] ^= 0x01
    env, events = b.receive(bytes(frame))
    assert env is None and kinds(events) == [ss.REJECT_BAD_TAG]
    assert events[0].block_id == 9 and not events[0].authenticated
    env, events = b.receive(a.encode(9, 1, 1, b"next"))
    assert env.payload == b"next" and kinds(events) == [ss.EVENT_SEQ_GAP]   # seq 0 was lost
    assert b.counts[ss.REJECT_BAD_TAG] == 1


def test_replayed_and_reordered_frames_are_rejected(pair):
    a, b, _ = pair
    f1, f2, f3 = (a.encode(1, s, 1, b"m%d" % s) for s in range(3))
    assert b.receive(f1)[0] is not None
    assert kinds(b.receive(f1)[1]) == [ss.REJECT_REPLAY]          # replay
    env, events = b.receive(f3)                                     # f2 overtaken by f3
    assert env.payload == b"m2" and kinds(events) == [ss.EVENT_SEQ_GAP]
    assert kinds(b.receive(f2)[1]) == [ss.REJECT_REPLAY]          # reordered: too late


def test_foreign_link_and_unexpected_type_are_rejected_after_authentication(pair):
    a, b, _ = pair
    env, events = b.receive(a.encode(5, 0, 1, b"", link_id=8))
    assert env is None and kinds(events) == [ss.REJECT_FOREIGN_LINK]
    assert events[0].authenticated and events[0].block_id == 5
    env, events = b.receive(a.encode(5, 0, 200, b""))
    assert env is None and kinds(events) == [ss.REJECT_UNEXPECTED_TYPE]


def test_garbage_is_malformed_and_repeated_failures_raise_the_alarm(pair):
    a, b, _ = pair
    assert kinds(b.receive(b"garbage")[1]) == [ss.REJECT_MALFORMED]
    assert not b.alarm
    frame = bytearray(a.encode(1, 0, 1, b"x"))
    frame[-1] ^= 0x80
    b.receive(bytes(frame))
    _, events = b.receive(b"QKDP")
    assert kinds(events) == [ss.REJECT_MALFORMED, ss.EVENT_ALARM] and b.alarm


def test_failures_spread_beyond_the_window_raise_no_alarm(pair):
    _, b, _ = pair
    for _ in range(5):
        b.receive(b"garbage")
        b.clock.t += 31.0          # window 60 s, threshold 3: at most 2 in any window
    assert not b.alarm


def test_receiver_restart_resynchronises_through_the_hello(pair, tmp_path):
    a, b, make = pair
    b.receive(a.hello())
    a.receive(b.hello())
    for i in range(5):
        assert b.receive(a.encode(1, i, 1, b""))[0] is not None
    old_boot = b.boot_id
    b.pool.close()
    b = make("bob")                                  # bob restarts: floor rounded up to 16
    assert b.pool.recv_floor == 16
    stale = a.encode(1, 5, 1, b"sent before alice knew")
    env, events = b.receive(stale)
    assert env is None and kinds(events) == [ss.REJECT_REPLAY] and not b.alarm
    # new connection: both send hellos; alice's jumps to the chunk boundary and passes
    env, events = b.receive(a.hello())
    assert kinds(events) == [ss.EVENT_PEER_HELLO]          # alice jumped to exactly 16
    env, events = a.receive(b.hello())
    assert kinds(events) == [ss.EVENT_SEQ_GAP, ss.EVENT_PEER_HELLO]
    assert events[-1].detail == "peer restarted" and b.boot_id != old_boot
    env, events = b.receive(a.encode(2, 0, 1, b"after"))
    assert env.payload == b"after" and events == []


def test_hello_floor_moves_the_sender_forward(pair):
    a, b, _ = pair
    b.pool.recv_floor = 500          # as if bob had accepted up to 499
    a.receive(b.hello())
    assert a.pool.send_next >= 500


def test_pool_mismatch_is_named(tmp_path):
    boots = [tmp_path / "b1", tmp_path / "b2"]
    for p in boots:
        write_bootstrap(p, 4096)
    a = PeerSession(AuthKeyPool(tmp_path / "a", local_role="alice", bootstrap=boots[0]), 1)
    b = PeerSession(AuthKeyPool(tmp_path / "b", local_role="bob", bootstrap=boots[1]), 1)
    _, events = b.receive(a.hello())
    assert kinds(events) == [ss.REJECT_POOL_MISMATCH]


def test_frame_without_pad_is_a_bad_tag_not_a_crash(pair):
    a, b, _ = pair
    env = ev.Envelope(7, 1, 0, 1, 10**15, b"")
    frame = ev.encode(env, 1, 2)
    _, events = b.receive(frame)
    assert kinds(events) == [ss.REJECT_BAD_TAG] and "no pad" in events[0].detail
    assert b.pool.recv_floor == 0              # forged frames never move the floor

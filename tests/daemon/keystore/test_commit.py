"""LinkCommit and its messages: the exchanges of docs/keystore.md §4, byte layout, refusals."""

from __future__ import annotations

import hashlib
import struct
import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.keystore import messages as m
from daemon.keystore.commit import LinkCommit
from daemon.keystore.messages import CommitMsgType as T
from daemon.keystore.messages import Reason
from daemon.keystore.store import KeyStore

LINK = "L"


@pytest.fixture
def ends(tmp_path):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db", max_keys=100)
    yield (LinkCommit(a, LINK, coordinator=True, key_size_bits=64),
           LinkCommit(b, LINK, coordinator=False, key_size_bits=64))
    a.close()
    b.close()


def bits(n, seed=0):
    return np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)


def exchange(src, dst, msgs):
    """Deliver ``msgs`` from src to dst; return dst's replies."""
    out = []
    for t, p in msgs:
        out += dst.receive(t, p)
    return out


def test_happy_path_and_wiping(ends):
    A, B = ends
    key = bits(64 * 5 + 7)
    a_bits, b_bits = key.copy(), key.copy()
    B.expect(1)
    prep = A.block_done(1, a_bits)
    assert [t for t, _ in prep] == [T.PREPARE] and not a_bits.any()     # wiped once stored
    assert A.store.block_state(LINK, 1) == "prepared"
    assert exchange(A, B, prep) == []                                   # held: role running
    voted = B.block_done(1, b_bits)
    assert [t for t, _ in voted] == [T.PREPARED] and not b_bits.any()
    decided = exchange(B, A, voted)
    assert [t for t, _ in decided] == [T.COMMIT]
    assert A.store.block_state(LINK, 1) == "committed"                  # durable before sent
    assert B.store.block_state(LINK, 1) == "prepared"
    done = exchange(A, B, decided)
    assert done == [m.done(1, True)] and B.settled(1) == "committed"
    assert exchange(B, A, done) == [] and A._unacked == {}
    ids = A.store.block_key_ids(LINK, 1)
    assert len(ids) == 5 and ids == B.store.block_key_ids(LINK, 1)
    assert A.store.keys_digest(ids) == B.store.keys_digest(ids)
    # the stored bits follow the cutting rule: key i = bits [64 i, 64 i + 64), MSB first
    got = A.store._conn.execute("SELECT bits FROM keys WHERE key_id=?", (ids[2].bytes,))
    assert got.fetchone()[0] == np.packbits(key[128:192]).tobytes()


def test_prepare_payload_layout():
    ids = [uuid.UUID(int=i + 1) for i in range(3)]
    t, p = m.prepare(0x0102030405060708, 256, ids)
    assert t == 0xC1
    assert p[:16] == bytes.fromhex("0807060504030201" "00010000" "03000000")
    assert p[16:] == b"".join(k.bytes for k in ids)
    kind, body = m.decode(t, p)
    assert body.key_ids == tuple(ids) and body.tag == hashlib.sha256(p).digest()
    assert m.prepared(5, b"x" * 32) == (0xC2, struct.pack("<Q", 5) + b"x" * 32)
    assert m.refused(5, Reason.STORE_FULL) == (0xC3, struct.pack("<QB", 5, 3))
    assert m.abort(5, Reason.TIMEOUT) == (0xC5, struct.pack("<QB", 5, 5))
    assert m.done(5, True) == (0xC6, struct.pack("<QB", 5, 1))
    assert m.commit(5, b"x" * 32, 7) == (0xC4, struct.pack("<Q", 5) + b"x" * 32 +
                                         bytes.fromhex("0700000000000000"))
    assert m.commit(5, b"x" * 32)[1][40:] == b"\xff" * 8        # no refill
    assert m.decode(*m.commit(5, b"x" * 32, 7))[1].refill_index == 7
    assert m.decode(*m.commit(5, b"x" * 32))[1].refill_index is None
    with pytest.raises(m.CommitMessageError, match="COMMIT of 40 bytes: expected 48"):
        m.decode(0xC4, struct.pack("<Q", 5) + b"x" * 32)


@given(st.integers(0, 255), st.binary(max_size=80))
def test_decode_refuses_garbage_with_one_error_type(msg_type, payload):
    try:
        m.decode(msg_type, payload)
    except m.CommitMessageError as exc:
        assert "\n" not in str(exc)


def test_participant_without_key_refuses(ends):
    A, B = ends
    prep = A.block_done(2, bits(640))
    assert exchange(A, B, prep) == [m.refused(2, Reason.NO_KEY)]          # never expected
    assert exchange(B, A, [m.refused(2, Reason.NO_KEY)]) == []
    assert A.store.block_state(LINK, 2) == "discarded" and A.store.fill().keys == 0


def test_wrong_key_length_is_a_mismatch(ends):
    A, B = ends
    B.expect(3)
    B.block_done(3, bits(64 * 4))                                          # 4 keys, A cut 5
    replies = exchange(A, B, A.block_done(3, bits(64 * 5)))
    assert replies == [m.refused(3, Reason.MISMATCH)]
    assert B.store.block_state(LINK, 3) is None


def test_store_full_refuses_and_aborts(ends):
    A, B = ends
    B.expect(4)
    B.block_done(4, bits(64 * 101))
    assert exchange(A, B, A.block_done(4, bits(64 * 101))) == [m.refused(4, Reason.STORE_FULL)]
    assert B.counters["store_full"] == 1


def test_role_abort_answers_a_held_prepare(ends):
    A, B = ends
    B.expect(5)
    assert exchange(A, B, A.block_done(5, bits(640))) == []
    assert B.block_aborted(5) == [m.refused(5, Reason.NO_KEY)]
    assert B.block_done(5, bits(640)) == []                                 # late outcome dropped


def test_coordinator_times_out_then_presumes_abort(ends):
    A, B = ends
    prep = A.block_done(6, bits(640))
    assert A.on_timer() == prep and A.on_timer() == prep and A.on_timer() == prep
    assert A.on_timer() == [m.abort(6, Reason.TIMEOUT)]
    assert A.store.block_state(LINK, 6) == "discarded"
    # a late vote now gets ABORT, never COMMIT
    tag = hashlib.sha256(prep[0][1]).digest()
    assert A.receive(*m.prepared(6, tag)) == [m.abort(6, Reason.DISCARDED)]


def test_tag_mismatch_aborts(ends):
    A, B = ends
    A.block_done(7, bits(640))
    assert A.receive(*m.prepared(7, b"\0" * 32)) == [m.abort(7, Reason.MISMATCH)]


def test_restarts_recover(tmp_path):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    A = LinkCommit(a, LINK, coordinator=True, key_size_bits=64)
    B = LinkCommit(b, LINK, coordinator=False, key_size_bits=64)
    B.expect(8)
    B.block_done(8, bits(640))
    vote = exchange(A, B, A.block_done(8, bits(640)))
    # both restart: volatile state gone; A had not decided -> presumed abort at both ends
    A = LinkCommit(a, LINK, coordinator=True, key_size_bits=64)
    B = LinkCommit(b, LINK, coordinator=False, key_size_bits=64)
    assert B.recover() == vote                                              # asks again
    assert A.recover() == [m.abort(8, Reason.RECOVERED)]
    assert exchange(B, A, vote) == [m.abort(8, Reason.DISCARDED)]
    assert exchange(A, B, [m.abort(8, Reason.RECOVERED)]) == [m.done(8, False)]
    assert a.block_state(LINK, 8) == b.block_state(LINK, 8) == "discarded"
    assert a.fill().keys == b.fill().keys == 0
    a.close()
    b.close()


def test_bad_and_misdirected_messages_are_counted(ends):
    A, B = ends
    assert A.receive(0xC1, b"short") == [] and A.counters["bad_message"] == 1
    assert A.receive(*m.prepare(1, 64, [uuid.uuid4()])) == []                # not for A
    assert A.counters["violation"] == 1
    assert B.receive(*m.commit(9, b"t" * 32)) == [] and B.counters["violation"] == 1


def test_participant_drops_keys_waiting_for_a_prepare_when_the_coordinator_restarts(ends):
    """A key waiting for its PREPARE when the coordinator restarts would count as in flight
    for the whole block timeout, though a new coordinator never prepares what it had not
    prepared before its crash: it is dropped (wiped) at once, and a stray PREPARE refused."""
    A, B = ends
    key = bits(64 * 3)
    a_bits, b_bits = key.copy(), key.copy()
    B.expect(7)
    assert B.block_done(7, b_bits) == []              # no PREPARE yet: the key waits
    assert B.in_progress(7) and b_bits.any()
    A.peer_restarted()                                 # a coordinator ignores it
    B.peer_restarted()
    assert not B.in_progress(7) and B.settled(7) is None and not b_bits.any()
    assert B.counters["dropped_at_peer_restart"] == 1
    prep = A.block_done(7, a_bits)                     # the old coordinator's PREPARE, late
    assert exchange(A, B, prep) == [m.refused(7, Reason.NO_KEY)]
    assert B.store.block_info(LINK, 7) is None

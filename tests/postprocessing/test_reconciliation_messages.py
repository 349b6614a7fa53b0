"""Cascade messages: byte round trips, malformed input rejected with MessageError, and
the roles refusing messages that do not fit the session."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from postprocessing.reconciliation import messages
from postprocessing.reconciliation import (CascadeAlice, CascadeBob, CascadeSetup,
                                           FrameQuestions, MessageError, ParityReply,
                                           ParityRequest, decode)

ranges_st = st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2**31 - 2),
                               st.integers(1, 2**31 - 1)), max_size=20).map(
    lambda rows: np.array([(p, min(lo, hi - 1), hi) for p, lo, hi in rows],
                          dtype=np.int64).reshape(-1, 3))
questions_st = st.builds(FrameQuestions, st.integers(-1, 63), ranges_st)
bits_st = st.lists(st.integers(0, 1), max_size=70).map(lambda b: np.array(b, dtype=np.uint8))


@given(seed=st.integers(0, 2**64 - 1), sid=st.integers(0, 255),
       qber=st.floats(0, 0.5), frames=st.lists(st.integers(1, 2**32 - 1), max_size=10))
def test_setup_round_trip(seed, sid, qber, frames):
    msg = CascadeSetup(seed, sid, qber, tuple(frames))
    assert CascadeSetup.from_bytes(msg.to_bytes()) == msg
    assert decode(msg.to_bytes()) == msg


@given(rnd=st.integers(0, 2**32 - 1), frames=st.lists(questions_st, max_size=5))
def test_request_round_trip(rnd, frames):
    msg = ParityRequest.from_frames(rnd, frames)
    back = ParityRequest.from_bytes(msg.to_bytes())
    assert back == msg
    assert back.frames == tuple(frames)


@given(rnd=st.integers(0, 2**32 - 1), frames=st.lists(bits_st, max_size=5))
def test_reply_round_trip_and_bit_count(rnd, frames):
    msg = ParityReply.from_frames(rnd, frames)
    back = ParityReply.from_bytes(msg.to_bytes())
    assert back.round == rnd
    assert [f.tolist() for f in back.frames] == [f.tolist() for f in frames]
    assert back.n_parity_bits == sum(len(f) for f in frames)


@given(rnd=st.integers(0, 100), frames=st.lists(questions_st, min_size=1, max_size=3),
       data=st.data())
def test_every_truncation_of_a_request_is_rejected(rnd, frames, data):
    raw = ParityRequest.from_frames(rnd, frames).to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MessageError):
        ParityRequest.from_bytes(raw[:cut])


@given(frames=st.lists(bits_st, min_size=1, max_size=3), data=st.data())
def test_every_truncation_of_a_reply_is_rejected(frames, data):
    raw = ParityReply.from_frames(1, frames).to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MessageError):
        ParityReply.from_bytes(raw[:cut])


def _reference_outcome(explain, raw):
    try:
        return explain(raw)
    except MessageError as exc:
        return exc


def _mutated(raw: bytes, data) -> bytes:
    """raw with a few bytes overwritten (type/version kept), cut or extended."""
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 3))):
        if len(out) > 2:
            out[data.draw(st.integers(2, len(out) - 1))] = data.draw(st.integers(0, 255))
    action = data.draw(st.sampled_from(["keep", "cut", "extend"]))
    if action == "cut":
        out = out[:data.draw(st.integers(0, len(out)))]
    elif action == "extend":
        out += data.draw(st.binary(min_size=1, max_size=9))
    return bytes(out)


@given(rnd=st.integers(0, 2**32 - 1), frames=st.lists(questions_st, max_size=4),
       data=st.data())
def test_fast_request_decoder_agrees_with_the_reference(rnd, frames, data):
    # the numba parser accepts exactly what the numpy reference decoder accepts, with the
    # same content, and a rejected message raises the reference decoder's MessageError
    raw = _mutated(ParityRequest.from_frames(rnd, frames).to_bytes(), data)
    expected = _reference_outcome(messages._explain_request, raw)
    if isinstance(expected, MessageError):
        with pytest.raises(MessageError) as got:
            ParityRequest.from_bytes(raw)
        assert str(got.value) == str(expected)
    else:
        assert ParityRequest.from_bytes(raw) == expected


@given(rnd=st.integers(0, 2**32 - 1), frames=st.lists(bits_st, max_size=4), data=st.data())
def test_fast_reply_decoder_agrees_with_the_reference(rnd, frames, data):
    raw = _mutated(ParityReply.from_frames(rnd, frames).to_bytes(), data)
    expected = _reference_outcome(messages._explain_reply, raw)
    if isinstance(expected, MessageError):
        with pytest.raises(MessageError) as got:
            ParityReply.from_bytes(raw)
        assert str(got.value) == str(expected)
    else:
        got = ParityReply.from_bytes(raw)
        assert got.round == expected.round
        assert np.array_equal(got.counts, expected.counts)
        assert np.array_equal(got.bits, expected.bits)


@given(junk=st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(junk):
    try:
        decode(junk)
    except MessageError:
        pass


def _reply_bytes(n_bits, payload):
    return struct.pack("<BBIII", 3, 1, 1, 1, n_bits) + payload


def _request_bytes(new_pass, n_ranges, *ranges):
    head = struct.pack("<BBIIbI", 2, 1, 1, 1, new_pass, n_ranges)
    return head + b"".join([bytes(r[0] for r in ranges)]
                           + [struct.pack(f"<{len(ranges)}I", *(r[c] for r in ranges))
                              for c in (1, 2)])


@pytest.mark.parametrize("raw, fragment", [
    (b"", "empty"),
    (b"\x09\x01", "unknown type"),
    (bytes([3, 2]) + bytes(8), "version"),
    (ParityReply.from_frames(1, (np.ones(3, np.uint8),)).to_bytes() + b"\x00", "holds"),
    (_reply_bytes(3, b"\xff"), "padding"),
    (_reply_bytes(9, b"\xff"), "holds"),
    (struct.pack("<BBIII", 3, 1, 1, 2, 0), "truncated"),
    (_request_bytes(-2, 0), "new pass"),
    (_request_bytes(0, 1, (0, 5, 5)), "empty"),
    (_request_bytes(0, 1, (64, 0, 5)), "pass"),
    (_request_bytes(0, 1000), "range counts"),
    (_request_bytes(0, 1, (0, 0, 5)) + b"\x00", "range counts"),
    (struct.pack("<BBII", 2, 1, 1, 3) + b"\x00", "truncated"),
    (struct.pack("<BBQBdI", 1, 1, 5, 2, float("nan"), 0), "finite"),
    (struct.pack("<BBQBdII", 1, 1, 5, 2, 0.02, 1, 0), "0 bits"),
    (struct.pack("<BBQBdII", 1, 1, 5, 2, 0.02, 1, 7) + b"\x00", "trailing"),
])
def test_malformed_messages_raise_message_error(raw, fragment):
    with pytest.raises(MessageError, match=fragment):
        decode(raw)


def test_decode_rejects_non_bytes():
    with pytest.raises(MessageError):
        decode("not bytes")


# ---------------------------------------------------------------- session checks in the roles

def _session(n=1000, qber=0.03):
    rng = np.random.default_rng(0)
    alice_bits = rng.integers(0, 2, n, dtype=np.uint8)
    alice = CascadeAlice([alice_bits])
    bob = CascadeBob([alice_bits.copy()], qber, "yan", seed=1)
    return alice, bob


def test_alice_refuses_requests_before_setup():
    alice, bob = _session()
    with pytest.raises(MessageError, match="before CascadeSetup"):
        alice.handle_request(bob.start())


@pytest.mark.parametrize("setup, fragment", [
    (CascadeSetup(1, 99, 0.03, (1000,)), "schedule id"),
    (CascadeSetup(1, 2, 0.03, (999,)), "frames of"),
    (CascadeSetup(1, 2, 0.9, (1000,)), "QBER"),
])
def test_alice_refuses_a_setup_that_does_not_fit(setup, fragment):
    alice, _ = _session()
    with pytest.raises(MessageError, match=fragment):
        alice.handle_setup(setup)


@pytest.mark.parametrize("frames, fragment", [
    # "yan" on 1000 bits at 3 % has 25 passes (10, a tail on label bits 3-9, one on bits 0-7 of
    # the second pass's positions): 25 is one too many
    ((FrameQuestions(25, np.zeros((0, 3), np.int64)),), "frame 0 asks for a pass outside"),
    ((FrameQuestions(-1, np.array([[0, 0, 1001]])),), "range outside positions"),
    ((FrameQuestions(-1, np.array([[25, 0, 5]])),), "range outside positions"),
    ((FrameQuestions(-1, np.zeros((0, 3), np.int64)),) * 2, "covers 2 frames"),
    ((FrameQuestions(-1, np.array([[0, 5, 3]])),), "range outside positions"),
])
def test_alice_refuses_questions_outside_the_session(frames, fragment):
    alice, bob = _session()
    alice.handle_setup(bob.setup())
    with pytest.raises(MessageError, match=fragment):
        alice.handle_request(ParityRequest.from_frames(1, frames))
    assert alice.disclosed_bits == [0]  # nothing disclosed by a refused request


def test_alice_refuses_negative_range_counts():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 2, 1000, dtype=np.uint8) for _ in range(2)]
    alice = CascadeAlice(frames)
    alice.handle_setup(CascadeBob([f.copy() for f in frames], 0.03, "yan", seed=1).setup())
    row = np.array([[0, 0, 5]], dtype=np.int64)
    # counts 2 and -1 add up to the one range the request holds
    request = ParityRequest(1, np.array([-1, -1]), np.array([2, -1]), row)
    with pytest.raises(MessageError, match="frame 1 asks"):
        alice.handle_request(request)
    with pytest.raises(MessageError, match="adding up"):
        alice.handle_request(ParityRequest(1, np.array([-1, -1]), np.array([1, 1]), row))
    assert alice.disclosed_bits == [0, 0]


def test_alice_refuses_a_replayed_round():
    alice, bob = _session()
    alice.handle_setup(bob.setup())
    request = bob.start()
    alice.handle_request(request)
    with pytest.raises(MessageError, match="round"):
        alice.handle_request(request)


def test_bob_refuses_replies_that_do_not_match_his_request():
    alice, bob = _session()
    alice.handle_setup(bob.setup())
    request = bob.start()
    reply = alice.handle_request(request)
    with pytest.raises(MessageError, match="round"):
        bob.handle_reply(ParityReply.from_frames(reply.round + 1, reply.frames))
    with pytest.raises(MessageError, match="parity bits"):
        bob.handle_reply(ParityReply.from_frames(reply.round, (reply.frames[0][:-1],)))
    with pytest.raises(MessageError, match="frames"):
        bob.handle_reply(ParityReply.from_frames(reply.round, reply.frames * 2))
    with pytest.raises(MessageError, match="adding up"):
        bob.handle_reply(ParityReply(reply.round, reply.counts, reply.bits[:-1]))
    with pytest.raises(MessageError, match="parity bits"):  # a negative count
        bob.handle_reply(ParityReply(reply.round, reply.counts * 0 - 1, reply.bits[:0]))
    assert bob.handle_reply(reply) is not None  # the genuine reply still works


def test_bob_refuses_an_unrequested_reply():
    _, bob = _session()
    with pytest.raises(MessageError, match="no request"):
        bob.handle_reply(ParityReply.from_frames(0, (np.zeros(0, np.uint8),)))

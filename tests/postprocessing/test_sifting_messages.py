"""Sifting messages: byte round-trips and rejection of malformed input with a typed error."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.bits import BitsError, pack_bits, unpack_bits
from postprocessing.sifting import SiftAnnouncement, SiftAnswer, SiftMessageError


def announcements():
    return st.builds(
        lambda proto, gaps, bases: SiftAnnouncement(
            proto,
            np.cumsum(np.array(gaps, np.int64)),
            np.array(bases[:len(gaps)] + [0] * (len(gaps) - len(bases)), np.uint8)
            if proto == "bb84" else np.zeros(0, np.uint8)),
        st.sampled_from(["bb84", "b92"]),
        st.lists(st.integers(1, 2**40), max_size=50),
        st.lists(st.integers(0, 1), max_size=50))


def answers():
    return st.builds(
        lambda proto, rows: SiftAnswer(proto, np.array([k for k, _ in rows], np.uint8),
                                       np.array([t for k, t in rows if k], np.uint8)),
        st.sampled_from(["bb84", "b92"]),
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), max_size=70))


@settings(max_examples=80)
@given(announcements())
def test_announcement_round_trip(ann):
    back = SiftAnnouncement.from_bytes(ann.to_bytes())
    assert back.protocol == ann.protocol
    np.testing.assert_array_equal(back.slots, ann.slots)
    np.testing.assert_array_equal(back.basis, ann.basis)
    assert back.slots.dtype == np.int64 and back.basis.dtype == np.uint8


@settings(max_examples=80)
@given(answers())
def test_answer_round_trip(ans):
    back = SiftAnswer.from_bytes(ans.to_bytes())
    assert back.protocol == ans.protocol
    np.testing.assert_array_equal(back.keep, ans.keep)
    np.testing.assert_array_equal(back.intensity, ans.intensity)


@settings(max_examples=80)
@given(announcements(), st.data())
def test_truncated_or_extended_announcement_rejected(ann, data):
    raw = ann.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(SiftMessageError):
        SiftAnnouncement.from_bytes(raw[:cut])
    with pytest.raises(SiftMessageError):
        SiftAnnouncement.from_bytes(raw + b"\x00")


@settings(max_examples=80)
@given(answers(), st.data())
def test_truncated_answer_rejected(ans, data):
    raw = ans.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(SiftMessageError):
        SiftAnswer.from_bytes(raw[:cut])


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_garbage_never_escapes_as_other_error(raw):
    for cls in (SiftAnnouncement, SiftAnswer):
        try:
            cls.from_bytes(raw)
        except SiftMessageError:
            pass


def _ann(slots, basis, proto="bb84"):
    return SiftAnnouncement(proto, np.array(slots, np.int64), np.array(basis, np.uint8))


def _patch(raw, offset, fmt, value):
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: b"XXXX" + r[4:], "magic"),
    (lambda r: _patch(r, 4, "<B", 9), "version"),
    (lambda r: _patch(r, 5, "<B", 77), "protocol"),
    (lambda r: _patch(r, 6, "<H", 1), "reserved"),
    (lambda r: _patch(r, 8, "<Q", 2**40), "count"),
    (lambda r: _patch(r, 16 + 8, "<q", 3), "increasing"),  # second slot below the first
    (lambda r: _patch(r, 16, "<q", -1), "negative"),
    (lambda r: r[:-1] + bytes([r[-1] | 0x01]), "padding"),  # 3 bases: low bits are padding
])
def test_malformed_announcement_rejected(mutate, match):
    raw = _ann([10, 20, 30], [1, 0, 1]).to_bytes()
    with pytest.raises(SiftMessageError, match=match):
        SiftAnnouncement.from_bytes(mutate(raw))


def test_malformed_answer_rejected():
    raw = SiftAnswer("bb84", np.array([1, 0, 1], np.uint8), np.array([0, 2], np.uint8)).to_bytes()
    with pytest.raises(SiftMessageError, match="intensity"):
        SiftAnswer.from_bytes(raw[:-1] + b"\x03")
    with pytest.raises(SiftMessageError, match="magic"):
        SiftAnswer.from_bytes(SiftAnnouncement("b92", np.zeros(0, np.int64),
                                               np.zeros(0, np.uint8)).to_bytes())
    with pytest.raises(SiftMessageError, match="bytes"):
        SiftAnswer.from_bytes("not bytes")


@pytest.mark.parametrize("ann", [
    SiftAnnouncement("bb84", np.array([1, 2], np.int64), np.array([0], np.uint8)),
    SiftAnnouncement("b92", np.array([1, 2], np.int64), np.array([0, 1], np.uint8)),
    SiftAnnouncement("bb84", np.array([1, 2], np.int32), np.array([0, 1], np.uint8)),
    SiftAnnouncement("bb84", np.array([1, 2], np.int64), np.array([0, 2], np.uint8)),
    SiftAnnouncement("e91", np.array([1], np.int64), np.array([0], np.uint8)),
])
def test_inconsistent_announcement_cannot_be_encoded(ann):
    with pytest.raises(SiftMessageError):
        ann.to_bytes()


@settings(max_examples=80)
@given(st.lists(st.integers(0, 1), max_size=100))
def test_pack_unpack_round_trip(bits):
    arr = np.array(bits, np.uint8)
    packed = pack_bits(arr)
    assert packed.size == (len(bits) + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, len(bits)), arr)
    # big-endian bit order: the first bit is the MSB of byte 0
    if bits:
        assert (packed[0] >> 7) == bits[0]


def test_bits_errors():
    with pytest.raises(BitsError):
        pack_bits(np.array([0, 2], np.uint8))
    with pytest.raises(BitsError):
        unpack_bits(np.array([0xFF], np.uint8), 3)  # non-zero padding
    with pytest.raises(BitsError):
        unpack_bits(np.array([0, 0], np.uint8), 3)  # wrong byte count

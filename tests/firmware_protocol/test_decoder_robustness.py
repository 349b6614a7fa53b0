"""Bad payloads with valid CRCs never break the decoder (issue 7, defect 1).

A frame that passes both CRC checks can still carry any payload a glitching board produces. For
every message type and every payload length up to past the type's fixed part, the decoder must
return a message or an anomaly record, never raise, and decode a good frame afterwards.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import firmware_protocol as fp
from tests.firmware_protocol.strategies import MESSAGES

TYPES = sorted(fp.MESSAGE_TYPES.values(), key=lambda c: c.TYPE)
GOOD = fp.Heartbeat(0xC0FFEE)
MAX_EXHAUSTIVE_LEN = 80   # every fixed part is <= 24 bytes; strings add a length byte each


def _check_not_poisoned(dec: fp.Decoder, frame: bytes) -> None:
    out = dec.feed(frame)
    assert len(out) == 1
    assert isinstance(out[0], (fp.Message, fp.ProtocolAnomaly))
    assert dec.buffered_bytes == 0
    assert dec.feed(fp.encode_frame(GOOD.TYPE, 1, GOOD.pack_payload())) == [GOOD]
    assert dec.buffered_bytes == 0


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_every_payload_length_with_valid_crcs(cls):
    rng = random.Random(cls.TYPE)
    for length in range(MAX_EXHAUSTIVE_LEN + 1):
        for fill in (0x00, 0xFF, None, None, None):
            payload = bytes(rng.getrandbits(8) for _ in range(length)) if fill is None \
                else bytes([fill]) * length
            _check_not_poisoned(fp.Decoder(), fp.encode_frame(cls.TYPE, 7, payload))


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_mutated_valid_payloads(cls):
    """Truncated, extended and overwritten versions of real payloads, CRCs recomputed: these
    reach the parsers' inner fields (string and array lengths) that random bytes rarely do."""
    @settings(max_examples=60, deadline=None)
    @given(MESSAGES[cls], st.data())
    def check(msg, data):
        payload = bytearray(b"".join(bytes(memoryview(p).cast("B")) for p in msg.pack_payload()))
        cut = data.draw(st.integers(0, len(payload)))
        tail = data.draw(st.binary(max_size=12))
        mutated = payload[:cut] + tail
        for i in data.draw(st.lists(st.integers(0, max(0, len(mutated) - 1)), max_size=4)):
            if mutated:
                mutated[i] = data.draw(st.integers(0, 255))
        _check_not_poisoned(fp.Decoder(), fp.encode_frame(cls.TYPE, 9, bytes(mutated)))
    check()


@pytest.mark.parametrize("payload", [struct.pack("<BxI", 1, 0), struct.pack("<BxI", 1, 0) + b"\x00",
                                     struct.pack("<BxI", 1, 0) + b"\x00\x00"],
                         ids=["6 bytes", "7 bytes", "8 bytes"])
def test_identify_reply_strings_past_the_end_are_a_record(payload):
    """The reproduction from the issue: strings read past a 6-8 byte IdentifyReply payload."""
    dec = fp.Decoder()
    out = dec.feed(fp.encode_frame(fp.IdentifyReply.TYPE, 0, payload))
    assert len(out) == 1 and isinstance(out[0], fp.MalformedPayload)
    assert "past the payload end" in out[0].reason
    _check_not_poisoned(dec, fp.Encoder().encode(fp.IdentifyRequest()))


def test_nack_of_seven_bytes_is_a_record():
    out = fp.Decoder().feed(fp.encode_frame(fp.Nack.TYPE, 0, struct.pack("<IBH", 1, 2, 3)))
    assert len(out) == 1 and isinstance(out[0], fp.MalformedPayload)


def test_a_parser_bug_becomes_a_record_not_an_exception(monkeypatch):
    """Whatever a parser raises, feed() returns a record and drops the frame's bytes."""
    def broken(view):
        raise IndexError("a parser bug")
    monkeypatch.setattr(fp.Heartbeat, "unpack_payload", classmethod(lambda cls, v: broken(v)))
    dec = fp.Decoder()
    out = dec.feed(fp.Encoder().encode(fp.Heartbeat(1)))
    assert len(out) == 1 and isinstance(out[0], fp.MalformedPayload)
    assert "IndexError" in out[0].reason and dec.buffered_bytes == 0

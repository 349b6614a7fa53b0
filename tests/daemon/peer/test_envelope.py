"""The peer envelope: round trips, every malformation as a typed record, bit flips caught by
the Wegman-Carter tag, and the worked example of docs/peer-protocol.md."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.peer import envelope as ev
from postprocessing.gf2.field64 import FIELD64_POLY_LOW, poly_hash64, poly_hash_gf2k

DOC = Path(__file__).resolve().parents[3] / "docs" / "peer-protocol.md"


def keys_for(seq: int) -> tuple[int, int]:
    """A stand-in for the pool in codec tests: a fixed hash key and a pad per seq."""
    h = hashlib.sha256(b"test pad %d" % seq).digest()
    return 0x9E3779B97F4A7C15, int.from_bytes(h[:8], "little")


def encode(env: ev.Envelope) -> bytes:
    return ev.encode(env, *keys_for(env.seq))


envelopes = st.builds(
    ev.Envelope,
    link_id=st.integers(0, ev.U32_MAX), block_id=st.integers(0, ev.U64_MAX),
    step=st.integers(0, ev.U32_MAX), msg_type=st.integers(0, 255),
    seq=st.integers(0, ev.U64_MAX), payload=st.binary(max_size=300),
    kind=st.sampled_from(ev.KINDS))


@given(envelopes)
def test_round_trip(env):
    frame = encode(env)
    assert len(frame) == ev.OVERHEAD + len(env.payload)
    assert ev.decode(frame, keys_for) == env


@given(envelopes, st.data())
def test_any_flipped_bit_is_rejected(env, data):
    frame = bytearray(encode(env))
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    out = ev.decode(bytes(frame), keys_for)
    assert isinstance(out, ev.DecodeError)
    if bit >= 8 * 8 + 32:        # past the fields that are checked for their own sake
        assert isinstance(out, ev.BadTag) or (isinstance(out, (ev.PayloadTooLarge,
                                                                ev.LengthMismatch))
                                                and 8 * 32 <= bit < 8 * 36)


@given(envelopes, st.data())
def test_truncated_or_extended_frames_are_rejected(env, data):
    frame = encode(env)
    cut = data.draw(st.integers(0, len(frame) - 1))
    out = ev.decode(frame[:cut], keys_for)
    assert isinstance(out, (ev.TooShort, ev.LengthMismatch))
    extra = data.draw(st.binary(min_size=1, max_size=16))
    assert isinstance(ev.decode(frame + extra, keys_for), ev.LengthMismatch)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200),
                 st.binary(max_size=200).map(lambda b: ev.MAGIC + bytes([1]) + b)))
def test_arbitrary_bytes_never_raise(blob):
    out = ev.decode(blob, keys_for)
    assert isinstance(out, (ev.DecodeError, ev.Envelope))
    assert not isinstance(out, ev.Envelope)     # a random 64-bit tag verifies w.p. 2^-64


def test_wrong_pad_or_key_fails():
    env = ev.Envelope(1, 2, 3, 4, 5, b"payload")
    frame = encode(env)
    key, pad = keys_for(5)
    assert isinstance(ev.decode(frame, lambda s: (key, pad ^ 1)), ev.BadTag)
    assert isinstance(ev.decode(frame, lambda s: (key ^ 1, pad)), ev.BadTag)
    assert isinstance(ev.decode(frame, lambda s: None), ev.BadTag)


@pytest.mark.parametrize("frame_edit, error", [
    (lambda f: b"QKDX" + f[4:], ev.BadMagic),
    (lambda f: f[:4] + b"\x02" + f[5:], ev.UnsupportedVersion),
    (lambda f: f[:5] + b"\x07" + f[6:], ev.UnknownKind),
    (lambda f: f[:7] + b"\x01" + f[8:], ev.ReservedFlags),
    (lambda f: f[:32] + struct.pack("<I", ev.MAX_PAYLOAD_BYTES + 1) + f[36:], ev.PayloadTooLarge),
    (lambda f: f[:32] + struct.pack("<I", 3) + f[36:], ev.LengthMismatch),
    (lambda f: f[:10], ev.TooShort),
])
def test_each_structural_error_has_its_type(frame_edit, error):
    frame = encode(ev.Envelope(1, 2, 3, 4, 5, b"payload"))
    out = ev.decode(frame_edit(frame), keys_for)
    assert type(out) is error
    assert out.reason


def test_decode_of_a_non_buffer_is_a_record_not_an_exception():
    assert isinstance(ev.decode(12345, keys_for), ev.TooShort)


@pytest.mark.parametrize("field, value", [("link_id", 2**32), ("block_id", -1), ("step", 2**32),
                                          ("msg_type", 256), ("seq", 2**64), ("kind", 9)])
def test_encode_refuses_out_of_range_fields(field, value):
    fields = dict(link_id=1, block_id=2, step=3, msg_type=4, seq=5, payload=b"", kind=0)
    fields[field] = value
    with pytest.raises(ev.EnvelopeValueError, match=field):
        ev.authenticated_bytes(ev.Envelope(**fields))


@given(st.binary(max_size=100), st.integers(0, ev.U64_MAX))
def test_tag_is_the_field64_polynomial_hash(data, key):
    """The byte kernel equals poly_hash64 over the documented words and the slow generic
    shift-and-add field multiply (an independent implementation of the same field)."""
    words = ev.tag_words(data)
    expected = int(poly_hash64(words, np.array([key], dtype=np.uint64))[0])
    assert ev.compute_tag(data, key, 0) == expected
    assert int(poly_hash_gf2k(words, np.uint64(key), 64, FIELD64_POLY_LOW)) == expected
    assert ev.compute_tag(data, key, 0xDEAD) == expected ^ 0xDEAD


# -- the worked example of docs/peer-protocol.md ------------------------------------------------

EXAMPLE = ev.Envelope(link_id=1, block_id=42, step=3, msg_type=0x21, seq=5, payload=b"parity")
EXAMPLE_KEY = 0x0123456789ABCDEF
EXAMPLE_PAD = 0xFEDCBA9876543210


def example_hex() -> str:
    frame = ev.encode(EXAMPLE, EXAMPLE_KEY, EXAMPLE_PAD)
    return "\n".join(frame[i:i + 16].hex(" ") for i in range(0, len(frame), 16))


def doc_section(name: str) -> str:
    m = re.search(rf"```text {name}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/peer-protocol.md has no ```text {name} block"
    return m.group(1).strip()


def test_doc_example_frame_is_what_the_codec_writes():
    assert doc_section("example-frame") == example_hex()


def test_doc_example_decodes_as_stated():
    frame = bytes.fromhex(doc_section("example-frame").replace("\n", " "))
    stated = dict(re.findall(r"^(\w+) += (\S+)$", doc_section("example-fields"), re.M))
    key, pad = int(stated.pop("hash_key"), 0), int(stated.pop("pad"), 0)
    tag, hashed = int(stated.pop("tag"), 0), int(stated.pop("hash"), 0)
    payload = stated.pop("payload").encode()
    out = ev.decode(frame, lambda seq: (key, pad))
    assert out == ev.Envelope(**{k: int(v, 0) for k, v in stated.items()}, payload=payload)
    assert frame[-8:] == struct.pack("<Q", tag)
    assert hashed ^ pad == tag
    assert ev.compute_tag(frame[:-8], key, 0) == hashed

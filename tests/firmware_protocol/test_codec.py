"""Round trips, stream splitting, resynchronisation and corruption detection of the board codec."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import firmware_protocol as fp
from firmware_protocol.framing import HEADER
from tests.firmware_protocol.strategies import MESSAGES, any_message, event_batches


def decode_all(data: bytes, decoder: fp.Decoder | None = None) -> list:
    return (decoder or fp.Decoder()).feed(data)


def test_crc_is_crc32_iso_hdlc():
    assert fp.crc32(b"123456789") == 0xCBF43926


def test_every_message_type_has_a_strategy():
    assert set(MESSAGES) == set(fp.MESSAGE_TYPES.values())


@pytest.mark.parametrize("cls", sorted(MESSAGES, key=lambda c: c.TYPE), ids=lambda c: c.__name__)
def test_round_trip_each_type(cls):
    @settings(max_examples=40)
    @given(MESSAGES[cls], st.integers(0, 2**32 - 1))
    def check(msg, first_seq):
        enc = fp.Encoder(first_seq)
        frame = enc.encode(msg)
        dec = fp.Decoder()
        out = dec.feed(frame)
        assert out == [msg]
        assert out[0].seq == first_seq
        assert dec.stats == fp.DecoderStats(frames_ok=1,
                                            bytes_hashed=len(frame) - fp.FRAME_OVERHEAD)
        assert dec.buffered_bytes == 0

    check()


def test_sequence_numbers_increment_and_wrap():
    enc = fp.Encoder(2**32 - 2)
    seqs = [d.seq for d in fp.Decoder().feed(b"".join(enc.encode(fp.Heartbeat(i)) for i in range(4)))]
    assert seqs == [2**32 - 2, 2**32 - 1, 0, 1]


def test_event_words_layout():
    batch = fp.EventBatch(7, 1000, 5000, np.array([1000, 1003, 4999]), np.array([2, 7, 63], np.uint8))
    frame = fp.Encoder().encode(batch)
    words = np.frombuffer(frame, "<u8", 3, fp.HEADER_SIZE + 24)
    assert words.tolist() == [(0 << 6) | 2, (3 << 6) | 7, (3999 << 6) | 63]


@pytest.mark.parametrize("bad", [
    dict(timestamps_ps=np.array([999]), channels=np.array([0], np.uint8)),     # before t_start
    dict(timestamps_ps=np.array([5000]), channels=np.array([0], np.uint8)),    # at t_end
    dict(timestamps_ps=np.array([1001]), channels=np.array([64])),             # channel > 63
    dict(timestamps_ps=np.array([1001, 1002]), channels=np.array([1], np.uint8)),
])
def test_event_batch_encoder_refuses_out_of_range(bad):
    with pytest.raises(ValueError):
        fp.Encoder().encode(fp.EventBatch(0, 1000, 5000, **bad))


@settings(max_examples=30)
@given(st.lists(any_message, min_size=1, max_size=6), st.data())
def test_any_split_of_a_stream(msgs, data):
    stream = b"".join(fp.Encoder().encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    dec = fp.Decoder()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += dec.feed(stream[a:b])
    assert out == msgs
    assert dec.stats.frames_ok == len(msgs) and dec.stats.bytes_discarded == 0


def test_every_split_point_of_a_multi_frame_stream():
    msgs = [fp.Heartbeat(1), fp.PatternReply(3, np.arange(9, dtype=np.uint8)),
            fp.EventBatch(0, 10, 90, np.array([10, 20, 30]), np.array([0, 1, 7], np.uint8)),
            fp.StopAcquisition()]
    stream = b"".join(fp.Encoder().encode(m) for m in msgs)
    for cut in range(len(stream) + 1):
        dec = fp.Decoder()
        assert dec.feed(stream[:cut]) + dec.feed(stream[cut:]) == msgs, cut
    dec = fp.Decoder()
    assert [m for i in range(len(stream)) for m in dec.feed(stream[i:i + 1])] == msgs


@settings(max_examples=60)
@given(st.lists(st.tuples(st.binary(max_size=64), any_message), min_size=1, max_size=5),
       st.binary(max_size=64))
def test_random_garbage_between_frames(pairs, tail):
    enc = fp.Encoder()
    stream = b"".join(g + enc.encode(m) for g, m in pairs) + tail
    dec = fp.Decoder()
    out = dec.feed(stream) + dec.feed()
    assert out == [m for _, m in pairs]
    assert dec.stats.frames_ok == len(pairs)
    # Everything that was not a delivered frame is either counted as discarded or still waiting.
    frames_len = sum(len(enc_m) for enc_m in (fp.Encoder().encode(m) for _, m in pairs))
    assert dec.stats.bytes_discarded + dec.buffered_bytes == len(stream) - frames_len


@settings(max_examples=40)
@given(any_message, any_message, st.data())
def test_truncated_frame_then_good_frame(first, second, data):
    enc = fp.Encoder()
    cut_frame = enc.encode(first)
    cut = data.draw(st.integers(1, len(cut_frame) - 1))
    good = enc.encode(second)
    dec = fp.Decoder()
    out = dec.feed(cut_frame[:cut] + good)
    # If the cut-off header claims more bytes than follow, the decoder waits for them (bounded by
    # the length guard); then the CRC fails and it rescans inside, finding the frames that follow.
    beat = fp.Heartbeat(99)
    pad = fp.PatternReply(0, np.zeros(len(cut_frame) + 64, np.uint8))
    out += dec.feed(enc.encode(beat))
    out += dec.feed(enc.encode(pad))
    assert out == [second, beat, pad]
    assert dec.stats.frames_ok == 3
    assert dec.stats.bytes_discarded == cut


def test_every_single_bit_flip_of_a_small_frame_is_detected():
    msg = fp.PatternReply(5, np.arange(16, dtype=np.uint8))
    frame = fp.Encoder(41).encode(msg)
    follower = fp.Encoder(42).encode(fp.Heartbeat(7))
    for bit in range(8 * len(frame)):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        dec = fp.Decoder()
        out = dec.feed(bytes(damaged) + follower)
        assert out == [fp.Heartbeat(7)], bit
        assert dec.stats.frames_corrupt + dec.stats.bytes_discarded > 0


@settings(max_examples=300)
@given(st.sets(st.integers(0, 8 * 60 - 1), min_size=2, max_size=4))
def test_multiple_bit_flips_are_detected(bits):
    # CRC-32 has Hamming distance >= 5 for frames this short, so up to 4 flips are always caught.
    msg = fp.PatternReply(5, np.arange(28, dtype=np.uint8))
    frame = fp.Encoder(41).encode(msg)
    assert len(frame) == 60
    damaged = bytearray(frame)
    for bit in bits:
        damaged[bit // 8] ^= 1 << (bit % 8)
    dec = fp.Decoder()
    assert dec.feed(bytes(damaged) + fp.Encoder().encode(fp.Heartbeat(1))) == [fp.Heartbeat(1)]


def test_burst_errors_up_to_32_bits_are_detected():
    frame = fp.Encoder().encode(fp.PatternReply(1, np.arange(200, dtype=np.uint8)))
    rng = np.random.default_rng(1)
    for _ in range(300):
        start = int(rng.integers(fp.HEADER_SIZE * 8, 8 * len(frame) - 32))
        damaged = bytearray(frame)
        length = int(rng.integers(1, 33))
        for bit in range(start, start + length):
            if bit in (start, start + length - 1) or rng.random() < 0.5:
                damaged[bit // 8] ^= 1 << (bit % 8)
        assert fp.Decoder().feed(bytes(damaged)) == []


def _frame_with(version=fp.PROTOCOL_VERSION, msg_type=0x03, seq=5, payload=b"\x01\x00\x00\x00",
                length=None):
    head = HEADER.pack(fp.SYNC_WORD, version, msg_type, 0, seq,
                       len(payload) if length is None else length)
    return (head + struct.pack("<I", zlib.crc32(head)) + payload
            + struct.pack("<I", zlib.crc32(payload)))


def test_unknown_type_is_a_record_and_decoding_continues():
    dec = fp.Decoder()
    out = dec.feed(_frame_with(msg_type=0xEE, payload=b"future") + fp.Encoder().encode(fp.Heartbeat(3)))
    assert out == [fp.UnknownMessage(0xEE, 5, fp.PROTOCOL_VERSION, b"future"), fp.Heartbeat(3)]
    assert dec.stats.frames_anomalous == 1 and dec.stats.frames_ok == 1


def test_newer_version_is_a_record_and_decoding_continues():
    dec = fp.Decoder()
    out = dec.feed(_frame_with(version=fp.PROTOCOL_VERSION + 1) + fp.Encoder().encode(fp.Heartbeat(3)))
    assert out == [fp.UnsupportedVersion(0x03, 5, fp.PROTOCOL_VERSION + 1), fp.Heartbeat(3)]


def test_malformed_payload_is_a_record():
    out = fp.Decoder().feed(_frame_with(msg_type=fp.Heartbeat.TYPE, payload=b"\x01\x02"))
    assert len(out) == 1 and isinstance(out[0], fp.MalformedPayload)
    assert out[0].msg_type == fp.Heartbeat.TYPE


def test_length_guard_does_not_stall():
    # A header with a valid check but an absurd length is refused at once, not waited for.
    dec = fp.Decoder(max_payload_bytes=1024)
    huge = _frame_with(length=2**31)[:fp.HEADER_SIZE]
    out = dec.feed(huge + fp.Encoder().encode(fp.Heartbeat(4)))
    assert out == [fp.Heartbeat(4)]
    assert dec.stats.frames_corrupt == 1 and dec.stats.bytes_discarded == fp.HEADER_SIZE


def test_garbage_header_with_sync_word_does_not_stall():
    garbage = fp.SYNC_WORD + b"\x01\x03\x00\x00" + b"\xff" * 12   # check fails
    out = fp.Decoder().feed(garbage + fp.Encoder().encode(fp.Heartbeat(4)))
    assert out == [fp.Heartbeat(4)]


def test_garbage_alone_is_discarded_but_a_sync_prefix_is_kept():
    dec = fp.Decoder()
    assert dec.feed(b"\x00" * 100 + fp.SYNC_WORD[:3]) == []
    assert dec.buffered_bytes == 3 and dec.stats.bytes_discarded == 100


@settings(max_examples=10)
@given(event_batches(max_events=2000))
def test_large_event_batches_split_in_pieces(batch):
    stream = fp.Encoder().encode(batch) * 3
    dec = fp.Decoder()
    out = [m for i in range(0, len(stream), 1000) for m in dec.feed(stream[i:i + 1000])]
    assert out == [batch] * 3
    assert out[0].timestamps_ps.dtype == np.int64 and out[0].channels.dtype == np.uint8


def test_reset_discards_a_partial_frame_and_counts_it():
    frame = fp.Encoder().encode(fp.Heartbeat(1))
    dec = fp.Decoder()
    assert dec.feed(frame[:10]) == []
    dec.reset()
    assert dec.feed(frame[10:]) == [] and dec.stats.frames_ok == 0
    assert dec.feed(frame) == [fp.Heartbeat(1)]
    assert dec.stats.bytes_discarded == len(frame)


def test_encoder_refuses_a_frame_the_receiver_would_drop():
    from firmware_protocol import MAX_PAYLOAD_BYTES, PatternRequest
    from firmware_protocol.messages import PATTERN_REQUEST_MAX_SLOTS
    enc = fp.Encoder()
    largest = PatternRequest(1, np.arange(PATTERN_REQUEST_MAX_SLOTS, dtype=np.uint64))
    assert len(enc.encode(largest)) > 8 * PATTERN_REQUEST_MAX_SLOTS   # the protocol's own limit fits
    too_big = PatternRequest(2, np.zeros(MAX_PAYLOAD_BYTES // 8 + 1, dtype=np.uint64))
    with pytest.raises(ValueError, match="frame limit"):
        enc.encode(too_big)


def test_a_frame_cut_after_its_header_check_does_not_swallow_the_next_header():
    """Found by hypothesis: a cut frame declaring a 16-byte payload, followed by any frame —
    the next frame's header is exactly 16 bytes and its header check their CRC, so it passed
    as the cut frame's payload and the good frame was lost."""
    enc = fp.Encoder()
    cut = enc.encode(fp.PatternRequest(0, np.array([0], np.uint64)))[:fp.HEADER_SIZE]
    dec = fp.Decoder()
    out = dec.feed(cut + enc.encode(fp.IdentifyRequest()) + enc.encode(fp.Heartbeat(5)))
    assert out == [fp.IdentifyRequest(), fp.Heartbeat(5)]
    assert dec.stats.bytes_discarded == fp.HEADER_SIZE and dec.stats.frames_corrupt == 1

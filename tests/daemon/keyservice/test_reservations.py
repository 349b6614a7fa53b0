"""Reservation messages between nodes: byte layout, round trips, every malformation typed."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, strategies as st

from daemon.keyservice import reservations as rv
from daemon.keystore.ranges import KeyRange

sae = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=20)
record = st.builds(rv.Reservation, key_id=st.uuids(), size_bits=st.integers(8, 1 << 20),
                   units=st.lists(st.uuids(), min_size=1, max_size=5).map(tuple), master=sae,
                   slaves=st.lists(sae, min_size=1, max_size=3).map(tuple))


@given(st.integers(0, 2**32 - 1), st.lists(record, min_size=1, max_size=5))
def test_reserve_round_trips(seq, records):
    kind, payload = rv.encode_reserve(seq, records)
    assert kind == rv.ReservationMsgType.RESERVE
    assert rv.decode_reserve(payload) == (seq, records)


few_saes = st.sampled_from(["X", "Y", "XY", "Y2"])
repeating = st.builds(rv.Reservation, key_id=st.uuids(), size_bits=st.just(256),
                      units=st.lists(st.uuids(), min_size=1, max_size=2).map(tuple),
                      master=few_saes, slaves=st.lists(few_saes, min_size=1, max_size=2).map(tuple))


@given(st.lists(repeating, min_size=1, max_size=12))
def test_reserve_round_trips_when_records_repeat_their_saes(records):
    """The decoder reuses the SAE IDs of the record before when their bytes repeat: a record
    whose IDs differ only a little ("X" then "XY", one slave then two) must not be taken for it."""
    assert rv.decode_reserve(rv.encode_reserve(7, records)[1]) == (7, records)


@given(st.lists(record, min_size=1, max_size=3), st.data())
def test_every_truncation_and_extension_is_a_typed_error(records, data):
    _assert_cuts_and_extensions_refused(rv.encode_reserve(1, records)[1], rv.decode_reserve,
                                        data)


def _assert_cuts_and_extensions_refused(payload, decode, data):
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(rv.ReservationMessageError):
        decode(payload[:cut])
    with pytest.raises(rv.ReservationMessageError):
        decode(payload + b"\x00")


def test_layout_is_as_documented():
    kid, unit = uuid.UUID(int=1), uuid.UUID(int=2)
    _, payload = rv.encode_reserve(7, [rv.Reservation(kid, 256, (unit,), "X", ("Y",))])
    assert payload == (struct.pack("<IH", 7, 1) + kid.bytes + struct.pack("<IH", 256, 1)
                       + unit.bytes + b"\x01X" + b"\x01" + b"\x01Y")


key_range = st.builds(
    lambda block, lo, span, n, digest: KeyRange(block, lo, lo + span, min(n, span + 1), digest),
    st.integers(0, 2**63 - 1), st.integers(0, 2**31), st.integers(0, 2**31 - 1),
    st.integers(1, 2**20), st.binary(min_size=KeyRange.DIGEST_BYTES,
                                     max_size=KeyRange.DIGEST_BYTES))


@given(st.integers(0, 2**32 - 1), sae, sae, st.lists(key_range, min_size=1, max_size=6),
       st.data())
def test_reserve_ranges_round_trips_and_every_truncation_is_typed(seq, master, slave, ranges,
                                                                 data):
    kind, payload = rv.encode_reserve_ranges(seq, master, slave, ranges)
    assert kind == rv.ReservationMsgType.RESERVE_RANGES
    assert rv.decode_reserve_ranges(payload) == rv.RangeReservation(seq, master, slave,
                                                                    tuple(ranges))
    _assert_cuts_and_extensions_refused(payload, rv.decode_reserve_ranges, data)


def test_reserve_ranges_layout_and_bad_ranges():
    digest = bytes(range(KeyRange.DIGEST_BYTES))
    _, payload = rv.encode_reserve_ranges(7, "X", "Y", [KeyRange(3, 10, 20, 6, digest)])
    assert payload == (struct.pack("<IH", 7, 1) + b"\x01X" + b"\x01Y"
                       + struct.pack("<QIII", 3, 10, 20, 6) + digest)
    for lo, hi, n in ((20, 10, 1), (10, 20, 12), (10, 20, 0)):   # reversed, too many, none
        bad = bytearray(payload)
        bad[-20:-8] = struct.pack("<III", lo, hi, n)
        with pytest.raises(rv.ReservationMessageError, match="not a valid range"):
            rv.decode_reserve_ranges(bytes(bad))
        with pytest.raises(ValueError):
            rv.encode_reserve_ranges(7, "X", "Y", [KeyRange(3, lo, hi, n, digest)])


def test_replies():
    assert rv.decode_reply(*rv.encode_reply(9)) == (9, None)
    assert rv.decode_reply(*rv.encode_reply(9, rv.RefusalReason.UNKNOWN_KEY)) == \
        (9, rv.RefusalReason.UNKNOWN_KEY)
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reply(rv.ReservationMsgType.REFUSED, struct.pack("<IB", 1, 99))
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reply(rv.ReservationMsgType.RESERVE, b"\x00" * 5)


@given(st.integers(0, 2**32 - 1), st.sampled_from(list(rv.VoidScope)),
       st.lists(st.uuids(), min_size=1, max_size=50))
def test_void_round_trips_and_every_truncation_is_typed(seq, scope, ids):
    kind, payload = rv.encode_void(seq, scope, ids)
    assert kind == rv.ReservationMsgType.VOID
    assert rv.decode_void(payload) == (seq, scope, ids)
    for cut in (0, 3, len(payload) - 1):
        with pytest.raises(rv.ReservationMessageError):
            rv.decode_void(payload[:cut])
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_void(payload + b"\x00")
    assert rv.decode_voided(rv.encode_voided(seq)[1]) == seq


def test_void_layout_and_bad_scope():
    kid = uuid.UUID(int=3)
    _, payload = rv.encode_void(5, rv.VoidScope.LEASE, [kid])
    assert payload == struct.pack("<IBH", 5, 1, 1) + kid.bytes
    with pytest.raises(rv.ReservationMessageError, match="scope"):
        rv.decode_void(struct.pack("<IBH", 5, 9, 1) + kid.bytes)
    with pytest.raises(ValueError):
        rv.encode_void(5, rv.VoidScope.LEASE, [])


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**53), sae, sae, sae)
def test_stream_pull_round_trips(seq, index, ksid, source, destination):
    pull = rv.StreamPull(seq, index, ksid, source, destination)
    kind, payload = rv.encode_stream_pull(pull)
    assert kind == rv.ReservationMsgType.STREAM_PULL
    assert rv.decode_stream_pull(payload) == pull
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_stream_pull(payload[:-1])
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_stream_pull(payload + b"x")


def test_stream_key_ids_name_the_stream_and_index_alike_at_both_ends():
    assert rv.stream_key_id("s", 1) == rv.stream_key_id("s", 1)
    assert len({rv.stream_key_id("s", 1), rv.stream_key_id("s", 2),
                rv.stream_key_id("s2", 1)}) == 3
    assert rv.stream_key_id("s", 1) == uuid.uuid5(
        uuid.UUID("5d0c3f0e-2b7a-4c55-9a51-0b6b2f1e7a40"), "s/1")   # as documented


def test_a_malformed_peer_message_is_logged_and_dropped(caplog, tmp_path):
    import asyncio

    from daemon.keyservice.pool import NodeKeyPool
    from daemon.keystore.store import KeyStore

    sent = []

    async def send(t, p):
        sent.append(t)

    pool = NodeKeyPool(KeyStore(tmp_path / "s.db"), "L", send, key_size_bits=256)

    async def run():
        for t, p in ((0x60, b"\x01"), (0x63, b"\x00" * 7), (0x65, b"\x00" * 3),
                     (0x61, b"\x00" * 9), (0x64, b"")):
            await pool.on_peer_message(t, p)

    asyncio.run(run())
    assert sent == []                       # nothing answered to garbage
    assert caplog.text.count("malformed peer message") == 5

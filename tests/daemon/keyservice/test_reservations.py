"""Reservation messages between nodes: byte layout, round trips, every malformation typed."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, strategies as st

from daemon.keyservice import reservations as rv

sae = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=20)
record = st.builds(rv.Reservation, key_id=st.uuids(), size_bits=st.integers(8, 1 << 20),
                   units=st.lists(st.uuids(), min_size=1, max_size=5).map(tuple), master=sae,
                   slaves=st.lists(sae, min_size=1, max_size=3).map(tuple))


@given(st.integers(0, 2**32 - 1), st.lists(record, min_size=1, max_size=5))
def test_reserve_round_trips(seq, records):
    kind, payload = rv.encode_reserve(seq, records)
    assert kind == rv.ReservationMsgType.RESERVE
    assert rv.decode_reserve(payload) == (seq, records)


@given(st.lists(record, min_size=1, max_size=3), st.data())
def test_every_truncation_and_extension_is_a_typed_error(records, data):
    _, payload = rv.encode_reserve(1, records)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reserve(payload[:cut])
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reserve(payload + b"\x00")


def test_layout_is_as_documented():
    kid, unit = uuid.UUID(int=1), uuid.UUID(int=2)
    _, payload = rv.encode_reserve(7, [rv.Reservation(kid, 256, (unit,), "X", ("Y",))])
    assert payload == (struct.pack("<IH", 7, 1) + kid.bytes + struct.pack("<IH", 256, 1)
                       + unit.bytes + b"\x01X" + b"\x01" + b"\x01Y")


def test_replies():
    assert rv.decode_reply(*rv.encode_reply(9)) == (9, None)
    assert rv.decode_reply(*rv.encode_reply(9, rv.RefusalReason.UNKNOWN_KEY)) == \
        (9, rv.RefusalReason.UNKNOWN_KEY)
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reply(rv.ReservationMsgType.REFUSED, struct.pack("<IB", 1, 99))
    with pytest.raises(rv.ReservationMessageError):
        rv.decode_reply(rv.ReservationMsgType.RESERVE, b"\x00" * 5)

"""Messages between the two nodes' key services: reservations, voids, stream pulls (sans-I/O).

When node A hands keys to master SAE X for slave SAE Y, node B must know — durably, before X
gets its reply — that those key IDs belong to Y, or Y could not fetch them after a crash of A.
A sends RESERVE, B stores the reservation and answers RESERVED (or REFUSED with a reason), and
only then does A reply to X. The messages travel inside the peer envelope (authenticated,
sequenced); this module only turns them into bytes and back. Layout (little-endian) in
docs/key-service.md, "Between the nodes".

RESERVE_RANGES does the same for keys of one stored unit each, as the issuer took them from its
lease: index ranges of blocks with a count and a digest of the key IDs (``KeyRange``), a few
bytes per thousand keys instead of a record each, answered like RESERVE.

A delivered key is one or more stored keys ("units", the store's fixed size) concatenated and
cut to the requested size; its key ID is the first unit's ID, so both nodes name it alike. A key
of an ETSI 004 stream is one unit whose record carries, as ``key_id``, the ID derived from the
stream and the index (``stream_key_id``): that is how the receiving node learns which unit a
stream index is bound to.

VOID tells the peer to erase keys that will never be delivered at the sending end (a lease left
open by a stop; stream keys bound but never taken; keys reserved ahead and never handed out);
VOIDED acknowledges it. STREAM_PULL asks
the node that issues a stream's keys to bind an index now, because the application at the
receiving node asked for it first; the answer is the RESERVE for that index followed by
RESERVED (or REFUSED) carrying the pull's sequence number.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from daemon.keystore.cutting import uuid_of
from daemon.keystore.ranges import KeyRange


class ReservationMsgType(enum.IntEnum):
    RESERVE = 0x60
    RESERVED = 0x61
    REFUSED = 0x62
    VOID = 0x63
    VOIDED = 0x64
    STREAM_PULL = 0x65
    RESERVE_RANGES = 0x66


MESSAGE_TYPES = frozenset(int(t) for t in ReservationMsgType)
"""Every peer message type the key service sends and must be given (``on_peer_message``)."""


class RefusalReason(enum.IntEnum):
    UNKNOWN_KEY = 1          # a unit ID the holder does not have (or no longer has)
    NOT_ISSUERS_KEY = 2      # a unit the sender may not issue (it belongs to the other end)
    STORE_ERROR = 3          # the holder could not make the reservation durable
    MALFORMED = 4
    INSUFFICIENT_KEY = 5     # STREAM_PULL: the issuer has no key to bind
    STREAM_NOT_OPEN = 6      # STREAM_PULL: the stream's application has not opened it there
    INDEX_BOUND = 7          # STREAM_PULL: that index was bound (or delivered) already
    PEER_UNREACHABLE = 8     # STREAM_PULL: the issuer's own RESERVE got no answer


class VoidScope(enum.IntEnum):
    LEASE = 1       # a lease left open by a stop: erase the keys no SAE has reserved
    RESERVED = 2    # keys reserved at the peer that the issuer will never deliver (stream keys
                    # its source never took, keys reserved ahead at a clean stop): erase them


STREAM_NAMESPACE = uuid.UUID("5d0c3f0e-2b7a-4c55-9a51-0b6b2f1e7a40")


def stream_key_id(key_stream_id: str, index: int) -> uuid.UUID:
    """The name both nodes give to index ``index`` of a stream before a unit is bound to it."""
    return uuid.uuid5(STREAM_NAMESPACE, f"{key_stream_id}/{index}")


class ReservationMessageError(ValueError):
    """A reservation message that cannot be decoded (the peer or the channel misbehaved)."""


MAX_SAE_BYTES = 64
MAX_SLAVES = 16
MAX_RECORDS = 4096
MAX_UNITS = 4096

_HEAD = struct.Struct("<IH")          # request seq, record count
_REC = struct.Struct("<16sIH")        # key_ID, size_bits, unit count
_REPLY = struct.Struct("<IB")         # request seq, reason (0 for RESERVED)
_VOID = struct.Struct("<IBH")         # seq, scope, key count
_VOIDED = struct.Struct("<I")         # seq
_PULL = struct.Struct("<IQ")          # seq, stream index
_RANGES_HEAD = struct.Struct("<IH")   # request seq, range count
_RANGE = struct.Struct(f"<QIII{KeyRange.DIGEST_BYTES}s")   # block, lo, hi, keys, digest
MAX_RANGES = 4096
MAX_VOID_KEYS = 4096
MAX_STREAM_ID_BYTES = 64


class Reservation(NamedTuple):
    key_id: uuid.UUID
    size_bits: int
    units: tuple[uuid.UUID, ...]
    master: str
    slaves: tuple[str, ...]


def _put_str(out: bytearray, text: str) -> None:
    raw = text.encode()
    if not 0 < len(raw) <= MAX_SAE_BYTES:
        raise ValueError(f"SAE ID {text!r} must be 1..{MAX_SAE_BYTES} UTF-8 bytes")
    out += bytes([len(raw)]) + raw


def encode_reserve(seq: int, records: list[Reservation]) -> tuple[int, bytes]:
    if not 0 < len(records) <= MAX_RECORDS:
        raise ValueError(f"1..{MAX_RECORDS} reservations per message, got {len(records)}")
    out = bytearray(_HEAD.pack(seq & 0xFFFFFFFF, len(records)))
    names: dict[tuple, bytes] = {}     # (master, slaves) -> their encoding, made once
    for r in records:
        if not 0 < len(r.units) <= MAX_UNITS or not 0 < len(r.slaves) <= MAX_SLAVES:
            raise ValueError("a reservation needs 1..4096 units and 1..16 slaves")
        out += _REC.pack(r.key_id.bytes, r.size_bits, len(r.units))
        for u in r.units:
            out += u.bytes
        tail = names.get((r.master, r.slaves))
        if tail is None:
            buf = bytearray()
            _put_str(buf, r.master)
            buf += bytes([len(r.slaves)])
            for s in r.slaves:
                _put_str(buf, s)
            tail = names[(r.master, r.slaves)] = bytes(buf)
        out += tail
    return ReservationMsgType.RESERVE, bytes(out)


def encode_reply(seq: int, reason: RefusalReason | None = None) -> tuple[int, bytes]:
    kind = ReservationMsgType.RESERVED if reason is None else ReservationMsgType.REFUSED
    return kind, _REPLY.pack(seq & 0xFFFFFFFF, 0 if reason is None else int(reason))


def decode_reply(msg_type: int, payload: bytes) -> tuple[int, RefusalReason | None]:
    if msg_type not in (ReservationMsgType.RESERVED, ReservationMsgType.REFUSED) \
            or len(payload) != _REPLY.size:
        raise ReservationMessageError(f"not a reservation reply (type {msg_type:#x}, "
                                      f"{len(payload)} bytes)")
    seq, code = _REPLY.unpack(payload)
    if msg_type == ReservationMsgType.RESERVED:
        if code:
            raise ReservationMessageError("RESERVED with a reason code")
        return seq, None
    try:
        return seq, RefusalReason(code)
    except ValueError:
        raise ReservationMessageError(f"unknown refusal reason {code}") from None


@dataclass(frozen=True)
class RangeReservation:
    """RESERVE_RANGES: the peer's keys in ``ranges`` (single stored keys, each delivered
    under its own ID) for ``slave``, issued to ``master``."""
    seq: int
    master: str
    slave: str
    ranges: tuple[KeyRange, ...]


def encode_reserve_ranges(seq: int, master: str, slave: str,
                          ranges: list[KeyRange]) -> tuple[int, bytes]:
    if not 0 < len(ranges) <= MAX_RANGES:
        raise ValueError(f"1..{MAX_RANGES} ranges per message, got {len(ranges)}")
    out = bytearray(_RANGES_HEAD.pack(seq & 0xFFFFFFFF, len(ranges)))
    _put_str(out, master)
    _put_str(out, slave)
    for r in ranges:
        r.check()
        out += _RANGE.pack(r.block_id, r.lo, r.hi, r.n_keys, r.digest)
    return ReservationMsgType.RESERVE_RANGES, bytes(out)


def decode_reserve_ranges(payload: bytes) -> RangeReservation:
    data = bytes(payload)
    try:
        seq, count = _RANGES_HEAD.unpack_from(data, 0)
        if not 0 < count <= MAX_RANGES:
            raise ReservationMessageError(f"{count} ranges in one message")
        names: dict[bytes, str] = {}
        master, pos = _get_name(data, _RANGES_HEAD.size, names)
        slave, pos = _get_name(data, pos, names)
        if len(data) != pos + count * _RANGE.size:
            raise ReservationMessageError(f"RESERVE_RANGES of {count} ranges in "
                                          f"{len(data)} bytes")
        ranges = tuple(KeyRange(*_RANGE.unpack_from(data, pos + i * _RANGE.size))
                       for i in range(count))
    except (struct.error, IndexError):
        raise ReservationMessageError("truncated RESERVE_RANGES message") from None
    for r in ranges:
        try:
            r.check()
        except ValueError as exc:
            raise ReservationMessageError(str(exc)) from None
    return RangeReservation(seq, master, slave, ranges)


def decode_reserve(payload: bytes) -> tuple[int, list[Reservation]]:
    """Payload of a RESERVE -> (seq, reservations); ReservationMessageError if malformed.

    Written for a thousand records in a few milliseconds: SAE IDs repeat, so each distinct
    one is decoded once; a record whose one unit is its key ID shares the UUID object."""
    data = bytes(payload)
    end = len(data)
    names: dict[bytes, str] = {}
    unpack_rec, rec_size, make = _REC.unpack_from, _REC.size, uuid_of
    tail = b""         # the SAE IDs' encoding of the record before, and what it decoded to
    master, slaves = "", ()
    try:
        seq, count = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        if not 0 < count <= MAX_RECORDS:
            raise ReservationMessageError(f"{count} reservations in one message")
        records = []
        for _ in range(count):
            kid_raw, size_bits, n_units = unpack_rec(data, pos)
            pos += rec_size
            if not 0 < n_units <= MAX_UNITS:
                raise ReservationMessageError(f"{n_units} units in one reservation")
            if pos + 16 * n_units > end:
                raise ReservationMessageError("truncated unit list")
            kid = make(kid_raw)
            if n_units == 1 and data[pos:pos + 16] == kid_raw:
                units = (kid,)
            else:
                units = tuple(make(data[pos + 16 * i:pos + 16 * i + 16])
                              for i in range(n_units))
            pos += 16 * n_units
            if tail and data.startswith(tail, pos):     # the same SAEs as the record before
                pos += len(tail)
            else:
                start = pos
                master, pos = _get_name(data, pos, names)
                n_slaves = data[pos]
                pos += 1
                if not 0 < n_slaves <= MAX_SLAVES:
                    raise ReservationMessageError(f"{n_slaves} slaves in one reservation")
                slave_list = []
                for _ in range(n_slaves):
                    name, pos = _get_name(data, pos, names)
                    slave_list.append(name)
                slaves, tail = tuple(slave_list), data[start:pos]
            records.append(Reservation(kid, size_bits, units, master, slaves))
    except (struct.error, IndexError):
        raise ReservationMessageError("truncated RESERVE message") from None
    if pos != end:
        raise ReservationMessageError(f"{end - pos} trailing bytes after RESERVE")
    return seq, records


def _get_name(data: bytes, pos: int, names: dict[bytes, str]) -> tuple[str, int]:
    n = data[pos]
    if not 0 < n <= MAX_SAE_BYTES or pos + 1 + n > len(data):
        raise ReservationMessageError("bad SAE ID length")
    raw = data[pos + 1:pos + 1 + n]
    name = names.get(raw)
    if name is None:
        try:
            name = names[raw] = raw.decode()
        except UnicodeDecodeError:
            raise ReservationMessageError("SAE ID is not UTF-8") from None
    return name, pos + 1 + n


def _get_str(view: memoryview, pos: int) -> tuple[str, int]:
    n = view[pos]
    if not 0 < n <= MAX_SAE_BYTES or pos + 1 + n > len(view):
        raise ReservationMessageError("bad SAE ID length")
    try:
        return bytes(view[pos + 1:pos + 1 + n]).decode(), pos + 1 + n
    except UnicodeDecodeError:
        raise ReservationMessageError("SAE ID is not UTF-8") from None


def encode_void(seq: int, scope: VoidScope, key_ids: list[uuid.UUID]) -> tuple[int, bytes]:
    if not 0 < len(key_ids) <= MAX_VOID_KEYS:
        raise ValueError(f"1..{MAX_VOID_KEYS} key IDs per VOID, got {len(key_ids)}")
    return ReservationMsgType.VOID, (_VOID.pack(seq & 0xFFFFFFFF, int(scope), len(key_ids))
                                     + b"".join(k.bytes for k in key_ids))


def decode_void(payload: bytes) -> tuple[int, VoidScope, list[uuid.UUID]]:
    if len(payload) < _VOID.size:
        raise ReservationMessageError("truncated VOID message")
    seq, scope, n = _VOID.unpack_from(payload)
    try:
        scope = VoidScope(scope)
    except ValueError:
        raise ReservationMessageError(f"unknown VOID scope {scope}") from None
    if not 0 < n <= MAX_VOID_KEYS or len(payload) != _VOID.size + 16 * n:
        raise ReservationMessageError(f"VOID of {n} keys in {len(payload)} bytes")
    return seq, scope, [uuid_of(payload[_VOID.size + 16 * i:_VOID.size + 16 * i + 16])
                        for i in range(n)]


def encode_voided(seq: int) -> tuple[int, bytes]:
    return ReservationMsgType.VOIDED, _VOIDED.pack(seq & 0xFFFFFFFF)


def decode_voided(payload: bytes) -> int:
    if len(payload) != _VOIDED.size:
        raise ReservationMessageError(f"VOIDED of {len(payload)} bytes")
    return _VOIDED.unpack(payload)[0]


@dataclass(frozen=True)
class StreamPull:
    seq: int
    index: int
    key_stream_id: str
    source: str
    destination: str


def encode_stream_pull(pull: StreamPull) -> tuple[int, bytes]:
    out = bytearray(_PULL.pack(pull.seq & 0xFFFFFFFF, pull.index))
    raw = pull.key_stream_id.encode()
    if not 0 < len(raw) <= MAX_STREAM_ID_BYTES:
        raise ValueError(f"key_stream_id must be 1..{MAX_STREAM_ID_BYTES} UTF-8 bytes")
    out += bytes([len(raw)]) + raw
    _put_str(out, pull.source)
    _put_str(out, pull.destination)
    return ReservationMsgType.STREAM_PULL, bytes(out)


def decode_stream_pull(payload: bytes) -> StreamPull:
    view = memoryview(payload)
    try:
        seq, index = _PULL.unpack_from(view)
        ksid, pos = _get_str(view, _PULL.size)
        source, pos = _get_str(view, pos)
        destination, pos = _get_str(view, pos)
    except (struct.error, IndexError):
        raise ReservationMessageError("truncated STREAM_PULL message") from None
    if pos != len(view):
        raise ReservationMessageError(f"{len(view) - pos} trailing bytes after STREAM_PULL")
    return StreamPull(seq, index, ksid, source, destination)

"""Cascade protocol messages between Bob (asks) and Alice (answers), sans-I/O.

One message covers every frame of a batch, so a round trip costs the same for 1 or 1000
frames. Wire format (little-endian), first byte = message type, second = format version 1:

  CascadeSetup  : type 1, ver, seed u64, schedule_id u8, qber f64, n_frames u32,
                  n_frames x frame_bits u32
  ParityRequest : type 2, ver, round u32, n_frames u32, n_frames x new_pass i8 (-1 = none),
                  n_frames x n_ranges u32, then the M ranges of all frames in frame order as
                  three columns: M x pass u8, M x lo u32, M x hi u32
  ParityReply   : type 3, ver, round u32, n_frames u32, n_frames x n_bits u32, then the parity
                  bits of all frames in frame order, ceil(total/8) bytes (np.packbits order,
                  big-endian within a byte, unused low bits zero)

The per-round messages (ParityRequest, ParityReply) are decoded and checked by one numba call
each (``_parse_request``, ``_parse_reply``) whatever the number of frames: with hundreds of
rounds per batch, per-message overhead adds up (encoding is a few numpy casts).

``from_bytes`` checks lengths, types, ranges and padding and raises ``MessageError``; whether a
request fits a session (pass count, frame length) is checked by the roles. The numba parsers
make every check of the reference decoders (``_explain_request``, ``_explain_reply``) and only
say accept or reject; a rejected message goes through the reference decoder, which raises
the ``MessageError`` naming what is wrong.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass, field

import numba
import numpy as np

from .errors import MessageError

VERSION = 1
TYPE_SETUP, TYPE_REQUEST, TYPE_REPLY = 1, 2, 3
MAX_FRAMES = 1 << 20
MAX_PASSES = 64
LITTLE_ENDIAN = sys.byteorder == "little"


def _header(data: bytes, msg_type: int, name: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"{name}: expected bytes, got {type(data).__name__}")
    if len(data) < 2:
        raise MessageError(f"{name}: {len(data)} bytes is shorter than the 2-byte header")
    if data[0] != msg_type:
        raise MessageError(f"{name}: message type {data[0]} (expected {msg_type})")
    if data[1] != VERSION:
        raise MessageError(f"{name}: format version {data[1]} (expected {VERSION})")


class _Reader:
    def __init__(self, data, name: str):
        self.data = bytes(data)
        self.pos = 2
        self.name = name

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise MessageError(f"{self.name}: truncated at byte {self.pos} "
                               f"(needs {size} more, {len(self.data) - self.pos} left)")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise MessageError(f"{self.name}: truncated at byte {self.pos} "
                               f"(needs {size} more, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def count(self, what: str, limit: int) -> int:
        (n,) = self.take("<I")
        if n > limit:
            raise MessageError(f"{self.name}: {what} {n} outside [0, {limit}]")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{self.name}: {len(self.data) - self.pos} trailing bytes")


@numba.njit(cache=True, nogil=True)
def _u32_column(buf, pos, out, col):
    """out[i, col] = the i-th little-endian u32 from buf[pos:] (any alignment)."""
    m = out.shape[0]
    if LITTLE_ENDIAN:  # an aligned copy read as native u32 (one memcpy, then a widening loop)
        words = buf[pos:pos + 4 * m].copy().view(np.uint32)
        for i in range(m):
            out[i, col] = words[i]
        return
    for i in range(m):
        q = pos + 4 * i
        out[i, col] = (np.int64(buf[q]) | (np.int64(buf[q + 1]) << 8)
                       | (np.int64(buf[q + 2]) << 16) | (np.int64(buf[q + 3]) << 24))


@numba.njit(cache=True, nogil=True)
def _parse_request(buf, max_frames, max_passes):
    """ParityRequest body after the 2-byte header: (ok, round, new_pass, counts, ranges);
    ok False for anything ``_explain_request`` rejects (the arrays are then empty)."""
    n = buf.shape[0]
    head = np.empty((2, 1), dtype=np.int64)
    if n < 10:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 3), np.int64)
    _u32_column(buf, 2, head, 0)
    rnd = head[0, 0]
    nf = head[1, 0]
    if nf > max_frames or 10 + 5 * nf > n:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 3), np.int64)
    new_pass = np.empty(nf, dtype=np.int64)
    bad = False
    for f in range(nf):
        v = np.int64(np.int8(buf[10 + f]))
        bad |= (v < -1) | (v >= max_passes)
        new_pass[f] = v
    counts2 = np.empty((nf, 1), dtype=np.int64)
    _u32_column(buf, 10 + nf, counts2, 0)
    counts = counts2[:, 0]
    total = counts.sum()
    pos = 10 + 5 * nf
    if bad or 9 * total != n - pos:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 3), np.int64)
    ranges = np.empty((total, 3), dtype=np.int64)
    for i in range(total):
        ranges[i, 0] = buf[pos + i]
    _u32_column(buf, pos + total, ranges, 1)
    _u32_column(buf, pos + 5 * total, ranges, 2)
    for i in range(total):
        bad |= (ranges[i, 0] >= max_passes) | (ranges[i, 1] >= ranges[i, 2])
    if bad:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 3), np.int64)
    return True, rnd, new_pass, counts, ranges


@numba.njit(cache=True, nogil=True)
def _parse_reply(buf, max_frames):
    """ParityReply body after the 2-byte header: (ok, round, counts, bits uint8 0/1); ok
    False for anything ``_explain_reply`` rejects (the arrays are then empty)."""
    n = buf.shape[0]
    head = np.empty((2, 1), dtype=np.int64)
    if n < 10:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.uint8)
    _u32_column(buf, 2, head, 0)
    rnd = head[0, 0]
    nf = head[1, 0]
    if nf > max_frames or 10 + 4 * nf > n:
        return False, 0, np.empty(0, np.int64), np.empty(0, np.uint8)
    counts2 = np.empty((nf, 1), dtype=np.int64)
    _u32_column(buf, 10, counts2, 0)
    counts = counts2[:, 0]
    total = counts.sum()
    pos = 10 + 4 * nf
    if (total + 7) // 8 != n - pos or (total % 8 and buf[n - 1] & ((1 << (8 - total % 8)) - 1)):
        return False, 0, np.empty(0, np.int64), np.empty(0, np.uint8)  # or nonzero padding
    bits = np.empty(total, dtype=np.uint8)
    full = total // 8
    for j in range(full):
        v = buf[pos + j]
        for k in range(8):
            bits[8 * j + k] = (v >> (7 - k)) & 1
    for i in range(8 * full, total):
        bits[i] = (buf[pos + (i >> 3)] >> (7 - (i & 7))) & 1
    return True, rnd, counts, bits


@dataclass(frozen=True)
class CascadeSetup:
    """Opens a batch: shared seed of the pass permutations, schedule, QBER estimate, frames."""

    seed: int
    schedule_id: int
    qber: float
    frame_bits: tuple[int, ...]

    def to_bytes(self) -> bytes:
        head = struct.pack("<BBQBdI", TYPE_SETUP, VERSION, self.seed, self.schedule_id,
                           self.qber, len(self.frame_bits))
        return head + np.asarray(self.frame_bits, dtype="<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CascadeSetup":
        _header(data, TYPE_SETUP, "CascadeSetup")
        r = _Reader(data, "CascadeSetup")
        seed, schedule_id, qber = r.take("<QBd")
        if not math.isfinite(qber):
            raise MessageError(f"CascadeSetup: QBER {qber!r} is not a finite number")
        n_frames = r.count("frame count", MAX_FRAMES)
        frame_bits = np.frombuffer(r.raw(4 * n_frames), dtype="<u4")
        r.end()
        if n_frames and int(frame_bits.min()) == 0:
            raise MessageError("CascadeSetup: a frame of 0 bits (accepted: >= 1)")
        return cls(seed, schedule_id, qber, tuple(int(x) for x in frame_bits))


@dataclass(frozen=True)
class FrameQuestions:
    """Bob's questions about one frame: top-level parities of ``new_pass`` (-1: none) and
    the parity of positions [lo, hi) of a pass for each row of ``ranges`` (int64[m, 3])."""

    new_pass: int
    ranges: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))

    def __eq__(self, other) -> bool:
        return (isinstance(other, FrameQuestions) and self.new_pass == other.new_pass
                and np.array_equal(self.ranges, other.ranges))


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


@dataclass(frozen=True, eq=False)
class ParityRequest:
    """Bob's questions for every frame of a batch, flat: frame i asks for the top-level
    parities of pass ``new_pass[i]`` (-1: none) and for the ``counts[i]`` next rows of
    ``ranges`` (int64[m, 3]: pass, lo, hi)."""

    round: int
    new_pass: np.ndarray
    counts: np.ndarray
    ranges: np.ndarray

    @classmethod
    def from_frames(cls, round: int, frames) -> "ParityRequest":
        ranges = [np.asarray(f.ranges, dtype=np.int64).reshape(-1, 3) for f in frames]
        return cls(round, np.array([f.new_pass for f in frames], dtype=np.int64),
                   np.array([len(r) for r in ranges], dtype=np.int64),
                   np.concatenate(ranges) if ranges else np.zeros((0, 3), dtype=np.int64))

    @property
    def frames(self) -> tuple[FrameQuestions, ...]:
        off = _offsets(self.counts)
        return tuple(FrameQuestions(int(p), self.ranges[off[i]:off[i + 1]])
                     for i, p in enumerate(self.new_pass))

    def __eq__(self, other) -> bool:
        return (isinstance(other, ParityRequest) and self.round == other.round
                and np.array_equal(self.new_pass, other.new_pass)
                and np.array_equal(self.counts, other.counts)
                and np.array_equal(self.ranges, other.ranges))

    def to_bytes(self) -> bytes:
        ranges = np.asarray(self.ranges).reshape(-1, 3)
        return b"".join([struct.pack("<BBII", TYPE_REQUEST, VERSION, self.round,
                                     len(self.new_pass)),
                         np.asarray(self.new_pass, dtype="i1").tobytes(),
                         np.asarray(self.counts, dtype="<u4").tobytes(),
                         ranges[:, 0].astype("u1").tobytes(),
                         ranges[:, 1].astype("<u4").tobytes(),
                         ranges[:, 2].astype("<u4").tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> "ParityRequest":
        _header(data, TYPE_REQUEST, "ParityRequest")
        ok, rnd, new_pass, counts, ranges = _parse_request(np.frombuffer(data, np.uint8),
                                                           MAX_FRAMES, MAX_PASSES)
        if ok:
            return cls(rnd, new_pass, counts, ranges)
        _explain_request(data)
        raise MessageError("ParityRequest: malformed")


def _explain_request(data: bytes) -> "ParityRequest":
    """Reference decoder of a ParityRequest (numpy, check by check): raises the
    ``MessageError`` that names the first fault; ``_parse_request`` agrees with it."""
    _header(data, TYPE_REQUEST, "ParityRequest")
    r = _Reader(data, "ParityRequest")
    (rnd,) = r.take("<I")
    n_frames = r.count("frame count", MAX_FRAMES)
    new_pass = np.frombuffer(r.raw(n_frames), dtype="i1").astype(np.int64)
    counts = np.frombuffer(r.raw(4 * n_frames), dtype="<u4").astype(np.int64)
    bad = (new_pass < -1) | (new_pass >= MAX_PASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise MessageError(f"ParityRequest: frame {i} new pass {new_pass[i]} "
                           f"outside [-1, {MAX_PASSES - 1}]")
    total = int(counts.sum())
    if 9 * total != len(r.data) - r.pos:
        raise MessageError(f"ParityRequest: range counts add up to {total} ranges, the "
                           f"message holds {(len(r.data) - r.pos) / 9:g}")
    ranges = np.empty((total, 3), dtype=np.int64)
    ranges[:, 0] = np.frombuffer(r.raw(total), dtype="u1")
    ranges[:, 1] = np.frombuffer(r.raw(4 * total), dtype="<u4")
    ranges[:, 2] = np.frombuffer(r.raw(4 * total), dtype="<u4")
    r.end()
    bad = (ranges[:, 0] >= MAX_PASSES) | (ranges[:, 1] >= ranges[:, 2])
    if bad.any():
        j = int(np.argmax(bad))
        raise MessageError(f"ParityRequest: range {j} (pass {ranges[j, 0]}, "
                           f"[{ranges[j, 1]}, {ranges[j, 2]})) is empty or its pass "
                           f"is outside [0, {MAX_PASSES - 1}]")
    return ParityRequest(rnd, new_pass, counts, ranges)


@dataclass(frozen=True, eq=False)
class ParityReply:
    """Alice's parity bits for every frame of a batch, flat: frame i's answers are the
    ``counts[i]`` next bits of ``bits`` (uint8 0/1), in the order of Bob's questions."""

    round: int
    counts: np.ndarray
    bits: np.ndarray

    @classmethod
    def from_frames(cls, round: int, frames) -> "ParityReply":
        frames = [np.asarray(f, dtype=np.uint8) for f in frames]
        return cls(round, np.array([len(f) for f in frames], dtype=np.int64),
                   np.concatenate(frames) if frames else np.zeros(0, dtype=np.uint8))

    @property
    def frames(self) -> tuple[np.ndarray, ...]:
        off = _offsets(self.counts)
        return tuple(self.bits[off[i]:off[i + 1]] for i in range(len(self.counts)))

    @property
    def n_parity_bits(self) -> int:
        return len(self.bits)

    def to_bytes(self) -> bytes:
        return b"".join([struct.pack("<BBII", TYPE_REPLY, VERSION, self.round,
                                     len(self.counts)),
                         np.asarray(self.counts, dtype="<u4").tobytes(),
                         np.packbits(np.asarray(self.bits, dtype=np.uint8)).tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> "ParityReply":
        _header(data, TYPE_REPLY, "ParityReply")
        ok, rnd, counts, bits = _parse_reply(np.frombuffer(data, np.uint8), MAX_FRAMES)
        if ok:
            return cls(rnd, counts, bits)
        _explain_reply(data)
        raise MessageError("ParityReply: malformed")


def _explain_reply(data: bytes) -> ParityReply:
    """Reference decoder of a ParityReply (numpy, check by check): raises the
    ``MessageError`` that names the first fault; ``_parse_reply`` agrees with it."""
    _header(data, TYPE_REPLY, "ParityReply")
    r = _Reader(data, "ParityReply")
    (rnd,) = r.take("<I")
    n_frames = r.count("frame count", MAX_FRAMES)
    counts = np.frombuffer(r.raw(4 * n_frames), dtype="<u4").astype(np.int64)
    total = int(counts.sum())
    if (total + 7) // 8 != len(r.data) - r.pos:
        raise MessageError(f"ParityReply: bit counts add up to {total} bits, the message "
                           f"holds {len(r.data) - r.pos} bytes of bits")
    bits = np.unpackbits(np.frombuffer(r.raw((total + 7) // 8), dtype=np.uint8))
    r.end()
    if bits[total:].any():
        raise MessageError("ParityReply: nonzero padding bits")
    return ParityReply(rnd, counts, bits[:total])


def decode(data: bytes):
    """Decode any Cascade message by its type byte."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 1:
        raise MessageError("Cascade message: empty or not bytes")
    kinds = {TYPE_SETUP: CascadeSetup, TYPE_REQUEST: ParityRequest, TYPE_REPLY: ParityReply}
    try:
        kind = kinds[data[0]]
    except KeyError:
        raise MessageError(f"Cascade message: unknown type {data[0]} "
                           f"(accepted: {sorted(kinds)})") from None
    return kind.from_bytes(data)

"""Cascade protocol messages between Bob (asks) and Alice (answers), sans-I/O.

One message covers every frame of a batch, so a round trip costs the same for 1 or 1000
frames. Wire format (little-endian), first byte = message type, second = format version 1:

  CascadeSetup  : type 1, ver, seed u64, schedule_id u8, qber f64, n_frames u32,
                  n_frames x frame_bits u32
  ParityRequest : type 2, ver, round u32, n_frames u32, per frame:
                  new_pass i8 (-1 = none), n_ranges u32, n_ranges x (pass u8, lo u32, hi u32)
  ParityReply   : type 3, ver, round u32, n_frames u32, per frame:
                  n_bits u32, ceil(n_bits/8) bytes of parity bits (np.packbits order, big-endian
                  within a byte, unused low bits zero)

``from_bytes`` checks lengths, types, ranges and padding and raises ``MessageError``; whether a
request fits a session (pass count, frame length) is checked by the roles.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import MessageError

VERSION = 1
TYPE_SETUP, TYPE_REQUEST, TYPE_REPLY = 1, 2, 3
MAX_FRAMES = 1 << 20
MAX_PASSES = 64
_RANGE_DTYPE = np.dtype([("pass", "u1"), ("lo", "<u4"), ("hi", "<u4")])


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


@dataclass(frozen=True)
class ParityRequest:
    round: int
    frames: tuple[FrameQuestions, ...]

    def to_bytes(self) -> bytes:
        parts = [struct.pack("<BBII", TYPE_REQUEST, VERSION, self.round, len(self.frames))]
        for f in self.frames:
            rec = np.empty(len(f.ranges), dtype=_RANGE_DTYPE)
            if len(f.ranges):
                rec["pass"] = f.ranges[:, 0]
                rec["lo"] = f.ranges[:, 1]
                rec["hi"] = f.ranges[:, 2]
            parts.append(struct.pack("<bI", f.new_pass, len(rec)))
            parts.append(rec.tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ParityRequest":
        _header(data, TYPE_REQUEST, "ParityRequest")
        r = _Reader(data, "ParityRequest")
        (rnd,) = r.take("<I")
        n_frames = r.count("frame count", MAX_FRAMES)
        frames = []
        for i in range(n_frames):
            (new_pass,) = r.take("<b")
            if not -1 <= new_pass < MAX_PASSES:
                raise MessageError(f"ParityRequest: frame {i} new pass {new_pass} "
                                   f"outside [-1, {MAX_PASSES - 1}]")
            n_ranges = r.count(f"frame {i} range count", (len(r.data) - r.pos) // 9)
            rec = np.frombuffer(r.raw(9 * n_ranges), dtype=_RANGE_DTYPE)
            ranges = np.stack([rec["pass"].astype(np.int64), rec["lo"].astype(np.int64),
                               rec["hi"].astype(np.int64)], axis=1).reshape(-1, 3)
            bad = (ranges[:, 0] >= MAX_PASSES) | (ranges[:, 1] >= ranges[:, 2])
            if bad.any():
                j = int(np.argmax(bad))
                raise MessageError(f"ParityRequest: frame {i} range {j} (pass {ranges[j, 0]}, "
                                   f"[{ranges[j, 1]}, {ranges[j, 2]})) is empty or its pass "
                                   f"is outside [0, {MAX_PASSES - 1}]")
            frames.append(FrameQuestions(new_pass, ranges))
        r.end()
        return cls(rnd, tuple(frames))


@dataclass(frozen=True)
class ParityReply:
    """Alice's parity bits per frame (uint8 0/1 arrays), in the order of the questions."""

    round: int
    frames: tuple[np.ndarray, ...]

    @property
    def n_parity_bits(self) -> int:
        return sum(len(f) for f in self.frames)

    def to_bytes(self) -> bytes:
        parts = [struct.pack("<BBII", TYPE_REPLY, VERSION, self.round, len(self.frames))]
        for bits in self.frames:
            parts.append(struct.pack("<I", len(bits)))
            parts.append(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ParityReply":
        _header(data, TYPE_REPLY, "ParityReply")
        r = _Reader(data, "ParityReply")
        (rnd,) = r.take("<I")
        n_frames = r.count("frame count", MAX_FRAMES)
        frames = []
        for i in range(n_frames):
            n_bits = r.count(f"frame {i} bit count", 8 * (len(r.data) - r.pos))
            packed = np.frombuffer(r.raw((n_bits + 7) // 8), dtype=np.uint8)
            bits = np.unpackbits(packed)
            if bits[n_bits:].any():
                raise MessageError(f"ParityReply: frame {i} has nonzero padding bits")
            frames.append(bits[:n_bits].copy())
        r.end()
        return cls(rnd, tuple(frames))


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

"""Sifting for the loss-tolerant three-state protocol (LT3): the full public count table.

LT3 (Tamaki et al., PRA 90, 052314 (2014)) estimates the phase error from the X-detector
clicks of all three states, mismatched bases included, so sifting keeps more than the matched
bits: it builds the count table per (Alice state, intensity, Bob detector) at both ends.

Flow::

    Bob:   bob_announce_lt3(slots, channels, rng, n_pulses) -> Lt3Announcement, BobDetections
           (every detected slot, Bob's squashed basis, and his bit where the basis is X)
    Alice: alice_answer_lt3(announcement, pattern) -> Lt3Answer, Lt3Rows
           (per row: her state class and intensity; her Z value is never sent)
    Bob:   bob_apply_answer_lt3(answer, detections) -> Lt3Rows

Pattern bytes: bit0 value, bit1 basis (0 = Z: H for value 0, V for 1; 1 = X: D, value bit
ignored), bits 2-3 intensity (0 = mu, 1 = nu, 2 = vacuum). Bob's channels, squashing,
hold-off and gating are those of the package (``detections``: the BB84 receiver).

What is disclosed: Bob's basis of every detection and his bit on X-basis detections (X
outcomes never become key); Alice's state on rows Bob measured in X, and on Z rows only
whether she sent a Z state or X0. Key rows: Alice Z state, Bob Z detector, intensity mu;
Alice's key bit is her value bit there, Bob's his Z outcome.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from firmware_protocol.wire_facts import PATTERN_MAX_INTENSITY_INDEX as MAX_INTENSITY
from postprocessing.bits import BitsError, pack_bits, packed_len, unpack_bits
from postprocessing.finite_key_lt import Lt3Counts
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting.detections import squashed_detections
from postprocessing.sifting.errors import SiftError, SiftMessageError
from postprocessing.sifting.kernels import all_bits, strictly_increasing
from postprocessing.sifting.messages import MAX_ANNOUNCED
from postprocessing.sifting.records import BobDetections, SiftCounts

CODE_Z = 0
"""Answer code on a Bob-Z row: Alice sent a Z state (which one stays secret)."""
CODE_Z0, CODE_Z1, CODE_X0 = 1, 2, 3
"""Answer codes: Alice's state (Z0/Z1 only on rows Bob measured in X)."""
KEY_INTENSITY = 0
MAX_PULSES = 1 << 48

_ANN = struct.Struct("<4sBBHQQ")   # magic, version, reserved (0), reserved (0), rows, n_pulses
_ANS = struct.Struct("<4sBBHQ")    # magic, version, reserved (0), reserved (0), rows
_ANN_MAGIC = b"QLAN"
_ANS_MAGIC = b"QLAW"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class Lt3Announcement:
    """Bob -> Alice: slots (int64, strictly increasing), basis (uint8 0/1 per slot), x_bits
    (uint8 0/1, one per X-basis row in row order: 0 = D, 1 = A), n_pulses of the block.
    Wire: header, slots int64 LE, basis packed, x_bits packed (big-endian bit order)."""

    slots: np.ndarray
    basis: np.ndarray
    x_bits: np.ndarray
    n_pulses: int

    def validate(self) -> "Lt3Announcement":
        s, b, x = self.slots, self.basis, self.x_bits
        for name, a, dt in (("slots", s, np.int64), ("basis", b, np.uint8), ("x_bits", x,
                                                                            np.uint8)):
            if not (isinstance(a, np.ndarray) and a.dtype == dt and a.ndim == 1):
                raise SiftMessageError(f"LT3 announcement {name}: expected 1-D "
                                          f"{np.dtype(dt).name}")
        if b.size != s.size:
            raise SiftMessageError(f"LT3 announcement: {b.size} bases for {s.size} slots")
        if s.size and (s[0] < 0 or not strictly_increasing(s)):
            raise SiftMessageError("LT3 announcement: slots must be >= 0 and strictly "
                                      "increasing")
        if (b.size and not all_bits(b)) or (x.size and not all_bits(x)):
            raise SiftMessageError("LT3 announcement: bases and bits must be 0 or 1")
        n_x = int(np.count_nonzero(b))
        if x.size != n_x:
            raise SiftMessageError(f"LT3 announcement: {x.size} X bits for {n_x} X rows")
        if not (isinstance(self.n_pulses, (int, np.integer)) and 1 <= self.n_pulses
                <= MAX_PULSES):
            raise SiftMessageError(f"LT3 announcement: n_pulses {self.n_pulses!r} outside "
                                      f"[1, 2^48]")
        if s.size and int(s[-1]) - int(s[0]) >= int(self.n_pulses):
            raise SiftMessageError(f"LT3 announcement: slots span {int(s[-1] - s[0]) + 1} "
                                      f"> n_pulses {int(self.n_pulses)}")
        return self

    def to_bytes(self) -> bytes:
        self.validate()
        return (_ANN.pack(_ANN_MAGIC, _VERSION, 0, 0, self.slots.size, int(self.n_pulses))
                + self.slots.astype("<i8", copy=False).tobytes()
                + pack_bits(self.basis).tobytes() + pack_bits(self.x_bits).tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Lt3Announcement":
        view = memoryview(bytes(data))
        if len(view) < _ANN.size:
            raise SiftMessageError(f"LT3 announcement: {len(view)} bytes < header "
                                      f"{_ANN.size}")
        magic, version, r1, r2, n, n_pulses = _ANN.unpack_from(view)
        if magic != _ANN_MAGIC or version != _VERSION or r1 or r2:
            raise SiftMessageError(f"LT3 announcement: header {magic!r} v{version}, "
                                      f"expected {_ANN_MAGIC!r} v{_VERSION}")
        if n > MAX_ANNOUNCED:
            raise SiftMessageError(f"LT3 announcement: {n} rows > {MAX_ANNOUNCED}")
        body = view[_ANN.size:]
        nb = packed_len(n)
        if len(body) < 8 * n + nb:
            raise SiftMessageError(f"LT3 announcement: body {len(body)} bytes too short "
                                      f"for {n} rows")
        slots = np.frombuffer(body[:8 * n], dtype="<i8").astype(np.int64)
        try:
            basis = unpack_bits(np.frombuffer(body[8 * n:8 * n + nb], np.uint8), n)
            n_x = int(np.count_nonzero(basis))
            rest = body[8 * n + nb:]
            if len(rest) != packed_len(n_x):
                raise SiftMessageError(f"LT3 announcement: {len(rest)} bytes of X bits, "
                                          f"expected {packed_len(n_x)}")
            x_bits = unpack_bits(np.frombuffer(rest, np.uint8), n_x)
        except BitsError as exc:
            raise SiftMessageError(f"LT3 announcement: {exc}") from None
        return cls(slots, basis, x_bits, int(n_pulses)).validate()


@dataclass(frozen=True, eq=False)
class Lt3Answer:
    """Alice -> Bob: one byte per announced row, bits 0-1 the state code (CODE_*), bits 2-3
    the intensity (0..2). Wire: header then the bytes."""

    rows: np.ndarray

    def validate(self, basis: np.ndarray | None = None) -> "Lt3Answer":
        r = self.rows
        if not (isinstance(r, np.ndarray) and r.dtype == np.uint8 and r.ndim == 1):
            raise SiftMessageError("LT3 answer: expected 1-D uint8 rows")
        if r.size and (int(r.max()) >> 4 or int(((r >> 2) & 3).max()) > MAX_INTENSITY):
            raise SiftMessageError("LT3 answer: a byte uses bits 4-7 or intensity 3")
        if basis is not None:
            if basis.size != r.size:
                raise SiftMessageError(f"LT3 answer covers {r.size} rows, Bob announced "
                                          f"{basis.size}")
            code = r & 3
            if np.any((basis == 0) & ((code == CODE_Z0) | (code == CODE_Z1))):
                raise SiftMessageError("LT3 answer names a Z value on a Z row (key "
                                          "disclosure refused)")
            if np.any((basis == 1) & (code == CODE_Z)):
                raise SiftMessageError("LT3 answer withholds the state on an X row")
        return self

    def to_bytes(self) -> bytes:
        self.validate()
        return _ANS.pack(_ANS_MAGIC, _VERSION, 0, 0, self.rows.size) + self.rows.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Lt3Answer":
        data = bytes(data)
        if len(data) < _ANS.size:
            raise SiftMessageError(f"LT3 answer: {len(data)} bytes < header {_ANS.size}")
        magic, version, r1, r2, n = _ANS.unpack_from(data)
        if magic != _ANS_MAGIC or version != _VERSION or r1 or r2:
            raise SiftMessageError(f"LT3 answer: header {magic!r} v{version}, expected "
                                      f"{_ANS_MAGIC!r} v{_VERSION}")
        if len(data) != _ANS.size + n:
            raise SiftMessageError(f"LT3 answer: {len(data) - _ANS.size} row bytes, header "
                                      f"says {n}")
        return cls(np.frombuffer(data, np.uint8, offset=_ANS.size).copy()).validate()


@dataclass(frozen=True, eq=False)
class Lt3Rows:
    """One end's result: key bits (uint8 0/1) of the key rows in slot order, their slots, the
    public count table and the X0 error counts (Cascade's QBER estimate)."""

    key_bits: np.ndarray
    key_slots: np.ndarray
    counts: Lt3Counts
    x0_errors: int
    x0_clicks: int


def _x_bits_per_row(basis: np.ndarray, x_bits: np.ndarray) -> np.ndarray:
    out = np.zeros(basis.size, np.uint8)
    out[basis == 1] = x_bits
    return out


def count_table(basis: np.ndarray, x_bit_rows: np.ndarray, answer_rows: np.ndarray,
                n_pulses: int) -> Lt3Counts:
    """The public count table from public data only (both ends call it on the same inputs).

    basis: Bob's basis per row; x_bit_rows: his bit per row (read on X rows only);
    answer_rows: Alice's answer bytes."""
    code = (answer_rows & 3).astype(np.int64)
    k = ((answer_rows >> 2) & 3).astype(np.int64)
    xr = basis == 1
    state = code[xr] - 1                                 # Z0, Z1, X0 -> 0, 1, 2
    det = x_bit_rows[xr].astype(np.int64)                # D, A -> 0, 1
    x = np.bincount(det * 9 + state * 3 + k[xr], minlength=18).reshape(2, 3, 3)
    zr = ~xr
    key = np.bincount(k[zr & (code == CODE_Z)], minlength=3)
    zx0 = np.bincount(k[zr & (code == CODE_X0)], minlength=3)
    return Lt3Counts(x.tolist(), key[:3].tolist(), zx0[:3].tolist(), int(n_pulses))


def _key_rows(basis: np.ndarray, answer_rows: np.ndarray) -> np.ndarray:
    return (basis == 0) & ((answer_rows & 3) == CODE_Z) & (((answer_rows >> 2) & 3)
                                                           == KEY_INTENSITY)


def _x0_errors(basis, x_bit_rows, answer_rows) -> tuple[int, int]:
    sel = (basis == 1) & ((answer_rows & 3) == CODE_X0)
    return int(np.count_nonzero(x_bit_rows[sel])), int(np.count_nonzero(sel))


def bob_announce_lt3(slots, channels, rng: ProtocolRandom, n_pulses: int, *, valid=None,
                     holdoff_slots: int = 0) -> tuple[Lt3Announcement, BobDetections]:
    """Bob's LT3 announcement: every detected slot, its squashed basis, the X-basis bits."""
    s, b, k, counts = squashed_detections(slots, channels, rng, valid, holdoff_slots)
    rec = BobDetections("lt3", s, b, k, SiftCounts(**counts, n_announced=int(s.size)))
    ann = Lt3Announcement(s, b, k[b == 1].copy(), int(n_pulses))
    return ann.validate(), rec


def alice_answer_lt3(announcement: Lt3Announcement, pattern_bytes
                     ) -> tuple[Lt3Answer, Lt3Rows]:
    """Alice's answer from her pattern bytes for the announced slots, and her key rows."""
    if not isinstance(announcement, Lt3Announcement):
        raise SiftMessageError(f"expected an Lt3Announcement, got "
                                  f"{type(announcement).__name__}")
    announcement.validate()
    basis = announcement.basis
    pattern = np.asarray(pattern_bytes)
    if pattern.ndim != 1 or pattern.dtype != np.uint8 or pattern.size != basis.size:
        raise SiftError(f"pattern_bytes: expected {basis.size} uint8 values, got "
                           f"{pattern.dtype} {pattern.shape}")
    if pattern.size and (int(np.bitwise_or.reduce(pattern)) & 0xF0
                         or int(((pattern >> 2) & 3).max()) > MAX_INTENSITY):
        raise SiftError("pattern_bytes: a byte uses bits 4-7 or intensity index 3")
    a_basis = (pattern >> 1) & 1
    value = pattern & 1
    code = np.where(a_basis == 1, CODE_X0,
                    np.where(basis == 0, CODE_Z, np.where(value == 0, CODE_Z0, CODE_Z1)))
    rows = (code.astype(np.uint8) | (pattern & np.uint8(0x0C))).astype(np.uint8)
    answer = Lt3Answer(rows).validate(basis)
    key = _key_rows(basis, rows)
    x_rows = _x_bits_per_row(basis, announcement.x_bits)
    counts = count_table(basis, x_rows, rows, announcement.n_pulses)
    err, n0 = _x0_errors(basis, x_rows, rows)
    key_bits = value[key].astype(np.uint8)
    value.fill(0)
    return answer, Lt3Rows(key_bits, announcement.slots[key], counts, err, n0)


def bob_apply_answer_lt3(answer: Lt3Answer, detections: BobDetections,
                         n_pulses: int) -> Lt3Rows:
    """Bob's key rows and the count table (the same table Alice computed)."""
    if not isinstance(answer, Lt3Answer):
        raise SiftMessageError(f"expected an Lt3Answer, got {type(answer).__name__}")
    if detections.protocol != "lt3":
        raise SiftMessageError(f"detections are from {detections.protocol!r}, expected "
                                  f"'lt3'")
    basis = detections.basis
    answer.validate(basis)
    rows = answer.rows
    x_rows = np.where(basis == 1, detections.bits, 0).astype(np.uint8)
    counts = count_table(basis, x_rows, rows, n_pulses)
    err, n0 = _x0_errors(basis, x_rows, rows)
    key = _key_rows(basis, rows)
    return Lt3Rows(detections.bits[key].copy(), detections.slots[key], counts, err, n0)

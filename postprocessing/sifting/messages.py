"""Sifting's two peer messages and their wire codec.

``SiftAnnouncement`` (Bob -> Alice) and ``SiftAnswer`` (Alice -> Bob) are small dataclasses of
numpy arrays with ``to_bytes``/``from_bytes``, so the link engine carries them unchanged.
Messages are validated once: ``from_bytes`` checks everything a peer could get wrong, the role
functions build only valid messages, and a message constructed by hand is checked when a role
first receives it. A new protocol variant adds its code to ``PROTOCOLS`` (and to
``BASIS_ANNOUNCED`` when Bob's announcement carries his bases).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from firmware_protocol.wire_facts import PATTERN_MAX_INTENSITY_INDEX
from postprocessing.bits import BitsError, pack_bits, packed_len, unpack_bits
from postprocessing.sifting.errors import SiftMessageError
from postprocessing.sifting.kernels import all_bits, strictly_increasing

MAX_ANNOUNCED = 2**32 - 1
"""Largest number of detections one announcement may carry (the wire count is uint32)."""

PROTOCOLS = {"bb84": 1, "b92": 2}
"""Protocol codes on the wire."""
_PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}

BASIS_ANNOUNCED = frozenset({"bb84"})
"""Protocols whose announcement carries Bob's basis per slot (B92's would reveal his bit)."""

_ANN_MAGIC = b"QSAN"
_ANS_MAGIC = b"QSAW"
_WIRE_VERSION = 1
_HEADER = struct.Struct("<4sBBHQ")  # magic, version, protocol code, reserved (0), count


def _protocol_code(protocol: str) -> int:
    try:
        return PROTOCOLS[protocol]
    except KeyError:
        raise SiftMessageError(f"protocol {protocol!r} unknown; expected one of "
                               f"{sorted(PROTOCOLS)}") from None


def _read_header(data: bytes, magic: bytes, what: str) -> tuple[str, int, memoryview]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SiftMessageError(f"{what}: expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise SiftMessageError(f"{what}: {len(view)} bytes is shorter than the "
                               f"{_HEADER.size}-byte header")
    got_magic, version, code, reserved, count = _HEADER.unpack_from(view, 0)
    if got_magic != magic:
        raise SiftMessageError(f"{what}: magic {got_magic!r}, expected {magic!r}")
    if version != _WIRE_VERSION:
        raise SiftMessageError(f"{what}: version {version}, expected {_WIRE_VERSION}")
    if code not in _PROTOCOL_NAMES:
        raise SiftMessageError(f"{what}: protocol code {code}, expected one of "
                               f"{sorted(_PROTOCOL_NAMES)}")
    if reserved != 0:
        raise SiftMessageError(f"{what}: reserved field {reserved}, expected 0")
    if count > MAX_ANNOUNCED:
        raise SiftMessageError(f"{what}: count {count} exceeds {MAX_ANNOUNCED}")
    return _PROTOCOL_NAMES[code], int(count), view[_HEADER.size:]


@dataclass(frozen=True, eq=False)
class SiftAnnouncement:
    """Bob -> Alice: the slots of his (conclusive) detections and, in BB84, his bases.

    slots: int64, strictly increasing, >= 0. basis: uint8 0/1, one per slot (BB84) or empty (B92).
    Wire: header, slots as int64 little-endian, bases packed (big-endian bit order).
    """

    protocol: str
    slots: np.ndarray
    basis: np.ndarray

    def validate(self) -> "SiftAnnouncement":
        """Check every field; raises SiftMessageError. Remembered, so a message is checked once
        (messages are treated as immutable once built)."""
        if self.__dict__.get("_valid"):
            return self
        _protocol_code(self.protocol)
        slots, basis = self.slots, self.basis
        if not (isinstance(slots, np.ndarray) and slots.dtype == np.int64 and slots.ndim == 1):
            raise SiftMessageError("announcement slots: expected a 1-D int64 array")
        if not (isinstance(basis, np.ndarray) and basis.dtype == np.uint8 and basis.ndim == 1):
            raise SiftMessageError("announcement basis: expected a 1-D uint8 array")
        if slots.size > MAX_ANNOUNCED:
            raise SiftMessageError(f"announcement: {slots.size} slots exceeds {MAX_ANNOUNCED}")
        expected_basis = slots.size if self.protocol in BASIS_ANNOUNCED else 0
        if basis.size != expected_basis:
            raise SiftMessageError(f"announcement ({self.protocol}): {basis.size} bases for "
                                   f"{slots.size} slots, expected {expected_basis}")
        if slots.size and slots[0] < 0:
            raise SiftMessageError(f"announcement: first slot {int(slots[0])} is negative")
        if not strictly_increasing(slots):
            raise SiftMessageError("announcement: slots are not strictly increasing")
        if basis.size and not all_bits(basis):
            raise SiftMessageError("announcement: basis values must be 0 or 1")
        object.__setattr__(self, "_valid", True)
        return self

    def to_bytes(self) -> bytes:
        self.validate()
        header = _HEADER.pack(_ANN_MAGIC, _WIRE_VERSION, _protocol_code(self.protocol), 0,
                              self.slots.size)
        body = self.slots.astype("<i8", copy=False).tobytes()
        if self.protocol in BASIS_ANNOUNCED:
            body += pack_bits(self.basis).tobytes()
        return header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> "SiftAnnouncement":
        protocol, n, body = _read_header(data, _ANN_MAGIC, "announcement")
        n_basis_bytes = packed_len(n) if protocol in BASIS_ANNOUNCED else 0
        if len(body) != 8 * n + n_basis_bytes:
            raise SiftMessageError(f"announcement: body is {len(body)} bytes, expected "
                                   f"{8 * n + n_basis_bytes} for {n} slots")
        slots = np.frombuffer(body[:8 * n], dtype="<i8").astype(np.int64)
        try:
            basis = unpack_bits(np.frombuffer(body[8 * n:], dtype=np.uint8), n) \
                if protocol in BASIS_ANNOUNCED else np.zeros(0, np.uint8)
        except BitsError as exc:
            raise SiftMessageError(f"announcement basis: {exc}") from None
        return cls(protocol, slots, basis).validate()


@dataclass(frozen=True, eq=False)
class SiftAnswer:
    """Alice -> Bob: which announced rows to keep, and the intensity tag of each kept row.

    keep: uint8 0/1, one per announced row. intensity: uint8 in 0..2, one per kept row.
    Wire: header (count = announced rows), keep packed (big-endian bit order), intensity bytes.
    """

    protocol: str
    keep: np.ndarray
    intensity: np.ndarray

    def validate(self) -> "SiftAnswer":
        """Check every field; raises SiftMessageError. Remembered, like SiftAnnouncement's."""
        if self.__dict__.get("_valid"):
            return self
        _protocol_code(self.protocol)
        keep, intensity = self.keep, self.intensity
        if not (isinstance(keep, np.ndarray) and keep.dtype == np.uint8 and keep.ndim == 1):
            raise SiftMessageError("answer keep mask: expected a 1-D uint8 array")
        if not (isinstance(intensity, np.ndarray) and intensity.dtype == np.uint8
                and intensity.ndim == 1):
            raise SiftMessageError("answer intensity: expected a 1-D uint8 array")
        if keep.size > MAX_ANNOUNCED:
            raise SiftMessageError(f"answer: {keep.size} rows exceeds {MAX_ANNOUNCED}")
        if keep.size and not all_bits(keep):
            raise SiftMessageError("answer keep mask: values must be 0 or 1")
        n_keep = int(np.count_nonzero(keep))
        if intensity.size != n_keep:
            raise SiftMessageError(f"answer: {intensity.size} intensity tags for {n_keep} "
                                   f"kept rows")
        if intensity.size and intensity.max() > PATTERN_MAX_INTENSITY_INDEX:
            raise SiftMessageError(f"answer intensity: tag {int(intensity.max())} outside "
                                   f"0..{PATTERN_MAX_INTENSITY_INDEX}")
        object.__setattr__(self, "_valid", True)
        return self

    def to_bytes(self) -> bytes:
        self.validate()
        header = _HEADER.pack(_ANS_MAGIC, _WIRE_VERSION, _protocol_code(self.protocol), 0,
                              self.keep.size)
        return header + pack_bits(self.keep).tobytes() + self.intensity.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SiftAnswer":
        protocol, n, body = _read_header(data, _ANS_MAGIC, "answer")
        n_keep_bytes = packed_len(n)
        if len(body) < n_keep_bytes:
            raise SiftMessageError(f"answer: body is {len(body)} bytes, shorter than the "
                                   f"{n_keep_bytes}-byte keep mask for {n} rows")
        try:
            keep = unpack_bits(np.frombuffer(body[:n_keep_bytes], dtype=np.uint8), n)
        except BitsError as exc:
            raise SiftMessageError(f"answer keep mask: {exc}") from None
        n_keep = int(np.count_nonzero(keep))
        if len(body) != n_keep_bytes + n_keep:
            raise SiftMessageError(f"answer: body is {len(body)} bytes, expected "
                                   f"{n_keep_bytes + n_keep} for {n} rows with {n_keep} kept")
        intensity = np.frombuffer(body[n_keep_bytes:], dtype=np.uint8).copy()
        return cls(protocol, keep, intensity).validate()

"""The messages of the host<->board protocol and their payload layouts (SPEC.md section 3).

Each message is a dataclass with a one-byte ``TYPE`` code, ``pack_payload()`` returning the
payload as a list of bytes-like parts (so large arrays are not copied twice) and
``unpack_payload(view)`` reading a memoryview of a CRC-checked payload. ``seq`` is the frame's
sequence number, filled in by the decoder (ignored by equality).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import ClassVar

import numpy as np

from firmware_protocol.events import EVENT_WORD_BYTES, pack_event_words, unpack_event_words
from firmware_protocol.params import PARAMETERS, ValueKind, param_id
from firmware_protocol.wire_facts import (PATTERN_INTENSITY_MASK, PATTERN_INTENSITY_SHIFT,
                                          PATTERN_MAX_INTENSITY_INDEX, PATTERN_RESERVED_BITS)


class Role(IntEnum):
    ALICE = 1   # transmitter: pattern memory, polarization modulator, sync output
    BOB = 2     # receiver: detectors and time tagger


class Capability(IntFlag):
    EVENT_STREAM = 0x01      # streams detection-event batches (Bob)
    PATTERN_MEMORY = 0x02    # answers pattern requests for past slots (Alice)
    MODULATOR = 0x04         # polarization modulator with loadable calibration (Alice)
    DECOY = 0x08             # three-intensity decoy modulation (Alice)
    TELEMETRY = 0x10         # per-detector telemetry (Bob)
    SYNC = 0x20              # sync pulses out (Alice) / sync channel in (Bob)
    PATTERN_UPLOAD = 0x40    # accepts host-supplied pattern chunks (Alice)


class ErrorCode(IntEnum):
    """Reason carried by a Nack."""

    UNKNOWN_MESSAGE = 1
    UNSUPPORTED_VERSION = 2
    MALFORMED_PAYLOAD = 3
    UNKNOWN_PARAMETER = 4
    VALUE_OUT_OF_RANGE = 5
    WRONG_ROLE = 6
    ALREADY_ACQUIRING = 7
    NOT_ACQUIRING = 8
    PATTERN_UNAVAILABLE = 9
    INTERNAL = 10
    READ_ONLY_PARAMETER = 11


_U8_STR_MAX = 255


def _pack_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > _U8_STR_MAX:
        raise ValueError(f"string of {len(raw)} UTF-8 bytes exceeds {_U8_STR_MAX}")
    return bytes((len(raw),)) + raw


def _unpack_str(view: memoryview, pos: int) -> tuple[str, int]:
    if pos >= len(view):
        raise ValueError(f"string length byte at offset {pos} is past the payload end "
                         f"({len(view)} bytes)")
    n = view[pos]
    end = pos + 1 + n
    if end > len(view):
        raise ValueError("string runs past the payload end")
    return bytes(view[pos + 1:end]).decode("utf-8"), end


def _expect_len(view: memoryview, n: int, what: str) -> None:
    if len(view) != n:
        raise ValueError(f"{what} payload is {len(view)} bytes, expected {n}")


@dataclass
class Message:
    TYPE: ClassVar[int] = -1
    seq: int | None = field(default=None, compare=False, repr=False, kw_only=True)

    def pack_payload(self) -> list:
        return []

    @classmethod
    def unpack_payload(cls, view: memoryview):
        _expect_len(view, 0, cls.__name__)
        return cls()


# -- identification and liveness ---------------------------------------------------------------

@dataclass
class IdentifyRequest(Message):
    TYPE: ClassVar[int] = 0x01


@dataclass
class IdentifyReply(Message):
    TYPE: ClassVar[int] = 0x02
    _FIXED: ClassVar = struct.Struct("<BxI")
    role: Role
    capabilities: Capability
    model: str
    firmware_version: str
    serial: str

    def pack_payload(self):
        return [self._FIXED.pack(int(self.role), int(self.capabilities)),
                _pack_str(self.model), _pack_str(self.firmware_version), _pack_str(self.serial)]

    @classmethod
    def unpack_payload(cls, view):
        role, caps = cls._FIXED.unpack_from(view, 0)
        pos = cls._FIXED.size
        model, pos = _unpack_str(view, pos)
        fw, pos = _unpack_str(view, pos)
        serial, pos = _unpack_str(view, pos)
        _expect_len(view, pos, cls.__name__)
        return cls(Role(role), Capability(caps), model, fw, serial)


@dataclass
class Heartbeat(Message):
    TYPE: ClassVar[int] = 0x03
    _FIXED: ClassVar = struct.Struct("<I")
    token: int

    def pack_payload(self):
        return [self._FIXED.pack(self.token)]

    @classmethod
    def unpack_payload(cls, view):
        _expect_len(view, cls._FIXED.size, cls.__name__)
        return cls(*cls._FIXED.unpack_from(view))


@dataclass
class HeartbeatReply(Message):
    TYPE: ClassVar[int] = 0x04
    _FIXED: ClassVar = struct.Struct("<IQB")
    token: int
    uptime_ms: int
    acquiring: bool

    def pack_payload(self):
        return [self._FIXED.pack(self.token, self.uptime_ms, bool(self.acquiring))]

    @classmethod
    def unpack_payload(cls, view):
        _expect_len(view, cls._FIXED.size, cls.__name__)
        token, uptime, acq = cls._FIXED.unpack_from(view)
        if acq > 1:
            raise ValueError(f"acquiring flag {acq} is not 0 or 1")
        return cls(token, uptime, bool(acq))


# -- parameters ------------------------------------------------------------------------------

_PARAM_VALUE = struct.Struct("<HBx8s")


def _pack_param(param, value) -> bytes:
    spec = PARAMETERS.get(param)
    if spec is not None:
        kind = spec.kind
    else:
        kind = ValueKind.FLOAT64 if isinstance(value, float) else ValueKind.INT64
    if kind is ValueKind.INT64:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"parameter {param!r} takes an integer, got {value!r}")
        raw = struct.pack("<q", int(value))
    else:
        raw = struct.pack("<d", float(value))
    return _PARAM_VALUE.pack(int(param), int(kind), raw)


def _unpack_param(view: memoryview, what: str):
    _expect_len(view, _PARAM_VALUE.size, what)
    pid, kind, raw = _PARAM_VALUE.unpack_from(view)
    if kind == ValueKind.INT64:
        value = struct.unpack("<q", raw)[0]
    elif kind == ValueKind.FLOAT64:
        value = struct.unpack("<d", raw)[0]
    else:
        raise ValueError(f"unknown value kind {kind}")
    return param_id(pid), value


@dataclass
class _ParameterMessage(Message):
    """A parameter id with a typed value (the layout SetParameter and ParameterValue share)."""

    param: int
    value: int | float

    def pack_payload(self):
        return [_pack_param(self.param, self.value)]

    @classmethod
    def unpack_payload(cls, view):
        return cls(*_unpack_param(view, cls.__name__))


@dataclass
class SetParameter(_ParameterMessage):
    TYPE: ClassVar[int] = 0x10


@dataclass
class GetParameter(Message):
    TYPE: ClassVar[int] = 0x11
    _FIXED: ClassVar = struct.Struct("<H")
    param: int

    def pack_payload(self):
        return [self._FIXED.pack(int(self.param))]

    @classmethod
    def unpack_payload(cls, view):
        _expect_len(view, cls._FIXED.size, cls.__name__)
        return cls(param_id(cls._FIXED.unpack_from(view)[0]))


@dataclass
class ParameterValue(_ParameterMessage):
    """Reply to SetParameter (the value now in force) and GetParameter."""

    TYPE: ClassVar[int] = 0x12


# -- acquisition and acknowledgements ----------------------------------------------------------

@dataclass
class StartAcquisition(Message):
    TYPE: ClassVar[int] = 0x20


@dataclass
class StopAcquisition(Message):
    TYPE: ClassVar[int] = 0x21


@dataclass
class Ack(Message):
    TYPE: ClassVar[int] = 0x60
    _FIXED: ClassVar = struct.Struct("<IB")
    ref_seq: int      # sequence number of the acknowledged host frame
    ref_type: int     # its message type

    def pack_payload(self):
        return [self._FIXED.pack(self.ref_seq, self.ref_type)]

    @classmethod
    def unpack_payload(cls, view):
        _expect_len(view, cls._FIXED.size, cls.__name__)
        return cls(*cls._FIXED.unpack_from(view))


@dataclass
class Nack(Message):
    TYPE: ClassVar[int] = 0x61
    _FIXED: ClassVar = struct.Struct("<IBH")
    ref_seq: int
    ref_type: int
    code: ErrorCode
    detail: str = ""

    def pack_payload(self):
        return [self._FIXED.pack(self.ref_seq, self.ref_type, int(self.code)),
                _pack_str(self.detail)]

    @classmethod
    def unpack_payload(cls, view):
        ref_seq, ref_type, code = cls._FIXED.unpack_from(view)
        detail, pos = _unpack_str(view, cls._FIXED.size)
        _expect_len(view, pos, cls.__name__)
        try:
            code = ErrorCode(code)
        except ValueError:
            pass
        return cls(ref_seq, ref_type, code, detail)


# -- Alice: pattern memory and modulator -------------------------------------------------------

@dataclass(eq=False)
class PatternRequest(Message):
    """Host asks Alice's board for the pattern bytes of these absolute slot numbers."""

    TYPE: ClassVar[int] = 0x30
    _FIXED: ClassVar = struct.Struct("<II")
    request_id: int
    slots: np.ndarray          # uint64 slot numbers

    def pack_payload(self):
        slots = np.ascontiguousarray(self.slots, dtype="<u8")
        return [self._FIXED.pack(self.request_id, slots.size), slots]

    @classmethod
    def unpack_payload(cls, view):
        request_id, n = cls._FIXED.unpack_from(view)
        _expect_len(view, cls._FIXED.size + 8 * n, cls.__name__)
        return cls(request_id, np.frombuffer(view, "<u8", n, cls._FIXED.size).astype(np.uint64))

    def __eq__(self, other):
        return (type(other) is type(self) and self.request_id == other.request_id
                and np.array_equal(self.slots, other.slots))


@dataclass(eq=False)
class PatternReply(Message):
    """One pattern byte per requested slot, in request order (layout: wire_facts, SPEC.md)."""

    TYPE: ClassVar[int] = 0x31
    _FIXED: ClassVar = struct.Struct("<II")
    request_id: int
    # uint8 per slot: bit0 value, bit1 basis, bits2-3 intensity. Key material: kept out of repr.
    pattern: np.ndarray = field(repr=False)

    def pack_payload(self):
        pattern = np.ascontiguousarray(self.pattern, dtype=np.uint8)
        return [self._FIXED.pack(self.request_id, pattern.size), pattern]

    @classmethod
    def unpack_payload(cls, view):
        request_id, n = cls._FIXED.unpack_from(view)
        _expect_len(view, cls._FIXED.size + n, cls.__name__)
        return cls(request_id, np.frombuffer(view, np.uint8, n, cls._FIXED.size).copy())

    def __eq__(self, other):
        return (type(other) is type(self) and self.request_id == other.request_id
                and np.array_equal(self.pattern, other.pattern))


PATTERN_REQUEST_MAX_SLOTS = 1 << 19   # 8 bytes a slot: 4 MiB, well inside MAX_PAYLOAD_BYTES
"""Most slots one PatternRequest may ask for (and one PatternUpload may carry)."""


def first_invalid_pattern_byte(pattern: np.ndarray) -> int:
    """Index of the first byte with reserved bits set or intensity index 3, else -1."""
    pattern = np.asarray(pattern, dtype=np.uint8)
    bad = ((pattern & np.uint8(PATTERN_RESERVED_BITS)) != 0) | \
          ((pattern & np.uint8(PATTERN_INTENSITY_MASK)) >> np.uint8(PATTERN_INTENSITY_SHIFT)
           > PATTERN_MAX_INTENSITY_INDEX)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else -1


@dataclass
class ModulatorCalibration(Message):
    """Drive voltages of Alice's polarization modulator for the states H, V, D, A."""

    TYPE: ClassVar[int] = 0x32
    _FIXED: ClassVar = struct.Struct("<4d")
    drive_h_v: float
    drive_v_v: float
    drive_d_v: float
    drive_a_v: float

    def pack_payload(self):
        return [self._FIXED.pack(self.drive_h_v, self.drive_v_v, self.drive_d_v, self.drive_a_v)]

    @classmethod
    def unpack_payload(cls, view):
        _expect_len(view, cls._FIXED.size, cls.__name__)
        return cls(*cls._FIXED.unpack_from(view))


@dataclass(eq=False)
class PatternUpload(Message):
    """Host-supplied pattern bytes for slots [first_slot, first_slot + len(pattern))."""

    TYPE: ClassVar[int] = 0x33
    _FIXED: ClassVar = struct.Struct("<QI")
    first_slot: int
    pattern: np.ndarray = field(repr=False)     # key material: kept out of repr

    def pack_payload(self):
        pattern = np.ascontiguousarray(self.pattern, dtype=np.uint8)
        return [self._FIXED.pack(self.first_slot, pattern.size), pattern]

    @classmethod
    def unpack_payload(cls, view):
        first, n = cls._FIXED.unpack_from(view)
        _expect_len(view, cls._FIXED.size + n, cls.__name__)
        return cls(first, np.frombuffer(view, np.uint8, n, cls._FIXED.size).copy())

    def __eq__(self, other):
        return (type(other) is type(self) and self.first_slot == other.first_slot
                and np.array_equal(self.pattern, other.pattern))


# -- Bob: detection events and telemetry -------------------------------------------------------

@dataclass(eq=False)
class EventBatch(Message):
    """Every detection in the board-clock window [t_start_ps, t_end_ps), in time order.

    ``batch_seq`` counts batches since acquisition start; a missing number is a lost batch.
    """

    TYPE: ClassVar[int] = 0x40
    _FIXED: ClassVar = struct.Struct("<IIqq")
    batch_seq: int
    t_start_ps: int
    t_end_ps: int
    timestamps_ps: np.ndarray   # int64
    channels: np.ndarray        # uint8

    def pack_payload(self):
        if self.t_end_ps < self.t_start_ps:
            raise ValueError(f"t_end_ps {self.t_end_ps} before t_start_ps {self.t_start_ps}")
        words = pack_event_words(self.t_start_ps, self.timestamps_ps, self.channels)
        if words.size and int(np.asarray(self.timestamps_ps).max()) >= self.t_end_ps:
            raise ValueError(f"an event lies at or after t_end_ps {self.t_end_ps}")
        return [self._FIXED.pack(self.batch_seq, words.size, self.t_start_ps, self.t_end_ps),
                words]

    @classmethod
    def unpack_payload(cls, view):
        batch_seq, n, t_start, t_end = cls._FIXED.unpack_from(view)
        _expect_len(view, cls._FIXED.size + EVENT_WORD_BYTES * n, cls.__name__)
        timestamps, channels = unpack_event_words(t_start, view, n, cls._FIXED.size)
        return cls(batch_seq, t_start, t_end, timestamps, channels)

    def __len__(self):
        return int(self.timestamps_ps.size)

    def __eq__(self, other):
        return (type(other) is type(self) and self.batch_seq == other.batch_seq
                and self.t_start_ps == other.t_start_ps and self.t_end_ps == other.t_end_ps
                and np.array_equal(self.timestamps_ps, other.timestamps_ps)
                and np.array_equal(self.channels, other.channels))


@dataclass
class TelemetryRequest(Message):
    TYPE: ClassVar[int] = 0x50


@dataclass(frozen=True)
class DetectorReading:
    counts: int
    bias_v: float
    photocurrent_ua: float
    temperature_c: float


@dataclass
class Telemetry(Message):
    """Per-detector readings (index = detector channel, 0 = H .. 3 = A).

    Floats travel as float32: a reading compares equal after a round trip only at that precision.
    """

    TYPE: ClassVar[int] = 0x51
    _FIXED: ClassVar = struct.Struct("<BBxx")
    _READING: ClassVar = struct.Struct("<Qfff")
    acquiring: bool
    detectors: tuple[DetectorReading, ...]

    def pack_payload(self):
        parts = [self._FIXED.pack(len(self.detectors), bool(self.acquiring))]
        parts += [self._READING.pack(d.counts, d.bias_v, d.photocurrent_ua, d.temperature_c)
                  for d in self.detectors]
        return parts

    @classmethod
    def unpack_payload(cls, view):
        n, acq = cls._FIXED.unpack_from(view)
        _expect_len(view, cls._FIXED.size + n * cls._READING.size, cls.__name__)
        readings = tuple(DetectorReading(*cls._READING.unpack_from(view, cls._FIXED.size + i * cls._READING.size))
                         for i in range(n))
        return cls(bool(acq), readings)


MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in (
    IdentifyRequest, IdentifyReply, Heartbeat, HeartbeatReply, SetParameter, GetParameter,
    ParameterValue, StartAcquisition, StopAcquisition, Ack, Nack, PatternRequest, PatternReply,
    ModulatorCalibration, PatternUpload, EventBatch, TelemetryRequest, Telemetry)}

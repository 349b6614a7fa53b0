"""Thorlabs APT binary messages (as spoken by the MPC320 motorised paddle controller).

Sans-I/O: ``encode_*`` build frames, ``AptDecoder.feed(bytes) -> list[AptMessage]`` splits a
byte stream into messages; the driver owns the port. Frame layout (all little-endian):

    header-only:  id:u16  param1:u8  param2:u8  dest:u8         source:u8      (6 bytes)
    with data:    id:u16  length:u16            dest|0x80:u8    source:u8      + length bytes

There is no checksum: a frame whose id is unknown or whose length is absurd is a protocol error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_BYTES = 6
DATA_FLAG = 0x80
HOST = 0x01               # source address of the PC
GENERIC_USB = 0x50        # destination: a single-channel USB controller such as the MPC320
MAX_DATA_BYTES = 255      # longest data packet the MPC320 messages use is 84 bytes

# Message ids used by the MPC320 (names as in the APT communications protocol).
MOD_IDENTIFY = 0x0223
HW_REQ_INFO = 0x0005
HW_GET_INFO = 0x0006
MOD_SET_CHANENABLESTATE = 0x0210
MOD_REQ_CHANENABLESTATE = 0x0211
MOD_GET_CHANENABLESTATE = 0x0212
MOT_MOVE_HOME = 0x0443
MOT_MOVE_HOMED = 0x0444
MOT_MOVE_ABSOLUTE = 0x0453
MOT_MOVE_COMPLETED = 0x0464
MOT_MOVE_STOP = 0x0465
MOT_MOVE_STOPPED = 0x0466
MOT_REQ_USTATUSUPDATE = 0x0490
MOT_GET_USTATUSUPDATE = 0x0491

# Status bits of the USTATUS structure.
STATUS_MOVING_FORWARD = 0x00000010
STATUS_MOVING_REVERSE = 0x00000020
STATUS_HOMING = 0x00000200
STATUS_HOMED = 0x00000400
STATUS_ENABLED = 0x80000000

_USTATUS = struct.Struct("<HiHhI")       # channel, position (counts), velocity, current, bits
_MOVE_ABS = struct.Struct("<Hi")         # channel, absolute position (counts)
_HW_INFO = struct.Struct("<I8sH4s48s12sHHH")
USTATUS_BYTES = _USTATUS.size            # 14
HW_INFO_BYTES = _HW_INFO.size            # 84


class AptFrameError(ValueError):
    """Bytes that cannot be an APT frame."""


@dataclass(frozen=True)
class AptMessage:
    message_id: int
    param1: int = 0
    param2: int = 0
    data: bytes | None = None            # None for header-only messages
    dest: int = HOST
    source: int = GENERIC_USB


@dataclass(frozen=True)
class UStatus:
    channel: int
    position_counts: int
    velocity: int
    motor_current_ma: int
    status_bits: int


@dataclass(frozen=True)
class HwInfo:
    serial_number: int
    model: str
    hw_type: int
    firmware: str
    notes: str
    hw_version: int
    mod_state: int
    n_channels: int


def encode(msg: AptMessage) -> bytes:
    if msg.data is None:
        return struct.pack("<HBBBB", msg.message_id, msg.param1, msg.param2, msg.dest,
                           msg.source)
    if len(msg.data) > MAX_DATA_BYTES:
        raise AptFrameError(f"data packet of {len(msg.data)} bytes exceeds {MAX_DATA_BYTES}")
    return struct.pack("<HHBB", msg.message_id, len(msg.data), msg.dest | DATA_FLAG,
                       msg.source) + msg.data


def host_command(message_id: int, param1: int = 0, param2: int = 0,
                 data: bytes | None = None) -> bytes:
    """A frame from the PC to the controller."""
    return encode(AptMessage(message_id, param1, param2, data, dest=GENERIC_USB, source=HOST))


def pack_move_absolute(channel: int, position_counts: int) -> bytes:
    return _MOVE_ABS.pack(channel, position_counts)


def unpack_move_absolute(data: bytes) -> tuple[int, int]:
    if len(data) != _MOVE_ABS.size:
        raise AptFrameError(f"MOVE_ABSOLUTE data is {len(data)} bytes, expected {_MOVE_ABS.size}")
    return _MOVE_ABS.unpack(data)


def pack_ustatus(status: UStatus) -> bytes:
    return _USTATUS.pack(status.channel, status.position_counts, status.velocity,
                         status.motor_current_ma, status.status_bits)


def unpack_ustatus(data: bytes) -> UStatus:
    if len(data) != USTATUS_BYTES:
        raise AptFrameError(f"status data is {len(data)} bytes, expected {USTATUS_BYTES}")
    return UStatus(*_USTATUS.unpack(data))


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def pack_hw_info(info: HwInfo) -> bytes:
    major, interim, minor = (int(part) for part in info.firmware.split("."))
    firmware = bytes((minor, interim, major, 0))     # stored minor first; byte 3 unused
    return _HW_INFO.pack(info.serial_number, info.model.encode("ascii")[:8], info.hw_type,
                         firmware, info.notes.encode("ascii")[:48], bytes(12), info.hw_version,
                         info.mod_state, info.n_channels)


def unpack_hw_info(data: bytes) -> HwInfo:
    if len(data) != HW_INFO_BYTES:
        raise AptFrameError(f"HW_GET_INFO data is {len(data)} bytes, expected {HW_INFO_BYTES}")
    serial, model, hw_type, fw, notes, _, hw_version, mod_state, n_channels = \
        _HW_INFO.unpack(data)
    firmware = f"{fw[2]}.{fw[1]}.{fw[0]}"           # minor, interim, major; byte 3 unused
    return HwInfo(serial, _text(model), hw_type, firmware, _text(notes), hw_version,
                  mod_state, n_channels)


class AptDecoder:
    """Feed bytes as they arrive; get complete messages back (partial frames are kept)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[AptMessage]:
        self._buffer += data
        out = []
        while len(self._buffer) >= HEADER_BYTES:
            message_id, a, b, dest, source = struct.unpack_from("<HBBBB", self._buffer)
            if dest & DATA_FLAG:
                length = a | (b << 8)
                if length > MAX_DATA_BYTES:
                    self._buffer.clear()
                    raise AptFrameError(f"frame 0x{message_id:04x} claims {length} data bytes")
                if len(self._buffer) < HEADER_BYTES + length:
                    break
                data_bytes = bytes(self._buffer[HEADER_BYTES:HEADER_BYTES + length])
                del self._buffer[:HEADER_BYTES + length]
                out.append(AptMessage(message_id, 0, 0, data_bytes, dest & ~DATA_FLAG, source))
            else:
                del self._buffer[:HEADER_BYTES]
                out.append(AptMessage(message_id, a, b, None, dest, source))
        return out

    def clear(self) -> None:
        self._buffer.clear()

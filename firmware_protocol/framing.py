"""Frame layout of the host<->board protocol: sync word, checked header, payload, CRC-32.

This module only knows frames (type code, sequence number, payload bytes); what a payload means
lives in ``messages``. Layout (all integers little-endian), see SPEC.md section 2::

    offset  size  field
    0       4     sync word  A7 51 4B 44 ("\\xa7QKD")
    4       1     protocol version
    5       1     message type
    6       2     flags
    8       4     sequence number (u32, wraps)
    12      4     payload length in bytes (u32)
    16      4     header check: CRC-32 of bytes 0..15
    20      n     payload
    20+n    4     payload check: CRC-32 of the payload bytes
"""

from __future__ import annotations

import struct
import zlib

SYNC_WORD = b"\xa7QKD"
PROTOCOL_VERSION = 1

HEADER = struct.Struct("<4sBBHII")
HEADER_CHECK = struct.Struct("<I")
HEADER_SIZE = HEADER.size + HEADER_CHECK.size          # 20
TRAILER_SIZE = 4
FRAME_OVERHEAD = HEADER_SIZE + TRAILER_SIZE           # 24

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
"""Largest payload a decoder accepts by default; a header claiming more is treated as garbage."""

FLAG_REPLY = 0x0001
"""Set by the board on frames that answer a host request (informative; decoders ignore flags)."""


def crc32(data) -> int:
    """CRC-32/ISO-HDLC (zlib), the check used for header and payload."""
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(msg_type: int, seq: int, payload_parts, *, flags: int = 0,
                 version: int = PROTOCOL_VERSION) -> bytes:
    """One frame around the concatenation of ``payload_parts`` (bytes-like objects)."""
    if isinstance(payload_parts, (bytes, bytearray, memoryview)):
        payload_parts = (payload_parts,)
    length = 0
    check = 0
    for part in payload_parts:
        length += memoryview(part).nbytes
        check = zlib.crc32(part, check)
    if length > MAX_PAYLOAD_BYTES:
        # A receiver drops such a frame as corrupt: refuse it here, where the cause is known.
        raise ValueError(f"payload of {length} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte "
                         f"frame limit")
    head = HEADER.pack(SYNC_WORD, version, msg_type, flags & 0xFFFF, seq & 0xFFFFFFFF, length)
    return b"".join((head, HEADER_CHECK.pack(crc32(head)), *payload_parts,
                     struct.pack("<I", check & 0xFFFFFFFF)))

"""Sans-I/O encoder and streaming decoder of the board protocol (caproto style).

Whoever owns the socket or serial port calls ``Encoder.encode(msg)`` to get the bytes to write
and ``Decoder.feed(chunk)`` with whatever arrived; the decoder returns the messages completed so
far and keeps the rest. It never raises on bad input: corrupt frames are dropped and counted,
frames it cannot interpret come out as ``ProtocolAnomaly`` records so the caller decides.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from firmware_protocol.framing import (HEADER, HEADER_SIZE, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION,
                                       SYNC_WORD, TRAILER_SIZE, encode_frame)
from firmware_protocol.messages import MESSAGE_TYPES, Message

_U32 = struct.Struct("<I")
_CHECKED_HEADER_BYTES = HEADER.size


class Encoder:
    """Frames messages with consecutive sequence numbers (u32, wrapping)."""

    def __init__(self, first_seq: int = 0, *, flags: int = 0):
        self._next_seq = first_seq & 0xFFFFFFFF
        self.flags = flags
        self.last_seq: int | None = None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def encode(self, msg: Message, *, flags: int | None = None) -> bytes:
        return self.encode_payload(msg.TYPE, msg.pack_payload(), flags=flags)

    def encode_payload(self, msg_type: int, parts, *, flags: int | None = None) -> bytes:
        """Frame an already packed payload (e.g. pre-packed event words) as the next frame."""
        seq = self._next_seq
        frame = encode_frame(msg_type, seq, parts, flags=self.flags if flags is None else flags)
        self._next_seq = (seq + 1) & 0xFFFFFFFF
        self.last_seq = seq
        return frame


# -- what the decoder returns besides messages -------------------------------------------------

@dataclass
class ProtocolAnomaly:
    """A frame that passed both checks but could not be turned into a message."""

    msg_type: int
    seq: int
    version: int


@dataclass
class UnknownMessage(ProtocolAnomaly):
    """A message type this decoder does not know (e.g. from newer firmware)."""

    payload: bytes = b""


@dataclass
class UnsupportedVersion(ProtocolAnomaly):
    """A frame of a protocol version this decoder does not speak; its payload was skipped."""


@dataclass
class MalformedPayload(ProtocolAnomaly):
    """A known message type whose payload does not parse (wrong length, bad enum, ...)."""

    reason: str = ""


@dataclass
class DecoderStats:
    frames_ok: int = 0          # delivered as messages
    frames_corrupt: int = 0     # header check, length guard or payload CRC failed: dropped
    frames_anomalous: int = 0   # intact frames delivered as ProtocolAnomaly records
    bytes_discarded: int = 0    # bytes not part of any intact frame (garbage, corrupt frames)


@dataclass
class Decoder:
    """Streaming decoder: accepts the byte stream split anywhere, resynchronises on the sync word."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    stats: DecoderStats = field(default_factory=DecoderStats)

    def __post_init__(self):
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partly received frame (the connection it came from is gone); count it."""
        self.stats.bytes_discarded += len(self._buf)
        self._buf.clear()

    def feed(self, data=b"") -> list:
        buf = self._buf
        if data:
            buf += data
        out: list = []
        pos = self._parse(buf, out)
        del buf[:pos]
        return out

    def _parse(self, buf: bytearray, out: list) -> int:
        stats = self.stats
        n = len(buf)
        pos = 0
        with memoryview(buf) as view:
            while n - pos >= HEADER_SIZE:
                if not buf.startswith(SYNC_WORD, pos):
                    nxt = buf.find(SYNC_WORD, pos + 1)
                    if nxt < 0:
                        # keep a tail that might be the start of a sync word
                        nxt = max(pos, n - (len(SYNC_WORD) - 1))
                        stats.bytes_discarded += nxt - pos
                        return nxt
                    stats.bytes_discarded += nxt - pos
                    pos = nxt
                    continue
                _, version, msg_type, _flags, seq, length = HEADER.unpack_from(buf, pos)
                header_ok = (zlib.crc32(view[pos:pos + _CHECKED_HEADER_BYTES])
                             == _U32.unpack_from(buf, pos + _CHECKED_HEADER_BYTES)[0])
                if not header_ok or length > self.max_payload_bytes:
                    stats.frames_corrupt += 1
                    stats.bytes_discarded += 1
                    pos += 1
                    continue
                end = pos + HEADER_SIZE + length + TRAILER_SIZE
                if end > n:
                    break
                body = view[pos + HEADER_SIZE:end - TRAILER_SIZE]
                if zlib.crc32(body) != _U32.unpack_from(buf, end - TRAILER_SIZE)[0]:
                    # A cut-off frame followed by the next one lands here too: rescan inside it.
                    body.release()
                    stats.frames_corrupt += 1
                    stats.bytes_discarded += 1
                    pos += 1
                    continue
                out.append(self._interpret(version, msg_type, seq, body))
                body.release()
                pos = end
        if n - pos >= len(SYNC_WORD) and not buf.startswith(SYNC_WORD, pos):
            # fewer than a header's worth of bytes left, none of them a frame start yet
            nxt = buf.find(SYNC_WORD, pos + 1)
            nxt = nxt if nxt >= 0 else n - (len(SYNC_WORD) - 1)
            stats.bytes_discarded += nxt - pos
            pos = nxt
        return pos

    def _interpret(self, version: int, msg_type: int, seq: int, body: memoryview):
        stats = self.stats
        if version != PROTOCOL_VERSION:
            stats.frames_anomalous += 1
            return UnsupportedVersion(msg_type, seq, version)
        cls = MESSAGE_TYPES.get(msg_type)
        if cls is None:
            stats.frames_anomalous += 1
            return UnknownMessage(msg_type, seq, version, bytes(body))
        try:
            msg = cls.unpack_payload(body)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            stats.frames_anomalous += 1
            return MalformedPayload(msg_type, seq, version, str(exc))
        msg.seq = seq
        stats.frames_ok += 1
        return msg

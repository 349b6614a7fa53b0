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

from firmware_protocol.crc_index import PrefixCrc
from firmware_protocol.framing import (HEADER, HEADER_SIZE, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION,
                                       SYNC_WORD, TRAILER_SIZE, encode_frame)
from firmware_protocol.messages import MESSAGE_TYPES, Message

_U32 = struct.Struct("<I")
_CHECKED_HEADER_BYTES = HEADER.size
_SMALL_PAYLOAD_BYTES = 256   # hashed directly whatever came before: bounded work per header


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
    bytes_hashed: int = 0       # payload bytes passed through CRC-32 (bounded by a multiple of
                                # the input, however headers are stacked: see crc_index)


@dataclass
class Decoder:
    """Streaming decoder: accepts the byte stream split anywhere, resynchronises on the sync word."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    stats: DecoderStats = field(default_factory=DecoderStats)

    def __post_init__(self):
        self._buf = bytearray()
        self._origin = 0              # stream offset of _buf[0]
        self._hashed_to = 0           # stream offset up to which payloads were hashed directly
        self._prefix: PrefixCrc | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partly received frame (the connection it came from is gone); count it."""
        self.stats.bytes_discarded += len(self._buf)
        self._origin += len(self._buf)
        self._buf.clear()
        self._prefix = None

    def feed(self, data=b"") -> list:
        buf = self._buf
        if data:
            buf += data
        out: list = []
        pos = self._parse(buf, out)
        if pos:
            prefix = self._prefix
            if prefix is not None:
                if self._origin + pos >= prefix.end or pos == len(buf):
                    self._prefix = None
                else:
                    prefix.trim(buf, self._origin, self._origin + pos)
            del buf[:pos]
            self._origin += pos
        return out

    def _payload_crc(self, buf: bytearray, body: memoryview, start: int, end: int) -> int:
        """CRC-32 of the payload buf[start:end], hashing no stream byte more than a few times.

        A payload no earlier check has covered is hashed directly (the normal case). One that
        overlaps an earlier, failed payload (resynchronising inside it) is checked through the
        prefix checkpoints instead, in time independent of its length.
        """
        origin = self._origin
        if origin + start >= self._hashed_to or end - start <= _SMALL_PAYLOAD_BYTES:
            self.stats.bytes_hashed += end - start
            self._hashed_to = max(self._hashed_to, origin + end)
            return zlib.crc32(body)
        prefix = self._prefix
        if prefix is None or origin + start < prefix.start:
            prefix = self._prefix = PrefixCrc(origin + start)
        before = prefix.bytes_hashed
        crc = prefix.crc(buf, origin, origin + start, origin + end)
        self.stats.bytes_hashed += prefix.bytes_hashed - before
        return crc

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
                crc = self._payload_crc(buf, body, pos + HEADER_SIZE, end - TRAILER_SIZE)
                if crc != _U32.unpack_from(buf, end - TRAILER_SIZE)[0]:
                    # A cut-off frame followed by the next one lands here too: rescan inside it.
                    body.release()
                    stats.frames_corrupt += 1
                    stats.bytes_discarded += 1
                    pos += 1
                    continue
                if length == _CHECKED_HEADER_BYTES and body[:len(SYNC_WORD)] == SYNC_WORD:
                    # A frame cut right after its header check, followed by the next frame:
                    # its declared 16 payload bytes are the next header, whose own check is
                    # then a valid payload check (the two checks are not bound to each other).
                    # Taken as the cut frame it is; the next frame starts here. A real 16-byte
                    # payload starting with the sync word would be lost (~2**-32 by chance).
                    body.release()
                    stats.frames_corrupt += 1
                    stats.bytes_discarded += HEADER_SIZE
                    pos += HEADER_SIZE
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
        except Exception as exc:   # noqa: BLE001 - bad bytes must never escape feed()
            # Parsers raise ValueError/struct.error by design; anything else is a parser bug
            # that must not poison the decoder either: the frame becomes a record.
            stats.frames_anomalous += 1
            return MalformedPayload(msg_type, seq, version,
                                    f"{type(exc).__name__}: {exc}"[:200])
        msg.seq = seq
        stats.frames_ok += 1
        return msg

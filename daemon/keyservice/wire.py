"""The key service's wire format: ZeroMQ multipart frames in, frames out (sans-I/O).

A request is four frames ``[PROTOCOL, op, request_id, body]`` sent by a DEALER (the ROUTER adds
the peer identity in front); the reply repeats the first three and adds a status code:
``[PROTOCOL, op, request_id, status, body]``. Bodies are UTF-8 JSON objects validated against the
schemas in ``schemas``. Byte-level description: docs/key-service.md.

Decoding never raises anything but ``RequestError``, which carries the status and the message the
client is sent: the server can answer every malformed request and keep serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from daemon.keyservice import schemas

PROTOCOL = b"QKDKS/1"
MAX_REQUEST_ID_BYTES = 64
MAX_BODY_BYTES = 64 * 1024
"""A request body is small (at most a few thousand key IDs); anything larger is refused unread."""

OPERATIONS: dict[bytes, type[msgspec.Struct]] = {
    b"status": schemas.StatusRequest,
    b"enc_keys": schemas.EncKeysRequest,
    b"dec_keys": schemas.DecKeysRequest,
    b"open_connect": schemas.OpenConnectRequest,
    b"get_key": schemas.GetKeyRequest,
    b"close": schemas.CloseRequest,
}

_ENCODER = msgspec.json.Encoder()
_REPLY_BODY_BYTES = 256
_DECODERS = {op: msgspec.json.Decoder(kind) for op, kind in OPERATIONS.items()}


class RequestError(Exception):
    """A request the service refuses; ``status`` and the body are what the client receives."""

    def __init__(self, status: int, message: str, details: list | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = list(details or [])

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class Request(msgspec.Struct, frozen=True):
    """A validated request (a Struct: built in C, once per request)."""

    op: str
    request_id: bytes
    body: msgspec.Struct


@dataclass(frozen=True)
class Reply:
    op: str
    request_id: bytes
    status: int
    body: Any


def _printable(raw: bytes, limit: int = 32) -> str:
    text = raw[:limit].decode("ascii", "backslashreplace")
    return text + ("..." if len(raw) > limit else "")


def peek_request_id(frames: list[bytes]) -> tuple[bytes, bytes]:
    """(op, request_id) of a request as far as they can be read, for replying to a bad one."""
    op = frames[1] if len(frames) > 1 and frames[1] in OPERATIONS else b""
    rid = frames[2] if len(frames) > 2 and 0 < len(frames[2]) <= MAX_REQUEST_ID_BYTES else b""
    return op, rid


def decode_request(frames: list[bytes]) -> Request:
    """Frames after the ROUTER identity -> a validated ``Request`` or ``RequestError(400)``."""
    if len(frames) != 4:
        raise RequestError(400, f"a request has 4 frames [protocol, op, request_id, body], "
                                f"got {len(frames)}")
    proto, op, rid, body = map(bytes, frames)   # no copy of frames that are bytes already
    if proto != PROTOCOL:
        raise RequestError(400, f"unknown protocol {_printable(proto)!r}, expected "
                                f"{PROTOCOL.decode()!r}")
    if op not in OPERATIONS:
        raise RequestError(400, f"unknown operation {_printable(op)!r}",
                           [{"accepted": sorted(o.decode() for o in OPERATIONS)}])
    if not 0 < len(rid) <= MAX_REQUEST_ID_BYTES:
        raise RequestError(400, f"request_id must be 1..{MAX_REQUEST_ID_BYTES} bytes, got "
                                f"{len(rid)}")
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(400, f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        parsed = _DECODERS[op].decode(body or b"{}")
    except msgspec.ValidationError as exc:
        raise RequestError(400, "body does not match the schema of " + op.decode(),
                           [str(exc)]) from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, "body is not valid JSON", [str(exc)]) from None
    return Request(op.decode(), rid, parsed)


def encode_request(op: str, request_id: bytes, body: Any) -> list[bytes]:
    return [PROTOCOL, op.encode(), request_id, _ENCODER.encode(body)]


def encode_reply(op: str, request_id: bytes, status: int, body: Any, *,
                 capacity: int = _REPLY_BODY_BYTES) -> list[bytearray]:
    """Reply frames; bytearrays so that a reply carrying keys can be wiped after sending.

    The body is encoded into its bytearray (no bytes copy of it is left behind unwiped). Give
    ``capacity`` at least the encoded size of a body carrying keys: a buffer that has to grow
    while it is written is moved, and the memory it leaves holds key bytes nobody wipes."""
    out = bytearray(capacity)
    _ENCODER.encode_into(body, out)
    return [bytearray(PROTOCOL), bytearray(op.encode()), bytearray(request_id),
            bytearray(str(status).encode()), out]


def decode_reply(frames: list[bytes]) -> Reply:
    """Client side: reply frames -> ``Reply`` (body as plain JSON); ValueError if malformed."""
    if len(frames) != 5 or bytes(frames[0]) != PROTOCOL:
        raise ValueError(f"not a {PROTOCOL.decode()} reply ({len(frames)} frames)")
    try:
        status = int(bytes(frames[3]))
        body = msgspec.json.decode(bytes(frames[4]))
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValueError(f"malformed reply: {exc}") from None
    return Reply(bytes(frames[1]).decode("ascii", "replace"), bytes(frames[2]), status, body)

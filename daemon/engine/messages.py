"""The engine's own peer messages: link hello, two-step commit, engine-level abort.

They travel in the same envelope as the block roles' messages, with message types from the top
of the byte (0xF0..0xFF) that ``postprocessing.block.MessageType`` must leave free. Link-level
messages use block id 0. Payloads are public: session nonces, policy, board parameters, block
and key IDs — never key bits. Hello and resolve are JSON (rare, human-checkable); the commit
messages are binary (one per block).
"""

from __future__ import annotations

import enum
import json
import struct
import uuid

LINK_BLOCK_ID = 0
ENGINE_TYPE_BASE = 0xF0


class EngineMessage(enum.IntEnum):
    HELLO = 0xF0           # JSON: session, peer_session, node, role, protocol, policy, [board, in_doubt]
    PREPARE = 0xF1         # Bob -> Alice: u64 refill seq, u32 count, count x 16-byte key UUIDs
    PREPARED = 0xF2        # Alice -> Bob: empty
    COMMIT = 0xF3          # Bob -> Alice: empty
    COMMITTED = 0xF4       # Alice -> Bob: empty
    ABORT = 0xF5           # either way: UTF-8 reason
    RESOLVE = 0xF6         # Bob -> Alice, block 0: JSON {"commit": [ids], "discard": [ids]}


class MessageError(ValueError):
    """A malformed engine message (the peer is authenticated, so this is a bug or a mismatch)."""


def is_engine_type(msg_type: int) -> bool:
    return msg_type >= ENGINE_TYPE_BASE


def encode_json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode_json(payload: bytes) -> dict:
    try:
        obj = json.loads(payload.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError(f"engine message is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError("engine message is not a JSON object")
    return obj


def encode_prepare(refill_seq: int, key_ids: list[uuid.UUID]) -> bytes:
    return struct.pack("<QI", refill_seq, len(key_ids)) + b"".join(k.bytes for k in key_ids)


def decode_prepare(payload: bytes) -> tuple[int, list[uuid.UUID]]:
    """(refill sequence number, key IDs)."""
    if len(payload) < 12:
        raise MessageError(f"PREPARE of {len(payload)} bytes: needs at least 12")
    seq, n = struct.unpack_from("<QI", payload)
    if len(payload) != 12 + 16 * n:
        raise MessageError(f"PREPARE announces {n} key IDs in {len(payload)} bytes")
    return seq, [uuid.UUID(bytes=payload[12 + 16 * i: 28 + 16 * i]) for i in range(n)]


def encode_reason(reason: str) -> bytes:
    return reason.encode()[:512]


def decode_reason(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")

"""The engine's own peer messages: link hello and engine-level abort.

They travel in the same envelope as the block roles' messages, with message types from the top
of the byte (0xF0..0xFF) that ``postprocessing.block.MessageType`` must leave free. Link-level
messages use block id 0. Payloads are public: session nonces, policy, board parameters, block
numbers — never key bits. Hello is JSON (rare, human-checkable). The two-step commit's
messages (0xC1..0xC6) belong to ``daemon.keystore.messages``.
"""

from __future__ import annotations

import enum
import json

LINK_BLOCK_ID = 0
ENGINE_TYPE_BASE = 0xF0


class EngineMessage(enum.IntEnum):
    HELLO = 0xF0           # JSON: session, peer_session, node, role, protocol, policy, [board]
    ABORT = 0xF5           # either way: UTF-8 reason


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


def encode_reason(reason: str) -> bytes:
    return reason.encode()[:512]


def decode_reason(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")

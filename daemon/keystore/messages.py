"""Byte layout of the two-step-commit messages (docs/keystore.md §4), sans-I/O.

A message is ``(msg_type, payload)``; the engine carries it in the peer envelope, which already
authenticates it and names the link and block. The payload repeats the block id so that a
message routed to the wrong block is refused rather than acted on. All integers little-endian.

| type | name     | payload                                                                 |
|------|----------|-------------------------------------------------------------------------|
| 0xC1 | PREPARE  | block_id u64, key_size_bits u32, n_keys u32, n_keys x key_id (16 bytes) |
| 0xC2 | PREPARED | block_id u64, tag (32 bytes)                                            |
| 0xC3 | REFUSED  | block_id u64, reason u8                                                 |
| 0xC4 | COMMIT   | block_id u64, tag (32 bytes), refill_index u64 (2^64-1: no refill)      |
| 0xC5 | ABORT    | block_id u64, reason u8                                                 |
| 0xC6 | DONE     | block_id u64, outcome u8 (1 committed, 0 discarded)                     |

``tag`` is SHA-256 of the PREPARE payload: both ends hold it (the coordinator built it, the
participant received it), so it binds a vote and a decision to one exact list of key IDs.
``refill_index`` is the block's place in the link's authentication pool order, counted by the
coordinator's commits: the participant's pool takes the refills in that order whatever order
the COMMITs arrive in. Nothing in any message is derived from key bits.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import struct
import uuid

from daemon.keystore.cutting import check_key_size

MAX_KEYS_PER_BLOCK = 1 << 18          # 4 MiB of key IDs in one PREPARE
TAG_BYTES = 32

_HEAD = struct.Struct("<Q")
_PREPARE_HEAD = struct.Struct("<QII")
_WITH_TAG = struct.Struct("<Q32s")
_COMMIT = struct.Struct("<Q32sQ")
NO_REFILL = (1 << 64) - 1             # COMMIT's refill_index of a block that refills nothing
_WITH_CODE = struct.Struct("<QB")


class CommitMsgType(enum.IntEnum):
    PREPARE = 0xC1
    PREPARED = 0xC2
    REFUSED = 0xC3
    COMMIT = 0xC4
    ABORT = 0xC5
    DONE = 0xC6


COMMIT_TYPES = frozenset(int(t) for t in CommitMsgType)


class Reason(enum.IntEnum):
    """Why a participant refuses (REFUSED) or a coordinator aborts (ABORT) a block."""
    NO_KEY = 1          # participant has no key for this block (its role aborted, or it restarted)
    MISMATCH = 2        # key count/size or ID-list tag does not match
    STORE_FULL = 3      # capacity reached: the sender pauses distillation
    STORE_ERROR = 4     # the sender's store failed (disk, permissions, corruption)
    TIMEOUT = 5         # coordinator got no vote in time
    RECOVERED = 6       # coordinator restarted before deciding (presumed abort)
    DISCARDED = 7       # the block is already discarded at the sender
    ID_REUSED = 8       # a key ID was seen before at the sender
    EMPTY = 9           # the block's key is shorter than one stored key


class CommitMessageError(ValueError):
    """A commit payload that does not decode; the message is dropped and counted."""


@dataclasses.dataclass(frozen=True)
class Prepare:
    block_id: int
    key_size_bits: int
    key_ids: tuple[uuid.UUID, ...]
    payload: bytes

    @property
    def tag(self) -> bytes:
        return hashlib.sha256(self.payload).digest()


@dataclasses.dataclass(frozen=True)
class Tagged:          # PREPARED, COMMIT
    block_id: int
    tag: bytes
    refill_index: int | None = None     # COMMIT only


@dataclasses.dataclass(frozen=True)
class Coded:           # REFUSED, ABORT (reason), DONE (outcome)
    block_id: int
    code: int


PeerMessage = tuple[int, bytes]


def prepare(block_id: int, key_size_bits: int, key_ids: list[uuid.UUID]) -> PeerMessage:
    check_key_size(key_size_bits)
    if not 1 <= len(key_ids) <= MAX_KEYS_PER_BLOCK:
        raise ValueError(f"{len(key_ids)} keys in block {block_id}: expected 1 to "
                         f"{MAX_KEYS_PER_BLOCK}")
    body = b"".join(k.bytes for k in key_ids)
    return CommitMsgType.PREPARE, _PREPARE_HEAD.pack(block_id, key_size_bits, len(key_ids)) + body


def prepared(block_id: int, tag: bytes) -> PeerMessage:
    return CommitMsgType.PREPARED, _WITH_TAG.pack(block_id, tag)


def commit(block_id: int, tag: bytes, refill_index: int | None = None) -> PeerMessage:
    return CommitMsgType.COMMIT, _COMMIT.pack(block_id, tag,
                                              NO_REFILL if refill_index is None else refill_index)


def refused(block_id: int, reason: Reason) -> PeerMessage:
    return CommitMsgType.REFUSED, _WITH_CODE.pack(block_id, int(reason))


def abort(block_id: int, reason: Reason) -> PeerMessage:
    return CommitMsgType.ABORT, _WITH_CODE.pack(block_id, int(reason))


def done(block_id: int, committed: bool) -> PeerMessage:
    return CommitMsgType.DONE, _WITH_CODE.pack(block_id, 1 if committed else 0)


def block_of(payload: bytes) -> int:
    """The block id every commit payload starts with (for routing before full decoding)."""
    if len(payload) < _HEAD.size:
        raise CommitMessageError(f"commit payload of {len(payload)} bytes: expected at least 8")
    return _HEAD.unpack_from(payload)[0]


def decode(msg_type: int, payload: bytes) -> tuple[CommitMsgType, Prepare | Tagged | Coded]:
    """Decode one commit message; CommitMessageError names what is wrong."""
    try:
        kind = CommitMsgType(msg_type)
    except ValueError:
        raise CommitMessageError(f"message type {msg_type!r}: expected one of "
                                 f"{[hex(t) for t in CommitMsgType]}") from None
    payload = bytes(payload)
    if kind is CommitMsgType.PREPARE:
        if len(payload) < _PREPARE_HEAD.size:
            raise CommitMessageError(f"PREPARE of {len(payload)} bytes: expected at least 16")
        block_id, size, n = _PREPARE_HEAD.unpack_from(payload)
        try:
            check_key_size(size)
        except ValueError as exc:
            raise CommitMessageError(f"PREPARE for block {block_id}: {exc}") from None
        if not 1 <= n <= MAX_KEYS_PER_BLOCK:
            raise CommitMessageError(f"PREPARE for block {block_id}: {n} keys, expected 1 to "
                                     f"{MAX_KEYS_PER_BLOCK}")
        if len(payload) != _PREPARE_HEAD.size + 16 * n:
            raise CommitMessageError(f"PREPARE for block {block_id}: {len(payload)} bytes for "
                                     f"{n} key IDs, expected {_PREPARE_HEAD.size + 16 * n}")
        base = _PREPARE_HEAD.size
        ids = tuple(uuid.UUID(bytes=payload[base + 16 * i:base + 16 * i + 16]) for i in range(n))
        if len(set(ids)) != n:
            raise CommitMessageError(f"PREPARE for block {block_id}: a key ID appears twice")
        return kind, Prepare(block_id, size, ids, payload)
    if kind is CommitMsgType.COMMIT:
        if len(payload) != _COMMIT.size:
            raise CommitMessageError(f"COMMIT of {len(payload)} bytes: expected {_COMMIT.size}")
        block_id, tag, index = _COMMIT.unpack(payload)
        return kind, Tagged(block_id, tag, None if index == NO_REFILL else index)
    if kind is CommitMsgType.PREPARED:
        if len(payload) != _WITH_TAG.size:
            raise CommitMessageError(f"{kind.name} of {len(payload)} bytes: expected "
                                     f"{_WITH_TAG.size}")
        return kind, Tagged(*_WITH_TAG.unpack(payload))
    if len(payload) != _WITH_CODE.size:
        raise CommitMessageError(f"{kind.name} of {len(payload)} bytes: expected "
                                 f"{_WITH_CODE.size}")
    block_id, code = _WITH_CODE.unpack(payload)
    if kind is CommitMsgType.DONE:
        if code not in (0, 1):
            raise CommitMessageError(f"DONE for block {block_id}: outcome {code}, expected 0 or 1")
    else:
        try:
            Reason(code)
        except ValueError:
            raise CommitMessageError(f"{kind.name} for block {block_id}: reason {code}, expected "
                                     f"1 to {max(Reason)}") from None
    return kind, Coded(block_id, code)

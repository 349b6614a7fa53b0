"""Sans-I/O codec of the one envelope every peer message travels in (docs/peer-protocol.md).

The envelope is a header, the payload and a Wegman-Carter tag over everything before the tag.
This module only turns envelopes into bytes and back and computes tags from a hash key and a
pad that the caller supplies; where keys come from (``auth_keys``) and which sequence numbers
are acceptable (``session``) are decided elsewhere. ``parse`` and ``decode`` never raise on bad
input: every malformation comes back as a ``DecodeError`` record the caller counts and reports.

Byte order: little-endian throughout (as the board protocol, and as the GF(2^64) words are read).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numba
import numpy as np

from postprocessing.gf2.field64 import gf2_64_mul

MAGIC = b"QKDP"
VERSION = 1
KIND_BLOCK = 0      # a block role's message for the engine
KIND_HELLO = 1      # channel control: sent first on every connection (docs/peer-protocol.md)
KINDS = (KIND_BLOCK, KIND_HELLO)

HEADER = struct.Struct("<4sBBBBIIQQI")   # magic version kind msg_type flags link step block seq n
HEADER_SIZE = HEADER.size                # 36
TAG = struct.Struct("<Q")
TAG_SIZE = TAG.size                      # 8
OVERHEAD = HEADER_SIZE + TAG_SIZE        # 44
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024    # a receiver refuses longer frames unread (a 2e9-pulse
#                                          block's sifting announcement is ~150 MB at 10 km)

U8_MAX = 0xFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class EnvelopeValueError(ValueError):
    """A field given to ``encode`` is outside its range (a bug in the caller, not peer input)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    link_id: int
    block_id: int
    step: int
    msg_type: int
    seq: int
    payload: bytes
    kind: int = KIND_BLOCK


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    """A structurally sound frame whose tag is not yet checked."""

    envelope: Envelope
    tag: int
    authenticated: memoryview    # the bytes the tag covers (header + payload)


# -- what parse/decode return instead of raising -------------------------------------------------

@dataclass(frozen=True, slots=True)
class DecodeError:
    reason: str

    code = "malformed"


@dataclass(frozen=True, slots=True)
class TooShort(DecodeError):
    code = "too_short"


@dataclass(frozen=True, slots=True)
class BadMagic(DecodeError):
    code = "bad_magic"


@dataclass(frozen=True, slots=True)
class UnsupportedVersion(DecodeError):
    code = "unsupported_version"


@dataclass(frozen=True, slots=True)
class UnknownKind(DecodeError):
    code = "unknown_kind"


@dataclass(frozen=True, slots=True)
class ReservedFlags(DecodeError):
    code = "reserved_flags"


@dataclass(frozen=True, slots=True)
class PayloadTooLarge(DecodeError):
    code = "payload_too_large"


@dataclass(frozen=True, slots=True)
class LengthMismatch(DecodeError):
    code = "length_mismatch"


@dataclass(frozen=True, slots=True)
class BadTag(DecodeError):
    """Structurally sound, but the tag does not verify: forged, damaged, or wrong key material."""

    code = "bad_tag"


# -- the tag ---------------------------------------------------------------------------------------

def tag_words(authenticated) -> np.ndarray:
    """The hashed words (reference layout, used by tests): the bytes zero-padded to a multiple
    of 8, read as little-endian u64, then one word holding the byte count (so that no two byte
    strings give the same words)."""
    n = len(authenticated)
    n_words = (n + 7) // 8
    buf = bytearray(8 * n_words + 8)
    buf[:n] = authenticated
    struct.pack_into("<Q", buf, 8 * n_words, n)
    return np.frombuffer(buf, dtype="<u8").astype(np.uint64, copy=False)


@numba.njit(cache=True, nogil=True)
def _poly_hash_words(words, tail, n_bytes, key):
    """``poly_hash64(tag_words(data), [key])`` from the full little-endian words of the data,
    the zero-padded tail word (if the byte count is not a multiple of 8) and the byte count."""
    acc = np.uint64(0)
    for i in range(words.size):
        acc = gf2_64_mul(acc ^ words[i], key)
    if n_bytes % 8:
        acc = gf2_64_mul(acc ^ tail, key)
    return gf2_64_mul(acc ^ np.uint64(n_bytes), key)


def compute_tag(authenticated, hash_key: int, pad: int) -> int:
    """Wegman-Carter tag: polynomial hash in GF(2^64) at ``hash_key``, XOR a one-time ``pad``."""
    n = len(authenticated)
    full = n - n % 8
    words = np.frombuffer(authenticated, dtype="<u8", count=full // 8)
    tail = int.from_bytes(bytes(authenticated[full:]), "little")
    return int(_poly_hash_words(words, np.uint64(tail), n, np.uint64(hash_key))) ^ pad


def hashed_word_count(payload_bytes: int) -> int:
    """L of the forgery bound L / 2^64 for a payload of this size."""
    return (HEADER_SIZE + payload_bytes + 7) // 8 + 1


# -- encode ---------------------------------------------------------------------------------------

def _check(name: str, value: int, top: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= top:
        raise EnvelopeValueError(f"envelope {name} {value!r} outside 0..{top}")


def authenticated_bytes(env: Envelope) -> bytes:
    """Header and payload: the bytes the tag covers."""
    _check("link_id", env.link_id, U32_MAX)
    _check("block_id", env.block_id, U64_MAX)
    _check("step", env.step, U32_MAX)
    _check("msg_type", env.msg_type, U8_MAX)
    _check("seq", env.seq, U64_MAX)
    if env.kind not in KINDS:
        raise EnvelopeValueError(f"envelope kind {env.kind!r} not one of {KINDS}")
    payload = bytes(env.payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EnvelopeValueError(
            f"envelope payload of {len(payload)} bytes over the limit of {MAX_PAYLOAD_BYTES}")
    return HEADER.pack(MAGIC, VERSION, env.kind, env.msg_type, 0, env.link_id, env.step,
                       env.block_id, env.seq, len(payload)) + payload


def encode(env: Envelope, hash_key: int, pad: int) -> bytes:
    """The frame of ``env`` with its tag (``pad`` must be the one reserved for ``env.seq``)."""
    body = authenticated_bytes(env)
    return body + TAG.pack(compute_tag(body, hash_key, pad))


# -- decode ---------------------------------------------------------------------------------------

def parse(frame, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> ParsedFrame | DecodeError:
    """Check the structure of one frame (one ZeroMQ message); the tag is left to ``verify``."""
    try:
        view = memoryview(frame).cast("B")
    except TypeError:
        return TooShort("frame is not a byte buffer")
    n = len(view)
    if n < OVERHEAD:
        return TooShort(f"frame of {n} bytes, shorter than the {OVERHEAD}-byte minimum")
    magic, version, kind, msg_type, flags, link_id, step, block_id, seq, length = \
        HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        return BadMagic(f"magic {magic.hex()} is not {MAGIC.hex()}")
    if version != VERSION:
        return UnsupportedVersion(f"version {version}, this node speaks {VERSION}")
    if kind not in KINDS:
        return UnknownKind(f"kind {kind}, known kinds are {KINDS}")
    if flags != 0:
        return ReservedFlags(f"flags 0x{flags:02x}, reserved bits must be 0")
    if length > max_payload_bytes:
        return PayloadTooLarge(f"payload length {length} over the limit of {max_payload_bytes}")
    if n != OVERHEAD + length:
        return LengthMismatch(f"frame of {n} bytes, header says {OVERHEAD + length}")
    payload = bytes(view[HEADER_SIZE:HEADER_SIZE + length])
    env = Envelope(link_id, block_id, step, msg_type, seq, payload, kind)
    tag = TAG.unpack_from(view, HEADER_SIZE + length)[0]
    return ParsedFrame(env, tag, view[:HEADER_SIZE + length])


def verify(parsed: ParsedFrame, hash_key: int, pad: int) -> bool:
    return compute_tag(parsed.authenticated, hash_key, pad) == parsed.tag


def decode(frame, keys, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Envelope | DecodeError:
    """Parse and authenticate one frame; ``keys(seq)`` gives ``(hash_key, pad)`` or None when the
    receiver has no pad for that sequence number (reported as a bad tag)."""
    parsed = parse(frame, max_payload_bytes)
    if isinstance(parsed, DecodeError):
        return parsed
    k = keys(parsed.envelope.seq)
    if k is None or not verify(parsed, *k):
        return BadTag(f"tag of seq {parsed.envelope.seq} does not verify")
    return parsed.envelope

"""Message types of one block between Alice's and Bob's block roles, and the two payloads that
belong to no step module (ABORT, PA_SEED). docs/block-protocol.md gives the byte layouts.

A message is ``(msg_type, payload)``: a small int from ``MessageType`` and bytes. The peer
envelope carries both opaquely (its own header, sequence number and authentication tag).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from postprocessing.bits import BitsError, pack_bits, unpack_bits
from postprocessing.estimation import AbortReason

PeerMessage = tuple  # (msg_type: int, payload: bytes)


class MessageType(enum.IntEnum):
    """Block-step message types (< 256). B->A: Bob sends, A->B: Alice sends."""

    SIFT_ANNOUNCE = 1    # B->A  sifting.SiftAnnouncement
    SIFT_ANSWER = 2      # A->B  sifting.SiftAnswer
    EST_SAMPLE = 3       # B->A  estimation.SampleAnnouncement (sampled positions, Bob's bits)
    EST_VERDICT = 4      # A->B  estimation.ClassVerdict (per basis, or per intensity for decoys)
    CASCADE_SETUP = 5    # B->A  reconciliation CascadeSetup (permutation seed, schedule, frames)
    PARITY_REQUEST = 6   # B->A  reconciliation ParityRequest (one per round, all frames)
    PARITY_REPLY = 7     # A->B  reconciliation ParityReply
    VERIFY_TAGS = 8      # B->A  verification.VerifyMessage (points, Bob's tags)
    PA_SEED = 9          # A->B  PaSeed (key length, Toeplitz seed)
    ABORT = 15           # both  Abort (reason codes, text)


# Alice's answer to a Cascade request this small is tens of microseconds of work (measured at
# a 5.5 Mbit node block in frames of 200,000 bits: 799 of 845 requests, mean 86 us, longest
# 0.5 ms): less than the two thread hops a node would spend handing it to its compute pool and
# back, which on a loaded machine add a scheduling delay to every round trip. A node runs such
# steps on its event loop. Bob's steps are never light by size: a small reply can make him open
# the next Cascade pass (up to 26 ms measured), and requests of a new pass run to 500 kB.
LIGHT_STEP_BYTES = 16 * 1024


def is_light_step(msg_type: int, payload_bytes: int) -> bool:
    """Whether receiving this message is cheap enough to run where it arrived (see above)."""
    return msg_type == MessageType.PARITY_REQUEST and payload_bytes < LIGHT_STEP_BYTES


class BlockMessageError(ValueError):
    """A block message payload that cannot be decoded."""


# Reason codes on the wire: stable small ints, independent of the enum's order.
REASON_CODES = {
    AbortReason.TOO_FEW_SIFTED_BITS: 1, AbortReason.SAMPLE_TOO_SMALL: 2,
    AbortReason.QBER_ABOVE_THRESHOLD: 3, AbortReason.YIELD_DROP: 4,
    AbortReason.RECONCILIATION_FAILED: 5, AbortReason.VERIFICATION_FAILED: 6,
    AbortReason.NO_SECRET_KEY: 7, AbortReason.NO_SECURITY_PROOF: 8,
    AbortReason.MULTI_CLICK_EXCESS: 9, AbortReason.PEER_ABORT: 10,
    AbortReason.PROTOCOL_ERROR: 11, AbortReason.ASSUMPTION_VIOLATED: 12,
}
_REASONS_BY_CODE = {v: k for k, v in REASON_CODES.items()}
MAX_TEXT_BYTES = 1024

_ABORT_HEAD = struct.Struct("<BB")   # version, number of reasons
_PA_HEAD = struct.Struct("<BQQ")     # version, input bits n, output bits l
_VERSION = 1


@dataclass(frozen=True)
class Abort:
    """Why a block stops. Text is for humans (counts and rates only, never key material)."""

    reasons: tuple[AbortReason, ...]
    text: str = ""

    def to_bytes(self) -> bytes:
        text = self.text.encode("utf-8")[:MAX_TEXT_BYTES]
        codes = bytes(REASON_CODES[r] for r in self.reasons[:255])
        return _ABORT_HEAD.pack(_VERSION, len(codes)) + codes + struct.pack("<H", len(text)) + text

    @classmethod
    def from_bytes(cls, data: bytes) -> "Abort":
        data = bytes(data)
        if len(data) < _ABORT_HEAD.size + 2:
            raise BlockMessageError(f"abort: {len(data)} bytes, need at least "
                                    f"{_ABORT_HEAD.size + 2}")
        version, n = _ABORT_HEAD.unpack_from(data)
        if version != _VERSION:
            raise BlockMessageError(f"abort: version {version}, expected {_VERSION}")
        off = _ABORT_HEAD.size
        if len(data) < off + n + 2:
            raise BlockMessageError(f"abort: {len(data)} bytes cannot hold {n} reason codes")
        try:
            reasons = tuple(_REASONS_BY_CODE[c] for c in data[off:off + n])
        except KeyError as exc:
            raise BlockMessageError(f"abort: unknown reason code {exc.args[0]} (accepted: "
                                    f"{sorted(_REASONS_BY_CODE)})") from None
        (n_text,) = struct.unpack_from("<H", data, off + n)
        text = data[off + n + 2:]
        if len(text) != n_text or n_text > MAX_TEXT_BYTES:
            raise BlockMessageError(f"abort: text of {len(text)} bytes, header says {n_text} "
                                    f"(at most {MAX_TEXT_BYTES})")
        return cls(reasons, text.decode("utf-8", errors="replace"))


@dataclass(frozen=True, eq=False)
class PaSeed:
    """Alice -> Bob: the final key length and the fresh Toeplitz seed (n + l - 1 bits)."""

    n_bits: int
    key_length: int
    seed: np.ndarray  # uint8 0/1

    def to_bytes(self) -> bytes:
        return (_PA_HEAD.pack(_VERSION, self.n_bits, self.key_length)
                + pack_bits(self.seed).tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "PaSeed":
        data = bytes(data)
        if len(data) < _PA_HEAD.size:
            raise BlockMessageError(f"PA seed: {len(data)} bytes, need at least {_PA_HEAD.size}")
        version, n, ell = _PA_HEAD.unpack_from(data)
        if version != _VERSION:
            raise BlockMessageError(f"PA seed: version {version}, expected {_VERSION}")
        if not 1 <= ell <= n <= 1 << 40:
            raise BlockMessageError(f"PA seed: key length {ell} must lie in [1, n={n}]")
        n_seed = n + ell - 1
        body = np.frombuffer(data, dtype=np.uint8, offset=_PA_HEAD.size)
        try:
            seed = unpack_bits(body, n_seed)
        except BitsError as exc:
            raise BlockMessageError(f"PA seed: {exc}") from None
        return cls(int(n), int(ell), seed)

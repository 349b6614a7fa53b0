"""The engine's ports: what it needs from the peer channel, the key store and the block roles.

The engine is written against these ``typing.Protocol`` shapes only, so the real adapters
(``daemon/peer`` channel, ``daemon/keystore`` store, ``postprocessing/block`` roles) and the
tests' in-memory doubles plug in the same way, through ``runtime.node.Ports``. Nothing here
does I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from daemon.config import LinkConfig

PeerMessage = tuple[int, bytes]
"""(msg_type, payload): what a block role emits and consumes; msg_type < 256."""


# -- peer channel (daemon/peer/channel.py) ----------------------------------------------------

@runtime_checkable
class Envelope(Protocol):
    """One authenticated peer message, as the channel hands it over."""

    link_id: str
    block_id: int
    step: int
    msg_type: int
    payload: bytes


@dataclass(frozen=True)
class Rejected:
    """A peer message the channel dropped (bad tag, replay, reorder, foreign link, bad type).

    The channel reports it instead of an Envelope so the engine aborts the block at both ends;
    ``block_id`` is None when the message could not even be attributed to a block.
    """

    link_id: str
    block_id: int | None
    reason: str


class PeerChannel(Protocol):
    """One authenticated channel to one link's peer (asyncio)."""

    async def start(self) -> None: ...

    async def send(self, link_id: str, block_id: int, step: int, msg_type: int,
                   payload: bytes) -> None: ...

    async def recv(self) -> Envelope | Rejected: ...

    async def close(self) -> None: ...

    def auth_key_bits_left(self) -> int | None:
        """Wegman-Carter key material left in the pool (None when not known)."""
        ...

    def auth_refill_bits(self, key_bits: int) -> int:
        """How many of a block key's ``key_bits`` bits go to the authentication pool: a rule of
        the length only, so both ends set aside the same bits (counted in the block's
        figures; the engine stores only the bits after them)."""
        ...

    def next_auth_refill(self, link_id: str) -> int:
        """The number of the next refill the pool takes (durable: it survives a restart)."""
        ...

    def refill_auth_key(self, link_id: str, index: int, key_bytes) -> int:
        """Append refill number ``index`` (the packed bits a committed block set aside, as the
        store's ``pending_auth_refills`` hands them out) durably; returns the bits taken, 0
        for a refill taken already. Called from the engine's commit thread, in number order."""
        ...


PeerChannelFactory = Callable[[LinkConfig], PeerChannel]


# -- key store (daemon/keystore) --------------------------------------------------------------

@dataclass(frozen=True)
class StoreUsage:
    stored_bits: int
    capacity_bits: int

    @property
    def full(self) -> bool:
        return self.stored_bits >= self.capacity_bits


@dataclass(frozen=True)
class StoreDigest:
    """What two stores compare without showing a key: counts, an ID digest and a keyed MAC."""

    n_keys: int
    n_bits: int
    ids_sha256: str
    bits_hmac_sha256: str    # HMAC-SHA256(nonce, sorted (id, bits) of committed keys)


class KeyStore(Protocol):
    """Durable key store; synchronous, the engine calls it from its threads.

    The block half is what ``daemon.keystore.commit.LinkCommit`` drives (prepare with the
    coordinator flag, commit tag and authentication refill, commit, discard, block_state,
    block_info, in_doubt; see ``daemon.keystore.store.KeyStore``); the engine moves committed
    refills into the authentication pool (pending_auth_refills, auth_refills_taken); ``usage`` and ``digest`` feed status and the
    comparison of two stores.
    """

    def prepare(self, link_id: str, block_id: int, keys: list[tuple[uuid.UUID, bytes]], *,
                coordinator: bool, commit_tag: bytes = b"", auth_bits=None) -> None: ...

    def commit(self, link_id: str, block_id: int, *,
               refill_index: int | None = None) -> int | None: ...

    def pending_auth_refills(self, link_id: str, start: int = 0) -> list[tuple[int, bytes]]: ...

    def auth_refills_taken(self, link_id: str, below: int) -> None: ...

    def discard(self, link_id: str, block_id: int) -> bool: ...

    def block_state(self, link_id: str, block_id: int) -> str | None: ...

    def block_info(self, link_id: str, block_id: int) -> Any: ...

    def in_doubt(self, link_id: str) -> list[int]: ...

    def usage(self, link_id: str) -> StoreUsage: ...

    def digest(self, link_id: str, nonce: bytes) -> StoreDigest: ...


# -- block roles (postprocessing/block) -------------------------------------------------------

class BlockOutcome(Protocol):
    key: np.ndarray          # uint8 0/1; the engine wipes it after storing
    aborted: bool
    reasons: list[str]

    @property
    def stats(self) -> Any:  # has to_dict() -> JSON-able dict
        ...


class BlockRole(Protocol):
    """One sans-I/O role object per node per block (INTERFACES section 2)."""

    def start(self) -> list[PeerMessage]: ...

    def receive(self, msg: PeerMessage) -> list[PeerMessage]: ...

    @property
    def done(self) -> bool: ...

    @property
    def outcome(self) -> BlockOutcome | None: ...


@dataclass(frozen=True)
class BoardParameters:
    """Alice's public board parameters, announced to Bob's node when the link starts."""

    clock_hz: float
    sync_period: int
    sync_key: int
    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    p_basis_x: float | None = None    # LT3: Alice's X0 share; Z0 and Z1 split the rest evenly

    def to_dict(self) -> dict:
        return {"clock_hz": self.clock_hz, "sync_period": self.sync_period,
                "sync_key": self.sync_key, "intensities": list(self.intensities),
                "probabilities": list(self.probabilities), "p_basis_x": self.p_basis_x}

    @classmethod
    def from_dict(cls, d: dict) -> BoardParameters:
        p_x = d.get("p_basis_x")
        return cls(float(d["clock_hz"]), int(d["sync_period"]), int(d["sync_key"]),
                   tuple(float(x) for x in d["intensities"]),
                   tuple(float(x) for x in d["probabilities"]),
                   None if p_x is None else float(p_x))


@dataclass(frozen=True, eq=False)
class AcquiredBlock:
    """Bob's events of one block, already mapped to Alice's slots (alignment done)."""

    slots: np.ndarray       # int64
    channels: np.ndarray    # uint8
    valid: np.ndarray       # bool: inside the timing gate
    n_pulses: int           # slots the block covers
    first_slot: int


class BlockRoleFactory(Protocol):
    """Builds the role objects; it owns BlockParams and the protocol randomness.

    The real one maps ``link.policy``/``link.calibration`` and the board parameters to
    ``postprocessing.block.BlockParams`` and gives each role a fresh ``ProtocolRandom``.
    """

    def alice(self, link: LinkConfig, board: BoardParameters,
              pattern_of: Callable[[np.ndarray], np.ndarray]) -> BlockRole: ...

    def bob(self, link: LinkConfig, board: BoardParameters, block: AcquiredBlock) -> BlockRole: ...

    def is_light_step(self, msg_type: int, payload_bytes: int) -> bool:
        """True when a role's ``receive`` of this message is cheap enough (well under a
        millisecond) for the event loop; every other step runs in the compute pool."""
        ...

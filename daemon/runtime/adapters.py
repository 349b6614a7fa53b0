"""The real ports: the CurveZMQ peer channel, the SQLite key store and the block roles.

``build_ports()`` maps each component onto its shape in ``engine/ports.py`` (see
``wiring.py``). The adapters translate only: link ids (the envelope carries a 32-bit number,
derived from the link's name so both ends agree without configuring it), the channel's
rejection events (turned into ``Rejected`` items so the engine aborts the block), the store's
figures (usage, a digest of the committed keys) and the link's policy into ``BlockParams``.
The key service shares a link's channel: ``ChannelPort.divert`` hands its messages (and the
channel's reconnects) to it instead of the engine, ``send_service`` sends its messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from daemon.config import LinkConfig, NodeConfig
from daemon.curve_keys import load_keypair, load_public_key
from daemon.engine.messages import LINK_BLOCK_ID, EngineMessage
from daemon.engine.ports import (AcquiredBlock, BoardParameters, Rejected, StoreDigest,
                                 StoreUsage)
from daemon.keyservice.reservations import MESSAGE_TYPES as KEYSERVICE_TYPES
from daemon.keystore.messages import COMMIT_TYPES
from daemon.keystore.store import KeyStore
from daemon.peer import session as ss
from daemon.peer.auth_keys import STRIDE, AuthKeyPool
from daemon.peer.channel import PeerChannel, PeerChannelError
from daemon.runtime.wiring import Ports
from postprocessing.block import (AliceBlock, BlockParams, BlockParamsError, BobBlock,
                                  MessageType)
from postprocessing.block.messages import is_light_step
from postprocessing.block.params import DEFAULT_FRAME_BITS
from postprocessing.randomness import ProtocolRandom

log = logging.getLogger("qkd.adapters")

REFILL_MAX_BITS = 1 << 15
"""Authentication key taken from each block's fresh key: 256 messages per direction, several
times what a block's messages spend (about 2 x 64 bits per round trip); never more than half
of the block's key. A fixed rule of the key length, so both ends take the same bits."""

LINK_TYPES = (frozenset(int(t) for t in MessageType) | frozenset(int(t) for t in EngineMessage)
              | COMMIT_TYPES | KEYSERVICE_TYPES)


def link_number(link_id: str) -> int:
    """The 32-bit link id of the envelope: the first 4 bytes of SHA-256 of the link's name."""
    return int.from_bytes(hashlib.sha256(link_id.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class LinkEnvelope:
    """An authenticated envelope as the engine sees it (link id by name)."""

    link_id: str
    block_id: int
    step: int
    msg_type: int
    payload: bytes


class ChannelPort:
    """``engine.ports.PeerChannel`` over ``daemon.peer.channel.PeerChannel``."""

    def __init__(self, node: NodeConfig, link: LinkConfig, **channel_options):
        self.link = link
        self.number = link_number(link.id)
        mine = load_keypair(link.keys.secret_key_file)
        self.pool = AuthKeyPool(node.state_dir / "auth" / link.id, local_role=link.role,
                                bootstrap=link.peer.auth_bootstrap_file)
        self.channel = PeerChannel(
            link_id=self.number, pool=self.pool,
            mode="bind" if link.peer.bind else "connect", endpoint=link.peer.endpoint,
            public_key=mine.public, secret_key=mine.secret,
            peer_public_key=load_public_key(link.peer.public_key_file),
            allowed_types=LINK_TYPES, **channel_options)
        self._items: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._diverted: frozenset[int] = frozenset()
        self._divert_to = None
        self._on_connected = None

    def divert(self, msg_types, handler, on_connected=None) -> None:
        """Link-level messages (block 0) of these types go to ``await handler(type, payload)``
        instead of the engine, in the order received; ``await on_connected()`` runs (as a task
        of its own) whenever the channel completes a handshake with the peer."""
        self._diverted = frozenset(msg_types)
        self._divert_to = handler
        self._on_connected = on_connected

    async def send_service(self, msg_type: int, payload: bytes) -> None:
        """Send a link-level message for a service beside the engine (the key service);
        ConnectionError while the channel is not running (before start, after close)."""
        try:
            await self.channel.send(self.number, LINK_BLOCK_ID, 0, msg_type, payload)
        except PeerChannelError as exc:
            raise ConnectionError(str(exc)) from None

    async def start(self) -> None:
        self._items = asyncio.Queue(4096)
        await self.channel.start()
        self._tasks = [asyncio.create_task(self._envelopes(), name=f"{self.link.id}-envelopes"),
                       asyncio.create_task(self._events(), name=f"{self.link.id}-events")]

    async def _envelopes(self) -> None:
        while True:
            env = await self.channel.recv()
            if env.msg_type in self._diverted and env.block_id == LINK_BLOCK_ID:
                try:
                    await self._divert_to(env.msg_type, bytes(env.payload))
                except Exception:      # the service's fault must not stop the link's reader
                    log.exception("link %s: a diverted peer message (type %#x) failed",
                                  self.link.id, env.msg_type)
                continue
            await self._items.put(LinkEnvelope(self.link.id, env.block_id, env.step,
                                               env.msg_type, bytes(env.payload)))

    async def _events(self) -> None:
        while True:
            event = await self.channel.next_event()
            if event.kind == ss.EVENT_CONNECTED and self._on_connected is not None:
                task = asyncio.create_task(self._connected(), name=f"{self.link.id}-up")
                self._tasks.append(task)
                self._tasks = [t for t in self._tasks if not t.done()]
            if event.is_rejection:
                # The block the frame claims: a damaged, replayed or reordered message of a live
                # block aborts that block at both ends (an attacker who can forge a claim can
                # also just drop the message, so believing it costs nothing).
                await self._items.put(Rejected(self.link.id, event.block_id,
                                               f"{event.kind}: {event.detail}"))

    async def _connected(self) -> None:
        try:
            await self._on_connected()
        except Exception:
            log.exception("link %s: the service's reconnect handler failed", self.link.id)

    async def send(self, link_id: str, block_id: int, step: int, msg_type: int,
                   payload: bytes) -> None:
        await self.channel.send(link_number(link_id), block_id, step, msg_type, payload)

    async def recv(self):
        return await self._items.get()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close()
        self.pool.close()

    def auth_key_bits_left(self) -> int:
        st = self.pool.status()
        return 64 * min(st.send_messages_left, st.recv_messages_left)

    def auth_refill_bits(self, key_bits: int) -> int:
        take = min(REFILL_MAX_BITS, int(key_bits) // 2)
        return take - take % (8 * STRIDE)

    def next_auth_refill(self, link_id: str) -> int:
        return self.pool.next_refill

    def refill_auth_key(self, link_id: str, index: int, key_bytes) -> int:
        return 8 * self.pool.refill(key_bytes, index)

    def status(self) -> dict:
        return self.channel.status()


class StorePort(KeyStore):
    """``engine.ports.KeyStore``: the SQLite store (one file per node) with status figures."""

    def __init__(self, node: NodeConfig):
        super().__init__(node.keystore.path, max_bits=node.keystore.capacity_bits)
        self.capacity_bits = node.keystore.capacity_bits

    def usage(self, link_id: str) -> StoreUsage:
        return StoreUsage(self.fill().bits, self.capacity_bits)

    def digest(self, link_id: str, nonce: bytes) -> StoreDigest:
        return StoreDigest(*self.committed_digest(link_id, nonce))


def block_params(link: LinkConfig, board: BoardParameters) -> BlockParams:
    """The link's policy, calibration and Alice's announced board parameters as BlockParams."""
    p = link.policy
    common = dict(qber_tol=p.qber_tol, eps_sec=p.eps_sec, eps_cor=p.eps_cor,
                  schedule=p.schedule, qber_threshold=p.qber_threshold,
                  sample_fraction=p.sample_fraction, min_sample_size=p.min_sample_size,
                  frame_bits=DEFAULT_FRAME_BITS)
    if link.protocol == "bb84-decoy":
        return BlockParams(protocol="bb84", intensities=board.intensities,
                           intensity_probabilities=board.probabilities, **common)
    if link.protocol == "b92":
        extra = ({} if link.calibration.max_multi_click_fraction is None else
                 {"max_multi_click_fraction": link.calibration.max_multi_click_fraction})
        return BlockParams(protocol="b92", expected_conclusive_per_pulse=(
            link.calibration.expected_conclusive_per_pulse), **extra, **common)
    if link.protocol == "lt3":
        return BlockParams(protocol="lt3", **lt3_inputs(link, board), **common)
    return BlockParams(protocol="bb84", **common)


def lt3_inputs(link: LinkConfig, board: BoardParameters) -> dict:
    """LT3's inputs: intensities and state probabilities as Alice's board announces them (her
    board draws the Z bit evenly, so Z0 and Z1 share 1 - P_BASIS_X), the rest as calibrated."""
    if board.p_basis_x is None:
        raise BoardMismatchError(f"link {link.id}: Alice's board did not announce P_BASIS_X, "
                            f"which LT3 needs for her state probabilities")
    cal = link.calibration
    p_z = (1.0 - board.p_basis_x) / 2
    return dict(intensities=board.intensities, intensity_probabilities=board.probabilities,
                alice_state_probabilities=(p_z, p_z, board.p_basis_x),
                bloch_vectors=cal.bloch_vectors, bob_z_probability=cal.bob_z_probability,
                max_multi_click_fraction=cal.max_multi_click_fraction,
                max_basis_efficiency_deviation=cal.max_basis_efficiency_deviation)


class BoardMismatchError(ValueError):
    """Alice's announced board parameters cannot run the link's protocol (one line; the
    link's engine stops with it and the node logs it)."""


def checked_block_params(link: LinkConfig, board: BoardParameters) -> BlockParams:
    """``block_params``, with a refusal naming the link and the board's values."""
    try:
        return block_params(link, board)
    except BlockParamsError as exc:
        raise BoardMismatchError(f"link {link.id}: Alice's board parameters (intensities "
                            f"{board.intensities}, probabilities {board.probabilities}, "
                            f"P_BASIS_X {board.p_basis_x}) do not fit protocol "
                            f"{link.protocol!r}: {exc}") from None


class RoleFactory:
    """``engine.ports.BlockRoleFactory``: fresh roles, each with its own ProtocolRandom. The
    BlockParams of a link are built once per announced board parameters and reused."""

    def __init__(self, node: NodeConfig):
        self._params: dict[tuple[LinkConfig, BoardParameters], BlockParams] = {}

    def params(self, link: LinkConfig, board: BoardParameters) -> BlockParams:
        key = (link, board)
        if key not in self._params:
            self._params[key] = checked_block_params(link, board)
        return self._params[key]

    def alice(self, link: LinkConfig, board: BoardParameters, pattern_of) -> AliceBlock:
        return AliceBlock(self.params(link, board), pattern_of, ProtocolRandom())

    def bob(self, link: LinkConfig, board: BoardParameters, block: AcquiredBlock) -> BobBlock:
        return BobBlock(self.params(link, board), block.slots, block.channels, block.valid,
                        block.n_pulses, ProtocolRandom())

    @staticmethod
    def is_light_step(msg_type: int, payload_bytes: int) -> bool:
        return is_light_step(msg_type, payload_bytes)


def build_ports() -> Ports:
    return Ports(channel=ChannelPort, store=StorePort, roles=RoleFactory)

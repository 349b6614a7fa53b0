"""Sans-I/O state of one link's peer channel: sequence numbers, tags, hellos, rejections.

``PeerSession`` sits between the envelope codec and whoever owns the socket (``channel``):
``encode`` gives the frame to send, ``receive(frame)`` gives the authenticated envelope (or
None) and the events the engine must see. A frame that fails any check is dropped, counted by
reason and reported; repeated failures raise the alarm. Nothing here touches a socket or the
clock except through the injected ``clock``, so a fuzzer can drive it directly.

Checks on receipt, in order: structure (envelope.parse), sequence number not below the floor
(a replay or a reordered message), tag, then - only for authenticated frames - link id and
message type. The floor moves only past authenticated frames, so forged frames cannot burn it.
"""

from __future__ import annotations

import os
import struct
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Collection

from daemon.peer import envelope as ev
from daemon.peer.auth_keys import AuthKeyPool

HELLO = struct.Struct("<16s16sQ")      # boot id, pool id, receive floor
TAG_BITS = 64

# Rejections: the frame is dropped, counted and reported; they count towards the alarm.
REJECT_MALFORMED = "malformed"
REJECT_BAD_TAG = "bad_tag"
REJECT_REPLAY = "replay"              # sequence number below the floor: replayed or reordered
REJECT_FOREIGN_LINK = "foreign_link"
REJECT_UNEXPECTED_TYPE = "unexpected_type"
REJECT_POOL_MISMATCH = "pool_mismatch"
REJECTIONS = (REJECT_MALFORMED, REJECT_BAD_TAG, REJECT_REPLAY, REJECT_FOREIGN_LINK,
              REJECT_UNEXPECTED_TYPE, REJECT_POOL_MISMATCH)
# Reports that are not rejections.
EVENT_SEQ_GAP = "seq_gap"             # authenticated frame after missing ones (lost in a drop)
EVENT_PEER_HELLO = "peer_hello"       # the peer (re)connected; detail says if it restarted
EVENT_ALARM = "alarm"
EVENT_CONNECTED = "connected"          # raised by the channel
EVENT_DISCONNECTED = "disconnected"    # raised by the channel
EVENT_HANDSHAKE_FAILED = "handshake_failed"   # raised by the channel (CURVE/ZAP refused)
EVENT_POOL_LOW = "pool_low"


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """What the engine hears about the channel. ``block_id`` of a rejected frame is what the
    frame claimed; it is trustworthy only if ``authenticated``."""

    kind: str
    detail: str
    link_id: int | None = None
    block_id: int | None = None
    seq: int | None = None
    authenticated: bool = False

    @property
    def is_rejection(self) -> bool:
        return self.kind in REJECTIONS


class PeerSession:
    def __init__(self, pool: AuthKeyPool, link_id: int, *,
                 allowed_types: Collection[int] | None = None,
                 boot_id: bytes | None = None,
                 alarm_threshold: int = 3, alarm_window_s: float = 60.0,
                 max_payload_bytes: int = ev.MAX_PAYLOAD_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.pool = pool
        self.link_id = link_id
        self.allowed_types = None if allowed_types is None else frozenset(allowed_types)
        self.boot_id = boot_id if boot_id is not None else os.urandom(16)
        self.alarm_threshold = alarm_threshold
        self.alarm_window_s = alarm_window_s
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.synced = False            # a valid hello arrived on the current connection
        self.peer_boot_id: bytes | None = None
        self.alarm = False
        self.counts: Counter[str] = Counter()
        self.sent = 0
        self.last_seq: int | None = None
        self.received = 0
        self._failures: deque[float] = deque()
        self._cost_bits: OrderedDict[int, int] = OrderedDict()

    # -- sending ---------------------------------------------------------------------------

    def encode(self, block_id: int, step: int, msg_type: int, payload: bytes,
               *, link_id: int | None = None, kind: int = ev.KIND_BLOCK) -> bytes:
        """The next frame to send (takes a sequence number, so send it or lose it)."""
        link_id = self.link_id if link_id is None else link_id
        seq = self.pool.take_send_seq()
        self.last_seq = seq
        env = ev.Envelope(link_id, block_id, step, msg_type, seq, payload, kind)
        frame = ev.encode(env, *self.pool.send_keys(seq))
        if kind == ev.KIND_BLOCK:
            self._charge(block_id)
            self.sent += 1
        return frame

    def hello(self) -> bytes:
        """The first frame on every new connection. Skipping to a chunk boundary first makes it
        acceptable to a peer that restarted and rounded its receive floor up."""
        self.pool.skip_send_to_chunk()
        payload = HELLO.pack(self.boot_id, self.pool.pool_id, self.pool.recv_floor)
        return self.encode(0, 0, 0, payload, kind=ev.KIND_HELLO)

    def connection_lost(self) -> None:
        self.synced = False

    # -- receiving -------------------------------------------------------------------------

    def receive(self, frame) -> tuple[ev.Envelope | None, list[PeerEvent]]:
        events: list[PeerEvent] = []
        parsed = ev.parse(frame, self.max_payload_bytes)
        if isinstance(parsed, ev.DecodeError):
            return None, self._reject(events, REJECT_MALFORMED, f"{parsed.code}: {parsed.reason}")
        env = parsed.envelope
        ids = dict(link_id=env.link_id, block_id=env.block_id, seq=env.seq)
        if env.kind == ev.KIND_HELLO:
            pool_id = env.payload[16:32] if len(env.payload) == HELLO.size else None
            if pool_id is not None and pool_id != self.pool.pool_id:
                return None, self._reject(events, REJECT_POOL_MISMATCH,
                                          "the peer's authentication key pool is not ours "
                                          "(different bootstrap file)", **ids)
        if env.seq < self.pool.recv_floor:
            # A replay, a reordered frame, or (before the peer's hello) a frame the peer sent
            # before it knew that we restarted: only the last kind does not count to the alarm.
            return None, self._reject(events, REJECT_REPLAY,
                                      f"seq {env.seq} below the floor {self.pool.recv_floor}",
                                      count_alarm=self.synced, **ids)
        keys = self.pool.recv_keys(env.seq)
        if keys is None or not ev.verify(parsed, *keys):
            why = "no pad left for it" if keys is None else "tag does not verify"
            return None, self._reject(events, REJECT_BAD_TAG, f"seq {env.seq}: {why}", **ids)
        gap = env.seq - self.pool.recv_floor
        self.pool.mark_received(env.seq)
        if gap:
            events.append(PeerEvent(EVENT_SEQ_GAP, f"{gap} frames missing before seq {env.seq}",
                                    authenticated=True, **ids))
        if env.link_id != self.link_id:
            return None, self._reject(events, REJECT_FOREIGN_LINK,
                                      f"link id {env.link_id}, this channel carries "
                                      f"{self.link_id}", authenticated=True, **ids)
        if env.kind == ev.KIND_HELLO:
            self._on_hello(env, events)
            return None, events
        if self.allowed_types is not None and env.msg_type not in self.allowed_types:
            return None, self._reject(events, REJECT_UNEXPECTED_TYPE,
                                      f"message type {env.msg_type} is not one this link uses",
                                      authenticated=True, **ids)
        self._charge(env.block_id)
        self.received += 1
        return env, events

    def _on_hello(self, env: ev.Envelope, events: list[PeerEvent]) -> None:
        if len(env.payload) != HELLO.size:
            self._reject(events, REJECT_MALFORMED,
                         f"hello payload of {len(env.payload)} bytes, expected {HELLO.size}",
                         link_id=env.link_id, seq=env.seq, authenticated=True)
            return
        boot_id, _pool_id, floor = HELLO.unpack(env.payload)
        self.pool.skip_send_to(floor)
        restarted = self.peer_boot_id is not None and boot_id != self.peer_boot_id
        first = self.peer_boot_id is None
        self.peer_boot_id = boot_id
        self.synced = True
        detail = "first contact" if first else ("peer restarted" if restarted
                                                else "peer reconnected, same process")
        events.append(PeerEvent(EVENT_PEER_HELLO, detail, link_id=env.link_id, seq=env.seq,
                                authenticated=True))

    def _reject(self, events: list[PeerEvent], kind: str, detail: str, *,
                count_alarm: bool = True, **fields) -> list[PeerEvent]:
        self.counts[kind] += 1
        events.append(PeerEvent(kind, detail, **fields))
        if count_alarm:
            now = self.clock()
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.alarm_window_s:
                self._failures.popleft()
            if not self.alarm and len(self._failures) >= self.alarm_threshold:
                self.alarm = True
                events.append(PeerEvent(EVENT_ALARM,
                                        f"{len(self._failures)} rejected peer frames or refused handshakes within "
                                        f"{self.alarm_window_s:g} s", link_id=self.link_id))
        return events

    def note_failure(self, kind: str, detail: str) -> list[PeerEvent]:
        """Count a failure seen outside a frame (a refused handshake) towards the alarm."""
        return self._reject([], kind, detail, link_id=self.link_id)

    def clear_alarm(self) -> None:
        self.alarm = False
        self._failures.clear()

    # -- accounting ------------------------------------------------------------------------

    def _charge(self, block_id: int) -> None:
        costs = self._cost_bits
        costs[block_id] = costs.get(block_id, 0) + TAG_BITS
        costs.move_to_end(block_id)
        if len(costs) > 4096:
            costs.popitem(last=False)

    def auth_bits_used(self, block_id: int, *, pop: bool = False) -> int:
        """Pad bits spent on a block's messages, both directions (hash keys not included: one
        64-bit key serves 65536 messages)."""
        return self._cost_bits.pop(block_id, 0) if pop else self._cost_bits.get(block_id, 0)

"""Two-step commit of a block's keys between the two nodes of a link, sans network I/O.

A block's keys become deliverable only when both ends hold them durably. The coordinator
(Alice's end) stores the block's keys as *prepared*, then sends PREPARE with the key IDs; the
participant (Bob's end) cuts its own copy of the block key under those IDs, stores it as
prepared and votes PREPARED; the coordinator then commits durably — that commit *is* its
decision — and only then sends COMMIT; the participant commits and answers DONE. Any refusal,
timeout or restart of the coordinator before its decision ends in ABORT (presumed abort: a
block the coordinator has not committed is discarded). The durable half of every step lives in
the ``KeyStore``; the volatile half (timers, messages to resend, block keys waiting for their
PREPARE) lives here and may be lost at any instant: ``recover()`` after a restart settles what
the store shows as in doubt. docs/keystore.md §4–5 has the byte layout and the recovery rules.

``LinkCommit`` holds the protocol for all blocks of one link at one end. The engine owns the
sockets and the clock: it feeds peer messages to ``receive``, calls ``on_timer`` every few
seconds, reports block outcomes with ``block_done``/``block_aborted``, and sends every message
these return, in order. Not thread-safe: call it from one thread at a time (the store calls
block, so that is the engine's store thread).
"""

from __future__ import annotations

import collections
import hashlib
import logging

import numpy as np

from daemon.keystore import messages as m
from daemon.keystore.cutting import DEFAULT_KEY_SIZE_BITS, check_key_size, cut_block_key, new_key_ids
from daemon.keystore.errors import KeyIdReused, StoreError, StoreFull
from daemon.keystore.messages import CommitMsgType, Reason

log = logging.getLogger(__name__)

PeerMessage = tuple[int, bytes]

_REMEMBER_ABORTED = 4096     # block ids remembered as aborted (so a late outcome is dropped)


class LinkCommit:
    """One end's two-step commit for every block of one link."""

    def __init__(self, store, link_id: str, *, coordinator: bool,
                 key_size_bits: int = DEFAULT_KEY_SIZE_BITS, max_retries: int = 3,
                 max_wait_ticks: int = 10):
        self.store = store
        self.link_id = link_id
        self.coordinator = coordinator
        self.key_size_bits = check_key_size(key_size_bits)
        self.max_retries = max_retries          # resends before the coordinator gives up
        self.max_wait_ticks = max_wait_ticks    # participant: ticks a block waits for its PREPARE
        # coordinator: undecided blocks -> [PREPARE message, timer ticks]
        self._undecided: dict[int, list] = {}
        # coordinator: decided blocks awaiting DONE -> [COMMIT/ABORT message, ticks]
        self._unacked: dict[int, list] = {}
        # participant: block roles still running (a PREPARE for them is held, not refused)
        self._expected: dict[int, int] = {}
        self._held: dict[int, m.Prepare] = {}
        # participant: finished block keys waiting for their PREPARE -> [bits, ticks]
        self._pending: dict[int, list] = {}
        self._aborted: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.counters: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ engine calls
    def recover(self) -> list[PeerMessage]:
        """After a restart: settle the blocks the store shows as in doubt.

        Coordinator: an undecided block is discarded (presumed abort) and ABORT sent.
        Participant: PREPARED is sent again for each; the coordinator's answer settles it.
        """
        out = []
        for block_id in self.store.in_doubt(self.link_id):
            if self.coordinator:
                out += self._abort(block_id, Reason.RECOVERED)
            else:
                info = self.store.block_info(self.link_id, block_id)
                out.append(m.prepared(block_id, info.commit_tag))
        self.counters["recovered"] += len(out)
        return out

    def peer_restarted(self) -> None:
        """Participant: the coordinator is a new process. Keys still waiting for their PREPARE
        never get one: a coordinator prepares durably before it sends PREPARE and at restart
        aborts what it had prepared (``recover``), so these blocks were live at its end and
        died with it. Drop them now rather than after ``max_wait_ticks`` (the block timeout:
        minutes in which they count as in flight); a stray PREPARE for one is refused."""
        if self.coordinator:
            return
        for block_id in list(self._pending):
            self._drop_pending(block_id)
            self._remember_aborted(block_id)
            self.counters["dropped_at_peer_restart"] += 1

    def expect(self, block_id: int) -> None:
        """Participant: a block role started; hold its PREPARE until the role finishes."""
        self._expected[block_id] = 0

    def block_done(self, block_id: int, bits: np.ndarray,
                   auth: bytearray | None = None) -> list[PeerMessage]:
        """A block role finished with its key (uint8 0/1 bits). Takes ownership of ``bits``
        and wipes them once stored or refused. ``auth`` (packed bytes) is the block's refill
        of the authentication pool: prepared with the keys, ordered by the commit (the store's
        ``pending_auth_refills``), wiped here like the bits."""
        if not self.coordinator:
            self._expected.pop(block_id, None)
            if block_id in self._aborted:
                _wipe(bits, auth)
                return []
            held = self._held.pop(block_id, None)
            if held is not None:
                return self._participant_prepare(held, bits, auth)
            self._pending[block_id] = [bits, 0, auth]
            return []
        try:
            n = len(bits) // self.key_size_bits
            if n == 0:
                self.counters["empty"] += 1
                return [m.abort(block_id, Reason.EMPTY)]
            ids = new_key_ids(n)
            msg = m.prepare(block_id, self.key_size_bits, ids)
            keys, packed = cut_block_key(bits, self.key_size_bits, ids)
            try:
                self.store.prepare(self.link_id, block_id, keys, coordinator=True,
                                   commit_tag=hashlib.sha256(msg[1]).digest(),
                                   auth_bits=auth)
            except StoreFull:
                self.counters["store_full"] += 1
                return [m.abort(block_id, Reason.STORE_FULL)]
            except StoreError as exc:
                log.error("link %s block %d: not stored: %s", self.link_id, block_id, exc)
                self.counters["store_error"] += 1
                return [m.abort(block_id, Reason.STORE_ERROR)]
            finally:
                packed.fill(0)
        finally:
            _wipe(bits, auth)
        self._undecided[block_id] = [msg, 0]
        return [msg]

    def block_aborted(self, block_id: int) -> list[PeerMessage]:
        """The block role aborted locally (the block protocol told the peer already)."""
        self._remember_aborted(block_id)
        self._expected.pop(block_id, None)
        self._drop_pending(block_id)
        if self._held.pop(block_id, None) is not None:
            return [m.refused(block_id, Reason.NO_KEY)]
        return []

    def receive(self, msg_type: int, payload: bytes) -> list[PeerMessage]:
        """One commit message from the peer in, this end's replies out."""
        try:
            kind, body = m.decode(msg_type, payload)
        except m.CommitMessageError as exc:
            log.warning("link %s: commit message dropped: %s", self.link_id, exc)
            self.counters["bad_message"] += 1
            return []
        handler = (self._coordinator_handlers if self.coordinator
                   else self._participant_handlers).get(kind)
        if handler is None:
            self._violation(body.block_id, f"{kind.name} is not sent to this end")
            return []
        return handler(self, body)

    def on_timer(self) -> list[PeerMessage]:
        """Every few seconds: resend what is unanswered, give up on what waited too long."""
        out: list[PeerMessage] = []
        if self.coordinator:
            for block_id, entry in list(self._unacked.items()):
                entry[1] += 1
                if entry[1] > self.max_retries:
                    del self._unacked[block_id]      # the participant asks again if in doubt
                else:
                    out.append(entry[0])
            for block_id, entry in list(self._undecided.items()):
                entry[1] += 1
                if entry[1] > self.max_retries:
                    self.counters["timeout"] += 1
                    out += self._abort(block_id, Reason.TIMEOUT)
                else:
                    out.append(entry[0])
            return out
        for block_id in self.store.in_doubt(self.link_id):
            out.append(m.prepared(block_id, self.store.block_info(self.link_id,
                                                                   block_id).commit_tag))
        for table in (self._pending, self._expected):
            for block_id in list(table):
                if isinstance(table[block_id], list):
                    table[block_id][1] += 1
                    age = table[block_id][1]
                else:
                    table[block_id] += 1
                    age = table[block_id]
                if age > self.max_wait_ticks:
                    self._drop_pending(block_id)
                    self._expected.pop(block_id, None)
                    if block_id in self._held:
                        out.append(m.refused(self._held.pop(block_id).block_id, Reason.NO_KEY))
        return out

    def in_progress(self, block_id: int) -> bool:
        """This end still works on the block: a key waiting for its PREPARE, a held PREPARE,
        a running role, or (coordinator) an undecided block. False once it is settled or was
        dropped before anything was stored."""
        if self.coordinator:
            return block_id in self._undecided
        return (block_id in self._pending or block_id in self._held
                or block_id in self._expected
                or self.store.block_state(self.link_id, block_id) == "prepared")

    def settled(self, block_id: int) -> str | None:
        """'committed' or 'discarded' once this end's store has decided the block."""
        state = self.store.block_state(self.link_id, block_id)
        return state if state in ("committed", "discarded") else None

    # ------------------------------------------------------------------ coordinator side
    def _on_prepared(self, body: m.Tagged) -> list[PeerMessage]:
        block_id = body.block_id
        info = self.store.block_info(self.link_id, block_id)
        if info is None or info.state == "discarded":
            return [m.abort(block_id, Reason.DISCARDED)]
        if info.state == "committed":
            return [m.commit(block_id, info.commit_tag, info.refill_index)]
        if body.tag != info.commit_tag:
            self.counters["tag_mismatch"] += 1
            return self._abort(block_id, Reason.MISMATCH)
        try:
            refill = self.store.commit(self.link_id, block_id)     # the durable decision
        except StoreError as exc:
            log.error("link %s block %d: commit failed: %s", self.link_id, block_id, exc)
            self.counters["store_error"] += 1
            return []                                     # still undecided: retried or timed out
        self._undecided.pop(block_id, None)
        msg = m.commit(block_id, info.commit_tag, refill)
        self._unacked[block_id] = [msg, 0]
        self.counters["committed"] += 1
        return [msg]

    def _on_refused(self, body: m.Coded) -> list[PeerMessage]:
        block_id = body.block_id
        state = self.store.block_state(self.link_id, block_id)
        if state == "committed":
            self._violation(block_id, "REFUSED after the block was committed")
            return []
        if state == "prepared":
            self.counters[f"refused_{Reason(body.code).name.lower()}"] += 1
            self._abort(block_id, Reason(body.code))
            self._unacked.pop(block_id, None)             # the participant holds nothing
        return []

    def _on_done(self, body: m.Coded) -> list[PeerMessage]:
        state = self.store.block_state(self.link_id, body.block_id)
        if (state == "committed") != (body.code == 1):
            self._violation(body.block_id, f"DONE({body.code}) for a block {state}")
        self._unacked.pop(body.block_id, None)
        return []

    def _abort(self, block_id: int, reason: Reason) -> list[PeerMessage]:
        """Coordinator decides abort durably, then says so."""
        try:
            self.store.discard(self.link_id, block_id)
        except StoreError as exc:
            log.error("link %s block %d: discard failed: %s", self.link_id, block_id, exc)
            self.counters["store_error"] += 1
            return []
        self._undecided.pop(block_id, None)
        msg = m.abort(block_id, reason)
        self._unacked[block_id] = [msg, 0]
        self.counters["aborted"] += 1
        return [msg]

    # ------------------------------------------------------------------ participant side
    def _on_prepare(self, body: m.Prepare) -> list[PeerMessage]:
        block_id = body.block_id
        info = self.store.block_info(self.link_id, block_id)
        if info is not None:
            if info.state == "discarded":
                return [m.refused(block_id, Reason.DISCARDED)]
            return [m.prepared(block_id, info.commit_tag)]     # duplicate PREPARE
        if block_id in self._pending:
            bits, _, auth = self._pending.pop(block_id)
            return self._participant_prepare(body, bits, auth)
        if block_id in self._expected:
            self._held[block_id] = body
            return []
        return [m.refused(block_id, Reason.NO_KEY)]

    def _participant_prepare(self, body: m.Prepare, bits: np.ndarray,
                             auth: bytearray | None) -> list[PeerMessage]:
        block_id = body.block_id
        try:
            if body.key_size_bits != self.key_size_bits:
                self.counters["refused_mismatch"] += 1
                return [m.refused(block_id, Reason.MISMATCH)]
            try:
                keys, packed = cut_block_key(bits, body.key_size_bits, list(body.key_ids))
            except ValueError:
                self.counters["refused_mismatch"] += 1
                return [m.refused(block_id, Reason.MISMATCH)]
            try:
                self.store.prepare(self.link_id, block_id, keys, coordinator=False,
                                   commit_tag=body.tag, auth_bits=auth)
            except StoreFull:
                self.counters["store_full"] += 1
                return [m.refused(block_id, Reason.STORE_FULL)]
            except KeyIdReused:
                self.counters["refused_id_reused"] += 1
                return [m.refused(block_id, Reason.ID_REUSED)]
            except StoreError as exc:
                log.error("link %s block %d: not stored: %s", self.link_id, block_id, exc)
                self.counters["store_error"] += 1
                return [m.refused(block_id, Reason.STORE_ERROR)]
            finally:
                packed.fill(0)
        finally:
            _wipe(bits, auth)
        return [m.prepared(block_id, body.tag)]

    def _on_commit(self, body: m.Tagged) -> list[PeerMessage]:
        block_id = body.block_id
        info = self.store.block_info(self.link_id, block_id)
        if info is None or info.state == "discarded":
            self._violation(block_id, f"COMMIT for a block {info.state if info else 'unknown'}")
            return []
        if body.tag != info.commit_tag:
            self._violation(block_id, "COMMIT for another list of key IDs")
            return []
        if info.state == "prepared":
            try:
                self.store.commit(self.link_id, block_id, refill_index=body.refill_index)
            except StoreError as exc:
                log.error("link %s block %d: commit failed: %s", self.link_id, block_id, exc)
                self.counters["store_error"] += 1
                return []                                 # still in doubt: asked again on timer
            self.counters["committed"] += 1
        return [m.done(block_id, True)]

    def _on_abort(self, body: m.Coded) -> list[PeerMessage]:
        block_id = body.block_id
        self._remember_aborted(block_id)
        self._expected.pop(block_id, None)
        self._held.pop(block_id, None)
        self._drop_pending(block_id)
        state = self.store.block_state(self.link_id, block_id)
        if state == "committed":
            self._violation(block_id, "ABORT for a committed block")
            return []
        if state == "prepared":
            try:
                self.store.discard(self.link_id, block_id)
            except StoreError as exc:
                log.error("link %s block %d: discard failed: %s", self.link_id, block_id, exc)
                self.counters["store_error"] += 1
                return []
            self.counters["aborted"] += 1
        return [m.done(block_id, False)]

    # ------------------------------------------------------------------ helpers
    def _drop_pending(self, block_id: int) -> None:
        entry = self._pending.pop(block_id, None)
        if entry is not None:
            _wipe(entry[0], entry[2])

    def _remember_aborted(self, block_id: int) -> None:
        self._aborted[block_id] = None
        while len(self._aborted) > _REMEMBER_ABORTED:
            self._aborted.popitem(last=False)

    def _violation(self, block_id: int, what: str) -> None:
        log.warning("link %s block %d: commit protocol violation: %s", self.link_id, block_id, what)
        self.counters["violation"] += 1

    _coordinator_handlers = {CommitMsgType.PREPARED: _on_prepared,
                             CommitMsgType.REFUSED: _on_refused,
                             CommitMsgType.DONE: _on_done}
    _participant_handlers = {CommitMsgType.PREPARE: _on_prepare,
                             CommitMsgType.COMMIT: _on_commit,
                             CommitMsgType.ABORT: _on_abort}


def _wipe(bits: np.ndarray, auth: bytearray | None) -> None:
    bits.fill(0)
    if auth is not None:
        auth[:] = bytes(len(auth))

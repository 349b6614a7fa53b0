"""One link's pipeline: hello, blocks in flight, the two-step commit, figures.

The event loop owns all state here; the role objects' work (numba kernels) runs in the compute
pool, except steps the role factory calls light (Alice's answer to a small Cascade request:
tens of microseconds, less than the thread hops would add to each round trip), the board's
blocking I/O in a one-thread I/O pool and the two-step commit (store writes) in a one-thread
commit pool, so the node keeps answering status and its peer while it distills. Each block
has its own task and inbox: its messages are handled in order, blocks run side by side up to
``policy.blocks_in_flight`` (round trips, not CPU, bound a block on a real network).

Roles: Bob opens blocks (acquisition, ``BobBlock.start``); Alice answers. When a block's roles
end with a key, the key goes to the key store's two-step commit (``daemon.keystore.commit.
LinkCommit``, docs/keystore.md §4-6), Alice's end coordinating: she draws the key IDs, prepares
and sends PREPARE; Bob prepares the same keys under those IDs and votes PREPARED; Alice's
durable commit is the decision, then COMMIT, then Bob's commit. Its timers resend what is
unanswered and settle, after any crash, every block a store shows in doubt (presumed abort), so
both ends keep a block or both drop it.

Authentication key: each end sets aside the first bits of the block's key (the channel's rule
of the key length, so the same bits at both ends) and hands them to the commit with the rest:
the store keeps them with the block's keys, and the block's commit numbers them (Alice's commit
order; her COMMIT names the number to Bob) in the same transaction. After every commit step the
engine moves the committed refills into the Wegman-Carter pool in number order
(``auth_refill.move_refills``), so both pools grow alike whatever order COMMITs reach Bob in
and whenever either end crashes; a block that is discarded refills nothing at either end.

Hello: each end announces a fresh session nonce, its role, protocol and policy (Alice adds her
board's public parameters) and repeats it until the peer echoes the nonce. A new peer session
means the peer restarted: live blocks are aborted (prepared ones are settled by the commit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from daemon.config import KeyStoreConfig, LinkConfig
from daemon.engine import messages as m
from daemon.engine.acquisition import AcquisitionError, BobAcquisition, PatternSource, \
    read_board_parameters
from daemon.engine.auth_refill import move_refills
from daemon.engine.figures import LinkFigures
from daemon.engine.messages import EngineMessage as E
from daemon.engine.ports import BlockRole, BlockRoleFactory, BoardParameters, KeyStore, \
    PeerChannel, Rejected
from daemon.keystore import messages as cm
from daemon.keystore.commit import LinkCommit

HELLO_REPEAT_S = 1.0
COMMIT_TICK_S = 2.0     # the commit's timer: resends, timeouts, questions about blocks in doubt
STORE_POLL_S = 1.0
PEER_FULL_PAUSE_S = 5.0
B92_NOTE = ("B92 stores no key: no published security proof covers it with weak coherent "
            "pulses, so its key length is zero; blocks run for QBER, yield and eavesdropper "
            "detection (abort reason no_security_proof)")


class _BlockAborted(Exception):
    def __init__(self, reason: str, tell_peer: bool = True):
        self.reason, self.tell_peer = reason, tell_peer
        super().__init__(reason)


@dataclass(eq=False)
class _Block:
    block_id: int
    role: BlockRole | None = None
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    handed_over: bool = False       # the key went to the two-step commit: its business now
    aborted: bool = False
    step: int = 0
    window: tuple[float, float] = (0.0, 0.0)   # Bob: monotonic time its events were detected


_LOCAL_POLICY = ("blocks_in_flight", "block_timeout_s", "qber_alarm_blocks")


def policy_summary(link: LinkConfig) -> dict:
    """What both ends must agree on before any block (the hello compares it); how many blocks
    a node runs at once, its timeout and its alarm are its own business."""
    policy = {k: v for k, v in dataclasses.asdict(link.policy).items() if k not in _LOCAL_POLICY}
    summary = {"protocol": link.protocol, **policy,
               **{k: v for k, v in dataclasses.asdict(link.calibration).items() if v is not None}}
    return json.loads(json.dumps(summary))    # as the peer's hello decodes it (LT3's vectors)


class LinkEngine:
    """Run with ``await engine.run()``; cancel the task (or ``stop()``) to end it."""

    def __init__(self, link: LinkConfig, keystore: KeyStoreConfig, *, node_id: str, board,
                 channel: PeerChannel, store: KeyStore, roles: BlockRoleFactory,
                 compute: Executor, io: Executor, log: logging.Logger | None = None,
                 acquisition_factory: Callable[..., Any] = BobAcquisition, control=None):
        self.link = link
        self.keystore = keystore
        self.node_id = node_id
        self.board = board
        self.channel = channel
        self.store = store
        self.roles = roles
        self.compute = compute
        self.io = io
        self.log = log or logging.getLogger(f"qkd.link.{link.id}")
        self.acquisition_factory = acquisition_factory
        # Control hook (daemon.control.supervisor): key_veto(link, t0, t1) -> reason | None,
        # block_finished(link, t0, t1, stats), acquiring(link, on) around each collection.
        # The stream is continuous, so a block's events were detected since the previous
        # block was cut: ``_window_mark``.
        self.control = control
        self._window_mark: float | None = None
        self.figures = LinkFigures(link.id, link.role, link.protocol)
        if link.protocol == "b92":
            self.figures.note = B92_NOTE
        self.board_params: BoardParameters | None = None
        self._blocks: dict[int, _Block] = {}
        self._slots = asyncio.Semaphore(link.policy.blocks_in_flight)
        self._session = os.urandom(8).hex()
        self._peer_session: str | None = None
        self._peer_acked = False
        self._ready = asyncio.Event()
        self._last_block_id = 0
        self._highest_peer_block = 0
        self._peer_full_until = 0.0
        self._stopping = False
        self._acq = None
        self._held = False          # an operator asked Bob to open no new blocks
        self._opening = 0           # Bob: a block being acquired or opened (not yet in flight)
        # The commit waits as long as a block may take: Bob's end of a block finishes after
        # Alice's (his privacy amplification follows her PA seed), so her PREPARE may wait.
        ticks = max(3, math.ceil(link.policy.block_timeout_s / COMMIT_TICK_S))
        self.commit = LinkCommit(store, link.id, coordinator=not self.is_bob,
                                 key_size_bits=keystore.key_size_bits, max_retries=ticks,
                                 max_wait_ticks=ticks)
        self._commit_pool = ThreadPoolExecutor(1, thread_name_prefix=f"qkd-commit-{link.id}")
        self._unsettled: dict[int, tuple] = {}     # block -> figures, until the store decides
        self._in_doubt_at_start: set[int] = set()  # blocks a restart found prepared, undecided
        self._peer_reasons: dict[int, str] = {}    # block -> why the peer aborted it

    @property
    def is_bob(self) -> bool:
        return self.link.role == "bob"

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task] = []
        try:
            if not self.is_bob:
                self.figures.state = "reading board parameters"
                self.board_params = await loop.run_in_executor(self.io, read_board_parameters,
                                                               self.board)
                self._pattern = PatternSource(self.board)
            self.figures.state = "waiting for peer"
            recovered = await self._commit_step(self.commit.recover)
            self._in_doubt_at_start = set(await self._in_commit(self.store.in_doubt,
                                                                self.link.id))
            if recovered:
                self.log.warning("%d block(s) in doubt from before the restart: %s", len(recovered),
                                 "discarded (presumed abort)" if not self.is_bob else
                                 "asking Alice how she decided")
            await self.channel.start()
            tasks = [asyncio.create_task(self._receive_loop(), name=f"{self.link.id}-recv"),
                     asyncio.create_task(self._hello_loop(), name=f"{self.link.id}-hello"),
                     asyncio.create_task(self._commit_timer_loop(recovered),
                                         name=f"{self.link.id}-commit")]
            if self.is_bob:
                tasks.append(asyncio.create_task(self._bob_loop(), name=f"{self.link.id}-bob"))
            await self._refresh_store_figures()
            # The first task to fail ends the link (its error is logged by the node).
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            self._stopping = True
            self.figures.state = "stopped"
            for t in tasks:
                t.cancel()
            for blk in list(self._blocks.values()):
                if blk.task is not None:
                    blk.task.cancel()
            await asyncio.gather(*tasks, *(b.task for b in self._blocks.values() if b.task),
                                 return_exceptions=True)
            if self._acq is not None:
                await loop.run_in_executor(self.io, self._acq.stop)
            await self.channel.close()
            self._commit_pool.shutdown(wait=True)

    def hold(self, held: bool) -> None:
        """Open no new blocks (blocks in flight finish) until released: a drained, quiescent
        link whose two stores can be compared."""
        self._held = held
        if held:
            self.figures.state = "held by operator"
        elif self.figures.state == "held by operator":
            self.figures.state = "running"

    def status(self) -> dict:
        # A block counts until this end's store has decided it (the drain before a store
        # comparison waits for both ends).
        parts = {"blocks": len(self._blocks), "opening": self._opening,
                 "unsettled": len(self._unsettled), "in_doubt": len(self._in_doubt_at_start)}
        self.figures.in_flight_parts = parts
        self.figures.in_flight = sum(parts.values())
        try:
            self.figures.auth_bits_left = self.channel.auth_key_bits_left()
        except Exception:        # status never fails because a port cannot say
            self.figures.auth_bits_left = None
        return self.figures.to_dict()

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.compute, fn, *args)

    async def _in_commit(self, fn, *args):
        """LinkCommit is not thread-safe: every call goes through its one thread."""
        return await asyncio.get_running_loop().run_in_executor(self._commit_pool, fn, *args)

    async def _commit_step(self, fn, *args) -> list:
        """One LinkCommit call; the blocks it commits at this end refill the pool at once."""
        return await self._in_commit(self._step_and_refill, fn, args)

    def _step_and_refill(self, fn, args) -> list:
        out = fn(*args)
        move_refills(self.store, self.channel, self.link.id)
        return out

    async def _send(self, block_id: int, msg_type: int, payload: bytes, step: int = 0) -> None:
        await self.channel.send(self.link.id, block_id, step, msg_type, payload)

    # -- hello and in-doubt resolution --------------------------------------------------------

    async def _hello_loop(self) -> None:
        while True:
            if not (self._peer_session and self._peer_acked):
                await self._send_hello()
            await asyncio.sleep(HELLO_REPEAT_S)

    async def _send_hello(self) -> None:
        hello = {"session": self._session, "peer_session": self._peer_session,
                 "node": self.node_id, "role": self.link.role,
                 "policy": policy_summary(self.link)}
        if not self.is_bob:
            hello["board"] = self.board_params.to_dict()
        await self._send(m.LINK_BLOCK_ID, E.HELLO, m.encode_json(hello))

    async def _on_hello(self, hello: dict) -> None:
        peer_role = hello.get("role")
        if peer_role == self.link.role or hello.get("policy") != policy_summary(self.link):
            problem = (f"peer node {hello.get('node')!r} is also {peer_role}"
                       if peer_role == self.link.role else
                       "peer's protocol or policy differs from this link's")
            if "config" not in self.figures.alarms:
                self.log.error("peer configuration mismatch: %s; no blocks until it is fixed",
                               problem)
            self.figures.alarms["config"] = problem
            self.figures.state = "peer configuration mismatch"
            return
        self.figures.alarms.pop("config", None)
        if hello.get("session") != self._peer_session:
            restarted = self._peer_session is not None
            self._peer_session = hello.get("session")
            self._highest_peer_block = 0      # a restarted Bob's clock may have stepped back
            self._peer_acked = False
            self._ready.clear()
            if restarted:
                self.log.warning("peer restarted (new session); aborting %d live block(s)",
                                 len(self._blocks))
            for blk in list(self._blocks.values()):
                await self._abort_block(blk, "peer_restarted", tell_peer=False)
            if restarted and self.is_bob:     # keys waiting for a PREPARE that cannot come
                await self._commit_step(self.commit.peer_restarted)
                await self._note_settled()
            if self.is_bob:
                try:
                    self.board_params = BoardParameters.from_dict(hello["board"])
                except (KeyError, TypeError, ValueError) as exc:
                    self._peer_session = None
                    raise m.MessageError(f"hello without usable board parameters: {exc!r}")
            await self._send_hello()
        if hello.get("peer_session") == self._session and not self._peer_acked:
            self._peer_acked = True
            self._ready.set()
            self.figures.state = "held by operator" if self._held else "running"
            self.log.info("peer %s ready (role %s)", hello.get("node"), peer_role)

    # -- the two-step commit ---------------------------------------------------------------

    async def _commit_timer_loop(self, recovered: list) -> None:
        await self._ready.wait()
        await self._send_commit(recovered)
        while True:
            await asyncio.sleep(COMMIT_TICK_S)
            await self._send_commit(await self._commit_step(self.commit.on_timer))
            await self._note_settled()

    async def _send_commit(self, out) -> None:
        for msg_type, payload in out:
            await self._send(cm.block_of(payload), int(msg_type), payload)

    async def _on_commit_message(self, env) -> None:
        if env.msg_type == cm.CommitMsgType.ABORT and len(env.payload) == 9 \
                and env.payload[8] == cm.Reason.STORE_FULL:
            self._peer_full_until = time.monotonic() + PEER_FULL_PAUSE_S
        try:
            if cm.block_of(env.payload) != env.block_id:
                raise m.MessageError(f"commit message for block {cm.block_of(env.payload)} "
                                     f"in the envelope of block {env.block_id}")
        except cm.CommitMessageError as exc:
            raise m.MessageError(str(exc)) from None
        await self._send_commit(await self._commit_step(self.commit.receive, env.msg_type,
                                                        env.payload))
        await self._note_settled()

    def _fate(self, block_id: int) -> str:
        """'committed', 'discarded' (or dropped before anything was stored) or 'live'; one
        call in the commit thread, so no commit step falls between the two questions."""
        state = self.commit.settled(block_id)
        if state is not None:
            return state
        return "live" if self.commit.in_progress(block_id) else "discarded"

    async def _note_settled(self) -> None:
        """Count blocks whose fate this end's store has decided (keys stored, or dropped)."""
        for block_id in list(self._in_doubt_at_start):
            if await self._in_commit(self.commit.settled, block_id) is not None:
                self._in_doubt_at_start.discard(block_id)
        if not self._unsettled:
            return
        changed = False
        for block_id in list(self._unsettled):
            state = await self._in_commit(self._fate, block_id)
            if state == "live":
                continue
            if block_id not in self._unsettled:
                continue
            qber, n_keys, auth_bits, secret_bits = self._unsettled.pop(block_id)
            changed = True
            why = self._peer_reasons.pop(block_id, "commit_discarded")
            if state == "committed":
                self.figures.block_ok(qber, secret_bits, n_keys, auth_bits)
                self.log.info("block %d stored: %d keys, %d secret bits, QBER %.2f%%, "
                              "%d auth bits", block_id, n_keys, secret_bits, qber * 100,
                              auth_bits)
            else:
                self.figures.block_aborted([why], qber, self.link.policy.qber_alarm_blocks)
                self.log.info("block %d aborted: %s; its keys were discarded in the two-step "
                              "commit", block_id, why)
        if changed:
            await self._refresh_store_figures()

    # -- receiving ------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            item = await self.channel.recv()
            if isinstance(item, Rejected):
                await self._on_rejected(item.block_id, item.reason)
                continue
            if item.link_id != self.link.id:
                await self._on_rejected(item.block_id, f"message for link {item.link_id!r}")
                continue
            try:
                await self._dispatch(item)
            except m.MessageError as exc:
                await self._on_rejected(item.block_id, str(exc))

    async def _dispatch(self, env) -> None:
        if env.block_id == m.LINK_BLOCK_ID:
            if env.msg_type == E.HELLO:
                await self._on_hello(m.decode_json(env.payload))
            else:
                raise m.MessageError(f"message type {env.msg_type} on the link channel")
            return
        if env.msg_type in cm.COMMIT_TYPES:
            await self._on_commit_message(env)
            return
        blk = self._blocks.get(env.block_id)
        if env.msg_type == E.ABORT and (blk is not None or env.block_id in self._unsettled):
            # Should the block be (or go) to the commit here before this is read, the peer's
            # reason is the one to count when the commit discards it.
            self._peer_reasons[env.block_id] = "peer: " + m.decode_reason(env.payload)
        if blk is not None:
            blk.inbox.put_nowait(env)
            return
        if not m.is_engine_type(env.msg_type) and not self.is_bob:
            await self._open_alice_block(env)
        # Otherwise a message for a block no longer running here (aborted, or handed to the
        # commit, which settles it on its own): nothing to do.

    async def _on_rejected(self, block_id: int | None, reason: str) -> None:
        self.figures.message_rejected(reason)
        self.log.warning("peer message rejected: %s (block %s)", reason, block_id)
        blk = self._blocks.get(block_id) if block_id is not None else None
        if blk is not None:
            await self._abort_block(blk, "rejected_message")
        elif block_id:
            # The block is not running here (its opening message was the one dropped): the
            # peer's end of it must stop too, or it waits for its timeout.
            await self._send(block_id, E.ABORT, m.encode_reason("rejected_message"))

    # -- blocks ---------------------------------------------------------------------------------

    async def _open_alice_block(self, env) -> None:
        if not self._ready.is_set():
            await self._send(env.block_id, E.ABORT, m.encode_reason("peer_not_ready"))
            return
        if env.block_id <= self._highest_peer_block:
            # A late message of a block that ended here (both ends' aborts can cross): the
            # block is over at both ends, so there is nothing to answer.
            self.log.debug("message type %d for ended block %d dropped", env.msg_type,
                           env.block_id)
            return
        # Bob bounds the blocks in flight; Alice allows twice as many (her last block may still
        # be taking Bob's COMMIT when his next one opens) and refuses more from a runaway peer.
        if len(self._blocks) >= 2 * self.link.policy.blocks_in_flight:
            await self._send(env.block_id, E.ABORT, m.encode_reason("peer_busy"))
            return
        self._highest_peer_block = env.block_id
        blk = _Block(env.block_id)
        self._blocks[env.block_id] = blk
        blk.inbox.put_nowait(env)
        blk.task = asyncio.create_task(self._run_block(blk), name=f"block-{env.block_id}")

    def _new_block_id(self) -> int:
        candidate = (time.time_ns() // 1_000_000) << 16
        self._last_block_id = max(candidate, self._last_block_id + 1)
        return self._last_block_id

    async def _bob_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            if self._held:
                await asyncio.sleep(STORE_POLL_S / 4)
                continue
            if await self._store_full():
                continue
            await self._slots.acquire()
            started = False
            blk = None
            self._opening = 1
            try:
                if self._acq is None:
                    self._acq = self.acquisition_factory(self.board, self.board_params,
                                                         self.link.policy.block_pulses)
                t0 = time.monotonic() if self._window_mark is None else self._window_mark
                if self.control is not None:          # light is expected while collecting
                    self.control.acquiring(self.link.id, True)
                try:
                    acquired = await loop.run_in_executor(self.io, self._acq.next_block)
                except AcquisitionError as exc:
                    self.figures.block_aborted([exc.reason], float("nan"),
                                               self.link.policy.qber_alarm_blocks)
                    self.log.warning("block not acquired: %s", exc)
                    continue
                finally:
                    self._window_mark = time.monotonic()
                    if self.control is not None:
                        self.control.acquiring(self.link.id, False)
                if not self._ready.is_set():
                    continue          # the peer restarted while we collected
                blk = _Block(self._new_block_id(), window=(t0, self._window_mark))
                blk.role = await self._in_thread(self.roles.bob, self.link, self.board_params,
                                                 acquired)
                # The commit holds Alice's PREPARE for this block until its key is ready.
                await self._in_commit(self.commit.expect, blk.block_id)
                opening = await self._in_thread(blk.role.start)
                # The role has squashed the events into its announcement: let them go now, not
                # when the next block is acquired (hundreds of MB a block at 10 km).
                acquired = None
                # Opened here, in block-id order: Alice refuses a block id below the last one.
                self._blocks[blk.block_id] = blk
                await self._send_all(blk, opening)
                opening = None          # the announcement, likewise
                if blk.aborted:         # the peer restarted meanwhile; _abort_block freed it
                    started = True
                    continue
                blk.task = asyncio.create_task(self._run_block(blk),
                                               name=f"block-{blk.block_id}")
                started = True
            finally:
                self._opening = 0
                if not started:
                    if blk is not None:
                        self._blocks.pop(blk.block_id, None)
                    self._slots.release()

    async def _store_full(self) -> bool:
        """Pause (and say so) while this store, or the peer's, has no room."""
        await self._refresh_store_figures()
        now = time.monotonic()
        full_here = self.figures.store_bits >= self.figures.store_capacity_bits
        if full_here or now < self._peer_full_until:
            state = "paused: key store full" if full_here else "paused: peer's key store full"
            if self.figures.state != state:
                self.log.warning("%s; distillation paused", state)
                if self._acq is not None:
                    await asyncio.get_running_loop().run_in_executor(self.io, self._acq.stop)
            self.figures.state = state
            await asyncio.sleep(STORE_POLL_S)
            return True
        if self.figures.state.startswith("paused"):
            self.log.info("key store has room again; distillation resumes")
            self.figures.state = "running"
        return False

    async def _refresh_store_figures(self) -> None:
        usage = await self._in_thread(self.store.usage, self.link.id)
        self.figures.store_bits = usage.stored_bits
        self.figures.store_capacity_bits = usage.capacity_bits

    async def _run_block(self, blk: _Block) -> None:
        self.figures.blocks_started += 1
        self.figures.in_flight_peak = max(self.figures.in_flight_peak, len(self._blocks))
        outcome = None
        try:
            async with asyncio.timeout(self.link.policy.block_timeout_s):
                while blk.role is None or not blk.role.done:
                    env = await blk.inbox.get()
                    await self._role_step(blk, env)
                outcome = blk.role.outcome
                sifted = _stat(outcome, "sifted_bits")
                if sifted == sifted:
                    self.figures.sifted_bits += int(sifted)
                if self.control is not None and self.is_bob:      # detector veto, QBER feed
                    stats = getattr(getattr(outcome, "stats", None), "to_dict", dict)()
                    self.control.block_finished(self.link.id, *blk.window, stats)
                    if outcome is not None and not outcome.aborted:
                        veto = await self.control.key_veto(self.link.id, *blk.window)
                        if veto:
                            raise _BlockAborted(veto)
                if outcome is None or outcome.aborted:
                    reasons = list(outcome.reasons) if outcome is not None else ["no_outcome"]
                    await self._commit_block_aborted(blk)
                    self._record_abort(blk, reasons, outcome)
                    return
                await self._hand_over(blk, outcome)
        except _BlockAborted as exc:
            await self._abort_block(blk, exc.reason, tell_peer=exc.tell_peer, outcome=outcome)
        except TimeoutError:
            await self._abort_block(blk, "timeout", outcome=outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:        # a bug or a store failure: this block only
            self.log.error("block %d failed: %s: %s", blk.block_id, type(exc).__name__, exc)
            await self._abort_block(blk, "internal_error", outcome=outcome)
        finally:
            if outcome is not None and getattr(outcome, "key", None) is not None:
                outcome.key.fill(0)
            if not blk.handed_over:
                self._peer_reasons.pop(blk.block_id, None)
            if self._blocks.pop(blk.block_id, None) is not None and self.is_bob:
                self._slots.release()

    async def _role_step(self, blk: _Block, env) -> None:
        if m.is_engine_type(env.msg_type):
            if env.msg_type == E.ABORT:
                raise _BlockAborted("peer: " + m.decode_reason(env.payload), tell_peer=False)
            raise _BlockAborted(f"unexpected_message_{env.msg_type}")
        if blk.role is None:     # Alice: the first message of the block creates her role
            blk.role = await self._in_thread(self.roles.alice, self.link, self.board_params,
                                             self._pattern)
        msg = (env.msg_type, env.payload)
        if self.roles.is_light_step(env.msg_type, len(env.payload)):
            out = blk.role.receive(msg)      # cheaper than the two thread hops around it
        else:
            out = await self._in_thread(blk.role.receive, msg)
        await self._send_all(blk, out)

    async def _send_all(self, blk: _Block, out) -> None:
        for msg_type, payload in out:
            blk.step += 1
            await self._send(blk.block_id, msg_type, payload, blk.step)

    def _split_key(self, outcome) -> tuple[np.ndarray, np.ndarray]:
        """(bits set aside for the authentication pool, the rest for the commit): copies."""
        bits = outcome.key
        take = int(self.channel.auth_refill_bits(int(bits.size)))
        return bits[:take].copy(), bits[take:].copy()

    async def _hand_over(self, blk: _Block, outcome) -> None:
        """The key goes to the two-step commit (which wipes it): from here the block is the
        commit's, and nothing the block's task sees aborts it any more."""
        auth, rest = await self._in_thread(self._split_key, outcome)
        size = self.keystore.key_size_bits
        n_keys = rest.size // size
        self._unsettled[blk.block_id] = (_stat(outcome, "qber_estimate"), n_keys,
                                         int(auth.size), n_keys * size)
        bits = np.packbits(auth)
        packed = bytearray(bits)
        bits.fill(0)
        auth.fill(0)
        blk.handed_over = True
        await self._send_commit(await self._commit_step(self.commit.block_done, blk.block_id,
                                                        rest, packed))
        await self._note_settled()

    async def _commit_block_aborted(self, blk: _Block) -> None:
        if self.is_bob:
            await self._send_commit(await self._in_commit(self.commit.block_aborted,
                                                          blk.block_id))

    def _record_abort(self, blk, reasons: list[str], outcome) -> None:
        qber = _stat(outcome, "qber_estimate")
        self.figures.block_aborted(reasons, qber, self.link.policy.qber_alarm_blocks)
        if "qber" in self.figures.alarms and any("qber" in r for r in reasons):
            self.log.warning("ALARM %s", self.figures.alarms["qber"])
        self.log.info("block %d aborted: %s", blk.block_id, ", ".join(reasons))

    async def _abort_block(self, blk: _Block, reason: str, *, tell_peer: bool = True,
                           outcome=None) -> None:
        """Abort at this end and (unless the peer told us) at the peer's."""
        if blk.handed_over:
            self.log.warning("block %d: %s after its key went to the commit; the commit "
                             "settles it", blk.block_id, reason)
            return
        # The block leaves the books here, not only in its task's finally: a task cancelled
        # before it first ran never runs that finally, and a block aborted while Bob was
        # still sending its opening has no task yet (either kept it in flight until timeout).
        blk.aborted = True
        if self._blocks.pop(blk.block_id, None) is not None and self.is_bob:
            self._slots.release()
        if blk.task is not None and blk.task is not asyncio.current_task():
            blk.task.cancel()
        if tell_peer:       # before the commit's refusal: the peer learns why first
            try:
                await self._send(blk.block_id, E.ABORT, m.encode_reason(reason))
            except Exception as exc:     # the peer's block times out at the latest
                self.log.warning("could not tell the peer block %d aborted: %s",
                                 blk.block_id, exc)
        await self._commit_block_aborted(blk)
        self._record_abort(blk, [reason], outcome)


def _stat(outcome, name: str) -> float:
    if outcome is None:
        return float("nan")
    try:
        value = outcome.stats.to_dict().get(name)
    except Exception:
        return float("nan")
    return float(value) if isinstance(value, (int, float)) else float("nan")

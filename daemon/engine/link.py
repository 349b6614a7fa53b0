"""One link's pipeline: hello, blocks in flight, the two-step commit, figures.

The event loop owns all state here; the role objects' work (numba kernels) runs in the compute
pool and the board's blocking I/O in a one-thread I/O pool, so the node keeps answering status
and its peer while it distills. Each block has its own task and inbox: its messages are handled
in order, blocks run side by side up to ``policy.blocks_in_flight`` (round trips, not CPU, bound
a block on a real network).

Roles: Bob opens blocks (acquisition, ``BobBlock.start``) and coordinates the commit; Alice
answers. Two-step commit, Bob deciding: Bob ``prepare``s and sends PREPARE (key IDs); Alice
``prepare``s and answers PREPARED; Bob ``commit``s and sends COMMIT; Alice ``commit``s. Bob
discards and sends ABORT if anything fails before he commits. Alice never discards a prepared
block on her own (Bob may have committed): it stays in doubt until Bob's COMMIT or ABORT, or
until the next hello, where Bob resolves every block in doubt at either end from his store —
commit when both ends prepared it, else discard. So after any crash both ends keep a block or
both drop it.

Hello: each end announces a fresh session nonce, its role, protocol and policy (Alice adds her
board's public parameters and her blocks in doubt) and repeats it until the peer echoes the
nonce. A new peer session means the peer restarted: live blocks are aborted (prepared ones stay
in doubt for the resolution).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from daemon.config import KeyStoreConfig, LinkConfig
from daemon.engine import messages as m
from daemon.engine.acquisition import AcquisitionError, BobAcquisition, PatternSource, \
    read_board_parameters
from daemon.engine.figures import LinkFigures
from daemon.engine.messages import EngineMessage as E
from daemon.engine.ports import BlockRole, BlockRoleFactory, BlockState, BoardParameters, \
    KeyStore, PeerChannel, Rejected

HELLO_REPEAT_S = 1.0
STORE_POLL_S = 1.0
PEER_FULL_PAUSE_S = 5.0


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
    prepared: bool = False          # this end holds the block durably (not yet deliverable)
    committing: bool = False        # the store is committing it: too late to abort
    step: int = 0
    window: tuple[float, float] = (0.0, 0.0)   # Bob: monotonic time its events were detected


_LOCAL_POLICY = ("blocks_in_flight", "block_timeout_s", "qber_alarm_blocks")


def policy_summary(link: LinkConfig) -> dict:
    """What both ends must agree on before any block (the hello compares it); how many blocks
    a node runs at once, its timeout and its alarm are its own business."""
    policy = {k: v for k, v in dataclasses.asdict(link.policy).items() if k not in _LOCAL_POLICY}
    return {"protocol": link.protocol, **policy,
            **{k: v for k, v in dataclasses.asdict(link.calibration).items() if v is not None}}


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
        # block_finished(link, t0, t1, stats). The stream is continuous, so a block's events
        # were detected since the previous block was cut: ``_window_mark``.
        self.control = control
        self._window_mark: float | None = None
        self.figures = LinkFigures(link.id, link.role, link.protocol)
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
        # Authentication key refills happen in the same order at both ends: Bob numbers them
        # (per peer session) in PREPARE, Alice takes her turn by that number.
        self._refill_seq = 0
        self._refill_lock = asyncio.Lock()
        self._refill_turn = asyncio.Condition()

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
            await self.channel.start()
            tasks = [asyncio.create_task(self._receive_loop(), name=f"{self.link.id}-recv"),
                     asyncio.create_task(self._hello_loop(), name=f"{self.link.id}-hello")]
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

    def hold(self, held: bool) -> None:
        """Open no new blocks (blocks in flight finish) until released: a drained, quiescent
        link whose two stores can be compared."""
        self._held = held
        if held:
            self.figures.state = "held by operator"
        elif self.figures.state == "held by operator":
            self.figures.state = "running"

    def status(self) -> dict:
        self.figures.in_flight = len(self._blocks) + self._opening
        try:
            self.figures.auth_bits_left = self.channel.auth_key_bits_left()
        except Exception:        # status never fails because a port cannot say
            self.figures.auth_bits_left = None
        return self.figures.to_dict()

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.compute, fn, *args)

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
            hello["in_doubt"] = await self._in_thread(self.store.in_doubt, self.link.id)
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
            self._refill_seq = 0
            self._highest_peer_block = 0      # a restarted Bob's clock may have stepped back
            self._peer_acked = False
            self._ready.clear()
            if restarted:
                self.log.warning("peer restarted (new session); aborting %d live block(s)",
                                 len(self._blocks))
            for blk in list(self._blocks.values()):
                await self._abort_block(blk, "peer_restarted", tell_peer=False)
            if self.is_bob:
                try:
                    self.board_params = BoardParameters.from_dict(hello["board"])
                    in_doubt = [int(b) for b in hello.get("in_doubt", [])]
                except (KeyError, TypeError, ValueError) as exc:
                    self._peer_session = None
                    raise m.MessageError(f"hello without usable board parameters: {exc!r}")
                await self._resolve_in_doubt(in_doubt)
            await self._send_hello()
        if hello.get("peer_session") == self._session and not self._peer_acked:
            self._peer_acked = True
            self._ready.set()
            self.figures.state = "held by operator" if self._held else "running"
            self.log.info("peer %s ready (role %s)", hello.get("node"), peer_role)

    async def _resolve_in_doubt(self, alice_in_doubt: list[int]) -> None:
        """Bob decides every block in doubt at either end, from his own store."""
        mine = await self._in_thread(self.store.in_doubt, self.link.id)
        commit, discard = [], []
        for block_id in sorted(set(mine) | set(alice_in_doubt)):
            state = await self._in_thread(self.store.block_state, self.link.id, block_id)
            both_prepared = block_id in alice_in_doubt and state in (BlockState.PREPARED,
                                                                     BlockState.COMMITTED)
            if both_prepared:
                if state == BlockState.PREPARED:
                    await self._in_thread(self.store.commit, self.link.id, block_id)
                commit.append(block_id)
            else:
                if state == BlockState.PREPARED:
                    await self._in_thread(self.store.discard, self.link.id, block_id)
                if block_id in alice_in_doubt:
                    discard.append(block_id)
        if commit or discard or mine:
            self.log.warning("in-doubt blocks resolved: %d committed, %d discarded at both ends",
                             len(commit), len(set(mine) | set(alice_in_doubt)) - len(commit))
            await self._send(m.LINK_BLOCK_ID, E.RESOLVE,
                             m.encode_json({"commit": commit, "discard": discard}))
        await self._refresh_store_figures()

    async def _apply_resolution(self, verdict: dict) -> None:
        for block_id in verdict.get("commit", []):
            if block_id not in self._blocks:
                await self._in_thread(self.store.commit, self.link.id, int(block_id))
        for block_id in verdict.get("discard", []):
            if block_id not in self._blocks:
                await self._in_thread(self.store.discard, self.link.id, int(block_id))
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
            elif env.msg_type == E.RESOLVE and not self.is_bob:
                await self._apply_resolution(m.decode_json(env.payload))
            else:
                raise m.MessageError(f"message type {env.msg_type} on the link channel")
            return
        blk = self._blocks.get(env.block_id)
        if blk is not None:
            blk.inbox.put_nowait(env)
            return
        if m.is_engine_type(env.msg_type):
            await self._late_engine_message(env)
        elif not self.is_bob:
            await self._open_alice_block(env)
        # Bob: a role message for a block he no longer runs (aborted here): nothing to do.

    async def _late_engine_message(self, env) -> None:
        """COMMIT/ABORT for a block whose task ended while it was prepared (in doubt)."""
        if not self.is_bob and env.msg_type in (E.COMMIT, E.ABORT):
            state = await self._in_thread(self.store.block_state, self.link.id, env.block_id)
            if state == BlockState.PREPARED:
                if env.msg_type == E.COMMIT:
                    await self._in_thread(self.store.commit, self.link.id, env.block_id)
                    await self._send(env.block_id, E.COMMITTED, b"")
                else:
                    await self._in_thread(self.store.discard, self.link.id, env.block_id)
                await self._refresh_store_figures()

    async def _on_rejected(self, block_id: int | None, reason: str) -> None:
        self.figures.message_rejected(reason)
        self.log.warning("peer message rejected: %s (block %s)", reason, block_id)
        blk = self._blocks.get(block_id) if block_id is not None else None
        if blk is not None:
            await self._abort_block(blk, "rejected_message")

    # -- blocks ---------------------------------------------------------------------------------

    async def _open_alice_block(self, env) -> None:
        if not self._ready.is_set():
            await self._send(env.block_id, E.ABORT, m.encode_reason("peer_not_ready"))
            return
        if env.block_id <= self._highest_peer_block:
            await self._on_rejected(env.block_id, "block id not above the last one")
            await self._send(env.block_id, E.ABORT, m.encode_reason("stale_block_id"))
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
                try:
                    acquired = await loop.run_in_executor(self.io, self._acq.next_block)
                except AcquisitionError as exc:
                    self.figures.block_aborted([exc.reason], float("nan"),
                                               self.link.policy.qber_alarm_blocks)
                    self.log.warning("block not acquired: %s", exc)
                    continue
                finally:
                    self._window_mark = time.monotonic()
                if not self._ready.is_set():
                    continue          # the peer restarted while we collected
                blk = _Block(self._new_block_id(), window=(t0, self._window_mark))
                blk.role = await self._in_thread(self.roles.bob, self.link, self.board_params,
                                                 acquired)
                opening = await self._in_thread(blk.role.start)
                # Opened here, in block-id order: Alice refuses a block id below the last one.
                self._blocks[blk.block_id] = blk
                await self._send_all(blk, opening)
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
                if self.control is not None and self.is_bob:      # detector veto, QBER feed
                    stats = getattr(getattr(outcome, "stats", None), "to_dict", dict)()
                    self.control.block_finished(self.link.id, *blk.window, stats)
                    if outcome is not None and not outcome.aborted:
                        veto = await self.control.key_veto(self.link.id, *blk.window)
                        if veto:
                            raise _BlockAborted(veto)
                if outcome is None or outcome.aborted:
                    reasons = list(outcome.reasons) if outcome is not None else ["no_outcome"]
                    self._record_abort(blk, reasons, outcome)
                    return
                if self.is_bob:
                    await self._bob_commit(blk, outcome)
                else:
                    await self._alice_commit(blk, outcome)
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
        await self._send_all(blk, await self._in_thread(blk.role.receive,
                                                        (env.msg_type, env.payload)))

    async def _send_all(self, blk: _Block, out) -> None:
        for msg_type, payload in out:
            blk.step += 1
            await self._send(blk.block_id, msg_type, payload, blk.step)

    async def _expect(self, blk: _Block, msg_type: int):
        env = await blk.inbox.get()
        if env.msg_type == E.ABORT:
            raise _BlockAborted("peer: " + m.decode_reason(env.payload), tell_peer=False)
        if env.msg_type != msg_type:
            raise _BlockAborted(f"unexpected_message_{env.msg_type}")
        return env

    def _cut_keys(self, blk: _Block, outcome) -> tuple[list, int, int]:
        """Auth key refill first, then whole keys; returns (keys, auth_bits, secret_bits)."""
        bits = outcome.key
        taken = int(self.channel.refill_auth_key(self.link.id, blk.block_id, bits))
        size = self.keystore.key_size_bits
        usable = bits[taken:]
        n = usable.size // size
        keys = []
        for i in range(n):
            chunk = np.packbits(usable[i * size:(i + 1) * size])
            keys.append(chunk.tobytes())
            chunk.fill(0)
        return keys, taken, n * size

    async def _bob_commit(self, blk: _Block, outcome) -> None:
        async with self._refill_lock:
            seq = self._refill_seq
            keys, auth_bits, secret_bits = await self._in_thread(self._cut_keys, blk, outcome)
            self._refill_seq += 1
        ids = [uuid.UUID(bytes=os.urandom(16), version=4) for _ in keys]
        await self._in_thread(self.store.prepare, self.link.id, blk.block_id,
                              list(zip(ids, keys)))
        blk.prepared = True
        del keys
        await self._send(blk.block_id, E.PREPARE, m.encode_prepare(seq, ids))
        await self._expect(blk, E.PREPARED)
        await self._commit_in_store(blk)
        await self._send(blk.block_id, E.COMMIT, b"")
        self._record_ok(blk, outcome, len(ids), auth_bits, secret_bits)

    async def _alice_commit(self, blk: _Block, outcome) -> None:
        env = await self._expect(blk, E.PREPARE)
        seq, ids = m.decode_prepare(env.payload)
        async with self._refill_turn:
            if seq < self._refill_seq:
                raise _BlockAborted(f"refill_out_of_order (#{seq} after #{self._refill_seq})")
            await self._refill_turn.wait_for(lambda: self._refill_seq == seq)
        try:
            keys, auth_bits, secret_bits = await self._in_thread(self._cut_keys, blk, outcome)
        finally:
            async with self._refill_turn:
                self._refill_seq = seq + 1
                self._refill_turn.notify_all()
        if len(keys) != len(ids):
            raise _BlockAborted(f"key_count_mismatch ({len(keys)} here, {len(ids)} at Bob)")
        usage = await self._in_thread(self.store.usage, self.link.id)
        if usage.stored_bits + secret_bits > usage.capacity_bits:
            raise _BlockAborted("store_full")
        await self._in_thread(self.store.prepare, self.link.id, blk.block_id,
                              list(zip(ids, keys)))
        blk.prepared = True
        del keys
        await self._send(blk.block_id, E.PREPARED, b"")
        await self._expect(blk, E.COMMIT)
        await self._commit_in_store(blk)
        await self._send(blk.block_id, E.COMMITTED, b"")
        self._record_ok(blk, outcome, len(ids), auth_bits, secret_bits)

    async def _commit_in_store(self, blk: _Block) -> None:
        """Once the commit starts, nothing aborts the block (shielded from cancellation too)."""
        blk.committing = True
        await asyncio.shield(self._in_thread(self.store.commit, self.link.id, blk.block_id))
        blk.prepared = blk.committing = False

    def _record_ok(self, blk, outcome, n_keys: int, auth_bits: int, secret_bits: int) -> None:
        qber = _stat(outcome, "qber_estimate")
        self.figures.block_ok(qber, secret_bits, n_keys, auth_bits)
        self.figures.store_bits += secret_bits
        self.log.info("block %d stored: %d keys, %d secret bits, QBER %.2f%%, %d auth bits",
                      blk.block_id, n_keys, secret_bits, qber * 100, auth_bits)

    def _record_abort(self, blk, reasons: list[str], outcome) -> None:
        if "peer: store_full" in reasons:
            self._peer_full_until = time.monotonic() + PEER_FULL_PAUSE_S
        qber = _stat(outcome, "qber_estimate")
        self.figures.block_aborted(reasons, qber, self.link.policy.qber_alarm_blocks)
        if "qber" in self.figures.alarms and any("qber" in r for r in reasons):
            self.log.warning("ALARM %s", self.figures.alarms["qber"])
        self.log.info("block %d aborted: %s", blk.block_id, ", ".join(reasons))

    async def _abort_block(self, blk: _Block, reason: str, *, tell_peer: bool = True,
                           outcome=None) -> None:
        """Abort at this end and (unless the peer told us) at the peer's."""
        if blk.committing:
            self.log.warning("block %d: %s while committing; the commit stands", blk.block_id,
                             reason)
            return
        if blk.task is not None and blk.task is not asyncio.current_task():
            blk.task.cancel()
        if blk.prepared:
            if self.is_bob or reason.startswith("peer: "):
                # Bob decides; Alice drops a prepared block only on Bob's word.
                await self._in_thread(self.store.discard, self.link.id, blk.block_id)
                blk.prepared = False
            else:
                self.log.warning("block %d in doubt (prepared, %s): kept until Bob resolves it",
                                 blk.block_id, reason)
        if tell_peer:
            try:
                await self._send(blk.block_id, E.ABORT, m.encode_reason(reason))
            except Exception as exc:     # the peer learns at the next hello at the latest
                self.log.warning("could not tell the peer block %d aborted: %s",
                                 blk.block_id, exc)
        self._record_abort(blk, [reason], outcome)


def _stat(outcome, name: str) -> float:
    if outcome is None:
        return float("nan")
    try:
        value = outcome.stats.to_dict().get(name)
    except Exception:
        return float("nan")
    return float(value) if isinstance(value, (int, float)) else float("nan")

"""Alice's parity-answering role and Bob's correcting role, for a batch of frames at once.

Sans-I/O (the daemon owns the peer socket): Bob produces ``CascadeSetup`` and one
``ParityRequest`` per round covering every frame; Alice turns each request into one
``ParityReply``. Every parity bit Alice puts in a reply is counted as leakage in
``CascadeAlice.disclosed_bits`` (per frame); Bob counts the same bits on his side.

Layout: keys are unpacked uint8 0/1 arrays, one bit per byte.
"""

from __future__ import annotations

import secrets

import numpy as np

from . import kernels
from .errors import MessageError, ReconciliationError
from .messages import CascadeSetup, ParityReply, ParityRequest
from .permutations import permutations_for
from .schedules import (SCHEDULES_BY_ID, CascadeSchedule, block_offsets, check_max_questions,
                        get_schedule)

_EMPTY_RANGES = np.zeros((0, 3), dtype=np.int64)


def check_key(bits, what: str) -> np.ndarray:
    """Return ``bits`` as a contiguous uint8 0/1 array; the error never shows key bits."""
    arr = np.asarray(bits)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ReconciliationError(f"{what}: expected a non-empty 1-D bit array, got shape "
                                  f"{arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise ReconciliationError(f"{what}: dtype {arr.dtype} (expected uint8 0/1)")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ReconciliationError(f"{what}: values other than 0 and 1 (expected one bit per byte)")
    return np.ascontiguousarray(arr, dtype=np.uint8)


class _Permutations:
    """Pass shuffles per frame layout (frames of equal length in a batch share them)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: dict[tuple, tuple] = {}

    def get(self, n_bits: int, halving_bits: np.ndarray):
        key = (n_bits, tuple(halving_bits.tolist()))
        if key not in self._cache:
            self._cache[key] = permutations_for(self.seed, n_bits, halving_bits)
        return self._cache[key]


class CascadeBob:
    """Bob: owns the noisy frames, asks for parities, corrects his bits in place of a copy."""

    def __init__(self, frames, qber: float, schedule: str = "yan", seed: int | None = None,
                 max_questions: int | None = None):
        self.schedule: CascadeSchedule = get_schedule(schedule)
        frames = [check_key(f, f"Bob frame {i}") for i, f in enumerate(frames)]
        if not frames:
            raise ReconciliationError("Bob: no frames to reconcile (expected >= 1)")
        self.seed = secrets.randbits(64) if seed is None else int(seed) & (2**64 - 1)
        self.qber = float(qber)
        perms = _Permutations(self.seed)
        self._frames = []
        for bits in frames:
            sizes, halving = self.schedule.layout(len(bits), self.qber)
            offs = block_offsets(len(bits), sizes)
            order, perm, inv, pinfo = perms.get(len(bits), halving)
            bits = kernels.reorder(bits, order)
            bp, u8, node, st, ctl, queries = kernels.new_bob_state(bits, perm, inv, pinfo, sizes,
                                                                   offs)
            ctl[kernels.C_MAXQ] = check_max_questions(max_questions, self.schedule, len(bits),
                                                      self.qber)
            self._frames.append(dict(bits=bits, bp=bp, order=order, sizes=sizes, offs=offs,
                                     perm=perm, inv=inv, pinfo=pinfo, u8=u8, node=node, st=st,
                                     ctl=ctl, queries=queries, expect=0))
        self.round = 0
        self._waiting = False

    @property
    def done(self) -> bool:
        return all(f["ctl"][kernels.C_DONE] for f in self._frames)

    def setup(self) -> CascadeSetup:
        return CascadeSetup(self.seed, self.schedule.schedule_id, self.qber,
                            tuple(len(f["bits"]) for f in self._frames))

    def start(self) -> ParityRequest:
        """First request (send after ``setup()``)."""
        if self.round != 0:
            raise MessageError("Bob: start() called twice")
        empty = np.zeros(0, dtype=np.uint8)
        return self._step([empty] * len(self._frames))

    def handle_reply(self, reply: ParityReply) -> ParityRequest | None:
        """Correct with Alice's answers; returns the next request, or None when all are done."""
        if not self._waiting:
            raise MessageError("Bob: reply received while no request is outstanding")
        if reply.round != self.round:
            raise MessageError(f"Bob: reply to round {reply.round} (expected {self.round})")
        if len(reply.counts) != len(self._frames):
            raise MessageError(f"Bob: reply covers {len(reply.counts)} frames "
                               f"(expected {len(self._frames)})")
        if len(reply.bits) != int(np.sum(reply.counts)):
            raise MessageError(f"Bob: reply holds {len(reply.bits)} parity bits for counts "
                               f"adding up to {int(np.sum(reply.counts))}")
        expect = np.array([f["expect"] for f in self._frames], dtype=np.int64)
        wrong = np.flatnonzero(np.asarray(reply.counts) != expect)
        if len(wrong):
            i = int(wrong[0])
            raise MessageError(f"Bob: frame {i} reply has {int(reply.counts[i])} parity bits "
                               f"(expected {int(expect[i])})")
        bits = np.ascontiguousarray(reply.bits, dtype=np.uint8)
        off = np.concatenate(([0], np.cumsum(expect)))
        return self._step([bits[off[i]:off[i + 1]] for i in range(len(self._frames))])

    def _step(self, answers) -> ParityRequest | None:
        self._waiting = False
        n_frames = len(self._frames)
        new_passes = np.full(n_frames, -1, dtype=np.int64)
        counts = np.zeros(n_frames, dtype=np.int64)
        ranges = []
        for i, (f, ans) in enumerate(zip(self._frames, answers)):
            f["expect"] = 0
            if f["ctl"][kernels.C_DONE]:
                continue
            nq, new_pass = kernels.bob_round(f["bits"], f["bp"], f["perm"], f["inv"], f["pinfo"],
                                             f["sizes"], f["offs"], f["u8"], f["node"], f["st"],
                                             f["ctl"], ans, len(ans), f["queries"])
            nq = int(nq)
            new_pass = int(new_pass)
            new_passes[i] = new_pass
            counts[i] = nq
            ranges.append(f["queries"][:, :nq].T)
            f["expect"] = nq + (int(f["offs"][new_pass + 1] - f["offs"][new_pass])
                                if new_pass >= 0 else 0)
        if self.done:
            return None
        self.round += 1
        self._waiting = True
        return ParityRequest(self.round, new_passes, counts,
                             np.concatenate(ranges) if ranges else _EMPTY_RANGES)

    # results, per frame
    def corrected_bits(self, i: int) -> np.ndarray:
        """Bob's bits of frame i as corrected so far, in frame order (a new array)."""
        return kernels.restore_order(self._frames[i]["bits"], self._frames[i]["order"])

    def disclosed_bits(self, i: int) -> int:
        return int(self._frames[i]["ctl"][kernels.C_DISCLOSED])

    def round_trips(self, i: int) -> int:
        return int(self._frames[i]["ctl"][kernels.C_ROUNDS])

    def gave_up(self, i: int) -> bool:
        """True if Alice's answers contradicted each other (the frame must be discarded)."""
        return int(self._frames[i]["ctl"][kernels.C_DONE]) == 2

    def corrections(self, i: int) -> int:
        return int(self._frames[i]["ctl"][kernels.C_FLIPS])


class CascadeAlice:
    """Alice: owns the reference frames, answers parity questions, counts what she discloses."""

    def __init__(self, frames):
        self._bits = [check_key(f, f"Alice frame {i}") for i, f in enumerate(frames)]
        if not self._bits:
            raise ReconciliationError("Alice: no frames to reconcile (expected >= 1)")
        self.disclosed_bits = [0] * len(self._bits)
        self._session = None
        self._round = 0

    def handle_setup(self, setup: CascadeSetup) -> None:
        if self._session is not None:
            raise MessageError("Alice: second CascadeSetup for one batch")
        schedule = SCHEDULES_BY_ID.get(setup.schedule_id)
        if schedule is None:
            raise MessageError(f"Alice: schedule id {setup.schedule_id} unknown (accepted: "
                               f"{sorted(SCHEDULES_BY_ID)})")
        if tuple(len(b) for b in self._bits) != tuple(setup.frame_bits):
            raise MessageError(f"Alice: setup announces frames of {list(setup.frame_bits)} bits"
                               f", she holds {[len(b) for b in self._bits]}")
        perms = _Permutations(setup.seed)
        session = []
        for bits in self._bits:
            try:
                sizes, halving = schedule.layout(len(bits), setup.qber)
            except ReconciliationError as exc:
                raise MessageError(f"Alice: setup rejected: {exc}") from None
            offs = block_offsets(len(bits), sizes)
            order, perm, inv, pinfo = perms.get(len(bits), halving)
            bits = kernels.reorder(bits, order)
            actl = np.zeros(kernels.N_CTL, dtype=np.int64)
            kernels.label_parity(bits, inv, pinfo, actl)
            session.append((bits, perm, pinfo, sizes, offs,
                            kernels.prefix_parities(bits, perm, pinfo), actl))
        self._session = session

    def handle_request(self, request: ParityRequest) -> ParityReply:
        if self._session is None:
            raise MessageError("Alice: ParityRequest before CascadeSetup")
        if request.round != self._round + 1:
            raise MessageError(f"Alice: request for round {request.round} "
                               f"(expected {self._round + 1})")
        n_frames = len(self._session)
        if len(request.new_pass) != n_frames or len(request.counts) != n_frames:
            raise MessageError(f"Alice: request covers {len(request.new_pass)} frames "
                               f"(expected {n_frames})")
        ranges = np.asarray(request.ranges, dtype=np.int64).reshape(-1, 3)
        counts = np.asarray(request.counts, dtype=np.int64)
        if len(ranges) != int(counts.sum()):
            raise MessageError(f"Alice: request holds {len(ranges)} ranges for counts adding "
                               f"up to {int(counts.sum())}")
        n_passes = len(self._session[0][3])
        lengths = np.array([len(frame[0]) for frame in self._session], dtype=np.int64)
        new_pass = np.asarray(request.new_pass, dtype=np.int64)
        bad = np.flatnonzero((new_pass < -1) | (new_pass >= n_passes))
        if len(bad):
            i = int(bad[0])
            raise MessageError(f"Alice: frame {i} new pass {new_pass[i]} outside "
                               f"[-1, {n_passes - 1}]")
        frame_of = np.repeat(np.arange(n_frames), counts)
        bad = np.flatnonzero((ranges[:, 0] < 0) | (ranges[:, 0] >= n_passes) | (ranges[:, 1] < 0)
                             | (ranges[:, 1] >= ranges[:, 2])
                             | (ranges[:, 2] > lengths[frame_of]))
        if len(bad):
            i = int(frame_of[bad[0]])
            raise MessageError(f"Alice: frame {i} asks for a range outside passes "
                               f"[0, {n_passes - 1}] x positions [0, {lengths[i]}]")
        n_new = np.array([int(frame[4][p + 1] - frame[4][p]) if p >= 0 else 0
                          for frame, p in zip(self._session, new_pass)], dtype=np.int64)
        answer_counts = n_new + counts
        out = np.empty(int(answer_counts.sum()), dtype=np.uint8)
        queries = np.ascontiguousarray(ranges.T)
        w = 0
        r = 0
        for i, frame in enumerate(self._session):
            if answer_counts[i] == 0:
                continue
            bits, perm, pinfo, sizes, offs, prefix, actl = frame
            m = int(counts[i])
            got = kernels.alice_answer(bits, perm, pinfo, sizes, offs, prefix, actl,
                                       int(new_pass[i]),
                                       np.ascontiguousarray(queries[:, r:r + m]), m,
                                       out[w:w + int(answer_counts[i])])
            self.disclosed_bits[i] += int(got)
            w += int(answer_counts[i])
            r += m
        self._round = request.round
        return ParityReply(request.round, answer_counts, out)

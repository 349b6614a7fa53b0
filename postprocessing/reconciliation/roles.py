"""Alice's parity-answering role and Bob's correcting role, for a batch of frames at once.

Sans-I/O (the daemon owns the peer socket): Bob produces ``CascadeSetup`` and one
``ParityRequest`` per round covering every frame; Alice turns each request into one
``ParityReply``. Every parity bit Alice puts in a reply is counted as leakage in
``CascadeAlice.disclosed_bits`` (per frame); Bob counts the same bits on his side.

Frames of equal length share one layout (block sizes, shuffles) and are processed as a group
with their state stacked on a leading frame axis, so a round costs one kernel call per group,
not per frame.

Layout: keys are unpacked uint8 0/1 arrays, one bit per byte.

Cost per round: one numba call per role (Bob's ``bob_round_frames`` also checks the reply's
bit counts, Alice's ``alice_reply_frames`` also checks the questions), plus one to decode
each message. The state (tens of MB per batch) comes from ``buffers.POOL`` and goes back to
it, key bits wiped, when the role object is collected: the next batch reuses mapped memory
instead of paying a page fault per 4 KiB.

Use (one role object per batch, driven by one thread; the daemon moves the bytes)::

    bob = CascadeBob(frames, qber_estimate, "yan")         # seed from secrets
    send(bob.setup().to_bytes()); request = bob.start()
    while request is not None:
        send(request.to_bytes())
        request = bob.handle_reply(ParityReply.from_bytes(receive()))
    # Alice: alice.handle_setup(CascadeSetup.from_bytes(...)), then for every request
    # send(alice.handle_request(ParityRequest.from_bytes(...)).to_bytes())
"""

from __future__ import annotations

import secrets

import numpy as np

from . import kernels
from .buffers import Arena
from .errors import MessageError, ReconciliationError
from .messages import CascadeSetup, ParityReply, ParityRequest
from .permutations import permutations_for
from .schedules import (SCHEDULES_BY_ID, CascadeSchedule, block_offsets, check_max_questions,
                        get_schedule)


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


def _ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices starts[0]..starts[0]+lengths[0]-1, then the same for each next pair (int64)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


class _Layout:
    """Block sizes and shuffles shared by every frame of one length in a batch."""

    def __init__(self, schedule: CascadeSchedule, seed: int, n_bits: int, qber: float):
        self.n_bits = n_bits
        self.sizes, halving = schedule.layout(n_bits, qber)
        self.offs = block_offsets(n_bits, self.sizes)
        self.order, self.perm, self.inv, self.pinfo = permutations_for(seed, n_bits, halving)


def _group_by_length(lengths) -> list[np.ndarray]:
    """Frame indices per distinct length, each ascending, groups in order of first frame."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    return [np.array(idx, dtype=np.int64) for idx in groups.values()]


def _span(idx: np.ndarray) -> tuple[int, int] | None:
    """(a, b) when a group's frames are the consecutive frames a..b-1, else None: its part of
    every message is then one slice, not a gather (``block.roles`` cuts keys so that it is)."""
    a, b = int(idx[0]), int(idx[-1]) + 1
    return (a, b) if b - a == len(idx) else None


def _part(flat: np.ndarray, offsets: np.ndarray, idx: np.ndarray, span, lengths: np.ndarray):
    """The entries of the frames ``idx`` in a per-frame flat array (frame i at ``offsets[i]``,
    ``lengths[i]`` long): a view for a span, a gathered copy otherwise."""
    if span is not None:
        return flat[offsets[span[0]]:offsets[span[1]]]
    return flat[_ragged_index(offsets[idx], lengths[idx])]


class CascadeBob:
    """Bob: owns the noisy frames, asks for parities, corrects (copies of) his bits."""

    def __init__(self, frames, qber: float, schedule: str = "yan", seed: int | None = None,
                 max_questions: int | None = None):
        self.schedule: CascadeSchedule = get_schedule(schedule)
        frames = [check_key(f, f"Bob frame {i}") for i, f in enumerate(frames)]
        if not frames:
            raise ReconciliationError("Bob: no frames to reconcile (expected >= 1)")
        self.seed = secrets.randbits(64) if seed is None else int(seed) & (2**64 - 1)
        self.qber = float(qber)
        self._lengths = [len(f) for f in frames]
        self._groups = []
        self._where = {}  # frame index -> (group, row)
        self._arena = Arena(self)
        for g, idx in enumerate(_group_by_length(self._lengths)):
            n = self._lengths[idx[0]]
            layout = _Layout(self.schedule, self.seed, n, self.qber)
            bits = self._arena.empty((len(idx), n), np.uint8)
            for row, i in enumerate(idx):
                kernels.reorder_into(frames[i], layout.order, bits[row])
            bp, u8, node, st, ctl, queries = kernels.new_bob_states(
                bits, layout.perm, layout.inv, layout.pinfo, layout.sizes, layout.offs,
                self._arena.empty)
            self._arena.wipe_on_release(bits, bp)  # his key, in pass orders
            ctl[:, kernels.C_MAXQ] = check_max_questions(max_questions, self.schedule, n,
                                                         self.qber)
            ctl[:, kernels.C_OMIT] = int(self.schedule.omit_first_parity)
            self._groups.append(dict(idx=idx, span=_span(idx), layout=layout, bits=bits,
                                     bp=bp, u8=u8, node=node, st=st, ctl=ctl, queries=queries))
            for row, i in enumerate(idx):
                self._where[int(i)] = (g, row)
        self._expect = np.zeros(len(frames), dtype=np.int64)  # answer bits due per frame
        self._active = len(frames)  # frames not finished
        self.round = 0
        self._waiting = False

    @property
    def done(self) -> bool:
        return self._active == 0

    def setup(self) -> CascadeSetup:
        return CascadeSetup(self.seed, self.schedule.schedule_id, self.qber,
                            tuple(self._lengths))

    def start(self) -> ParityRequest:
        """First request (send after ``setup()``)."""
        if self.round != 0:
            raise MessageError("Bob: start() called twice")
        return self._step(np.zeros(0, dtype=np.uint8), self._expect.copy())

    def handle_reply(self, reply: ParityReply) -> ParityRequest | None:
        """Correct with Alice's answers; returns the next request, or None when all are done."""
        if not self._waiting:
            raise MessageError("Bob: reply received while no request is outstanding")
        if reply.round != self.round:
            raise MessageError(f"Bob: reply to round {reply.round} (expected {self.round})")
        if len(reply.counts) != len(self._lengths):
            raise MessageError(f"Bob: reply covers {len(reply.counts)} frames "
                               f"(expected {len(self._lengths)})")
        # the bit total and each frame's count are checked by the round kernel before it
        # changes anything (``_refuse``), or here when frames have several lengths
        return self._step(np.ascontiguousarray(reply.bits, dtype=np.uint8),
                          np.ascontiguousarray(reply.counts, dtype=np.int64))

    def _refuse(self, status: int, answers: np.ndarray, got: np.ndarray):
        if status == -2:
            raise MessageError(f"Bob: reply holds {len(answers)} parity bits for counts "
                               f"adding up to {int(np.sum(got))}")
        raise MessageError(f"Bob: frame {status} reply has {int(got[status])} parity bits "
                           f"(expected {int(self._expect[status])})")

    def _step(self, answers: np.ndarray, got: np.ndarray) -> ParityRequest | None:
        n_frames = len(self._lengths)
        if len(self._groups) == 1:  # one frame length: frames are already in message order
            g = self._groups[0]
            lay = g["layout"]
            counts = np.empty(n_frames, dtype=np.int64)
            new_passes = np.empty(n_frames, dtype=np.int64)
            status, rows, self._active, _ = kernels.bob_round_frames(
                g["bits"], g["bp"], lay.perm, lay.inv, lay.pinfo, lay.sizes, lay.offs, g["u8"],
                g["node"], g["st"], g["ctl"], answers, got, self._expect, g["queries"], counts,
                new_passes)
            if status != -1:
                self._refuse(status, answers, got)
            self._waiting = False
            ranges = g["queries"][:rows].copy()
        else:
            if len(answers) != int(np.sum(got)):
                self._refuse(-2, answers, got)
            wrong = np.flatnonzero(got != self._expect)
            if len(wrong):
                self._refuse(int(wrong[0]), answers, got)
            self._waiting = False
            answer_offs = _offsets(self._expect)
            new_passes = np.full(n_frames, -1, dtype=np.int64)
            counts = np.zeros(n_frames, dtype=np.int64)
            group_ranges = []
            self._active = 0
            for g in self._groups:
                idx = g["idx"]
                lay = g["layout"]
                mine = np.ascontiguousarray(_part(answers, answer_offs, idx, g["span"],
                                                  self._expect))
                expect = self._expect[idx]
                nq = np.zeros(len(idx), dtype=np.int64)
                npass = np.zeros(len(idx), dtype=np.int64)
                _, rows, active, _ = kernels.bob_round_frames(
                    g["bits"], g["bp"], lay.perm, lay.inv, lay.pinfo, lay.sizes, lay.offs,
                    g["u8"], g["node"], g["st"], g["ctl"], mine, expect.copy(), expect,
                    g["queries"], nq, npass)
                self._active += active
                new_passes[idx] = npass
                counts[idx] = nq
                self._expect[idx] = expect
                group_ranges.append(g["queries"][:rows])
            # put each group's rows where its frames sit in the message
            ranges = np.empty((int(counts.sum()), 3), dtype=np.int64)
            starts = _offsets(counts)
            for g, rows in zip(self._groups, group_ranges):
                if g["span"] is not None:
                    ranges[starts[g["span"][0]]:starts[g["span"][1]]] = rows
                else:
                    ranges[_ragged_index(starts[g["idx"]], counts[g["idx"]])] = rows
        if self.done:
            return None
        self.round += 1
        self._waiting = True
        return ParityRequest(self.round, new_passes, counts, ranges)

    # results, per frame
    def _state(self, i: int):
        g, row = self._where[i]
        return self._groups[g], row

    def corrected_bits(self, i: int) -> np.ndarray:
        """Bob's bits of frame i as corrected so far, in frame order (a new array)."""
        g, row = self._state(i)
        return kernels.restore_order(g["bits"][row], g["layout"].order)

    def _ctl(self, i: int, field: int) -> int:
        g, row = self._state(i)
        return int(g["ctl"][row, field])

    def disclosed_bits(self, i: int) -> int:
        return self._ctl(i, kernels.C_DISCLOSED)

    def round_trips(self, i: int) -> int:
        return self._ctl(i, kernels.C_ROUNDS)

    def gave_up(self, i: int) -> bool:
        """True if Alice's answers contradicted each other (the frame must be discarded)."""
        return self._ctl(i, kernels.C_DONE) == 2

    def corrections(self, i: int) -> int:
        return self._ctl(i, kernels.C_FLIPS)


class CascadeAlice:
    """Alice: owns the reference frames, answers parity questions, counts what she discloses."""

    def __init__(self, frames):
        self._bits = [check_key(f, f"Alice frame {i}") for i, f in enumerate(frames)]
        if not self._bits:
            raise ReconciliationError("Alice: no frames to reconcile (expected >= 1)")
        self._disclosed = np.zeros(len(self._bits), dtype=np.int64)
        self._groups = None
        self._round = 0

    @property
    def disclosed_bits(self) -> list[int]:
        """Parity bits disclosed so far, per frame: exactly the bits of her replies."""
        return [int(x) for x in self._disclosed]

    def handle_setup(self, setup: CascadeSetup) -> None:
        if self._groups is not None:
            raise MessageError("Alice: second CascadeSetup for one batch")
        schedule = SCHEDULES_BY_ID.get(setup.schedule_id)
        if schedule is None:
            raise MessageError(f"Alice: schedule id {setup.schedule_id} unknown (accepted: "
                               f"{sorted(SCHEDULES_BY_ID)})")
        lengths = [len(b) for b in self._bits]
        if tuple(lengths) != tuple(setup.frame_bits):
            raise MessageError(f"Alice: setup announces frames of {list(setup.frame_bits)} bits"
                               f", she holds {lengths}")
        groups = []
        arena = Arena(self)
        for idx in _group_by_length(lengths):
            n = lengths[idx[0]]
            try:
                layout = _Layout(schedule, setup.seed, n, setup.qber)
            except ReconciliationError as exc:
                raise MessageError(f"Alice: setup rejected: {exc}") from None
            bits = arena.empty((len(idx), n), np.uint8)
            # rows of halving passes are never written nor read (their pages stay unmapped)
            prefix = arena.empty((len(idx), len(layout.sizes), n + 1), np.uint8)
            actl = np.zeros((len(idx), kernels.N_CTL), dtype=np.int64)
            actl[:, kernels.C_OMIT] = int(schedule.omit_first_parity)
            arena.wipe_on_release(bits, *(prefix[:, p] for p in range(len(layout.sizes))
                                          if layout.pinfo[1, p] < 0))  # her key, its prefixes
            for row, i in enumerate(idx):
                kernels.reorder_into(self._bits[i], layout.order, bits[row])
                kernels.prefix_parities_into(bits[row], layout.perm, layout.pinfo, prefix[row])
                kernels.label_parity(bits[row], layout.inv, layout.pinfo, actl[row])
            groups.append(dict(idx=idx, span=_span(idx), layout=layout, bits=bits,
                               prefix=prefix, actl=actl))
        self._n_passes = len(groups[0]["layout"].sizes)
        self._omit = int(schedule.omit_first_parity)
        self._lengths = np.array(lengths, dtype=np.int64)
        self._groups = groups

    def handle_request(self, request: ParityRequest) -> ParityReply:
        if self._groups is None:
            raise MessageError("Alice: ParityRequest before CascadeSetup")
        if request.round != self._round + 1:
            raise MessageError(f"Alice: request for round {request.round} "
                               f"(expected {self._round + 1})")
        n_frames = len(self._bits)
        if len(request.new_pass) != n_frames or len(request.counts) != n_frames:
            raise MessageError(f"Alice: request covers {len(request.new_pass)} frames "
                               f"(expected {n_frames})")
        ranges = np.ascontiguousarray(np.asarray(request.ranges, dtype=np.int64).reshape(-1, 3))
        counts = np.ascontiguousarray(request.counts, dtype=np.int64)
        n_passes = self._n_passes
        new_pass = np.ascontiguousarray(request.new_pass, dtype=np.int64)
        if len(self._groups) == 1:  # checks and answers in one kernel call
            g = self._groups[0]
            lay = g["layout"]
            bad, n_answers, out = kernels.alice_reply_frames(
                g["bits"], lay.perm, lay.pinfo, lay.sizes, lay.offs, g["prefix"], g["actl"],
                new_pass, ranges, counts, self._lengths, self._omit)
            if bad == -2:
                self._refuse_counts(ranges, counts)
            if bad >= 0:
                self._refuse(bad)
        else:
            if len(ranges) != int(counts.sum()):
                self._refuse_counts(ranges, counts)
            if (counts < 0).any():
                self._refuse(int(np.argmax(counts < 0)))
            bad = kernels.check_questions(new_pass, counts, ranges, self._lengths, n_passes)
            if bad >= 0:
                self._refuse(bad)
            n_answers = np.empty(n_frames, dtype=np.int64)
            for g in self._groups:
                n_answers[g["idx"]] = kernels.answer_counts(g["layout"].offs,
                                                            new_pass[g["idx"]], counts[g["idx"]],
                                                            self._omit)
            out = np.empty(int(n_answers.sum()), dtype=np.uint8)
            range_starts = _offsets(counts)
            answer_starts = _offsets(n_answers)
            for g in self._groups:
                idx = g["idx"]
                lay = g["layout"]
                mine = np.ascontiguousarray(_part(ranges, range_starts, idx, g["span"], counts))
                span = g["span"]
                answers = out[answer_starts[span[0]]:answer_starts[span[1]]] if span else \
                    np.empty(int(n_answers[idx].sum()), dtype=np.uint8)
                kernels.alice_answer_frames(g["bits"], lay.perm, lay.pinfo, lay.sizes, lay.offs,
                                            g["prefix"], g["actl"], new_pass[idx], mine,
                                            counts[idx], answers)
                if span is None:
                    out[_ragged_index(answer_starts[idx], n_answers[idx])] = answers
        self._disclosed += n_answers
        self._round = request.round
        return ParityReply(request.round, n_answers, out)

    @staticmethod
    def _refuse_counts(ranges, counts):
        raise MessageError(f"Alice: request holds {len(ranges)} ranges for counts adding "
                           f"up to {int(counts.sum())}")

    def _refuse(self, frame: int):
        raise MessageError(f"Alice: frame {frame} asks for a pass outside "
                           f"[0, {self._n_passes - 1}] or a range outside positions "
                           f"[0, {self._lengths[frame]}]")

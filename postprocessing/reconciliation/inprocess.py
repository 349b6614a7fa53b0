"""Both Cascade roles wired together in one process, for tests, benchmarks and the daemon.

``reconcile`` runs the fused kernel (no message objects) by default, or the two roles through
encoded messages with ``via_messages=True``; both disclose exactly the same parities.
Efficiency f = disclosed_bits / (n * h(e)) with e the TRUE error rate of the frame
(fraction of positions where Alice's and Bob's input bits differ), not the estimate.
``reconcile`` may be called from several threads at once (the kernels release the GIL and
each thread has its own scratch buffers).
"""

from __future__ import annotations

import math
import secrets
import threading
from dataclasses import dataclass

import numpy as np

from . import kernels
from .errors import ReconciliationError
from .messages import CascadeSetup, ParityReply, ParityRequest
from .permutations import permutations_for
from .roles import CascadeAlice, CascadeBob, check_key
from .schedules import block_offsets, check_max_questions, get_schedule


@dataclass(frozen=True)
class ReconcileResult:
    bits: np.ndarray          # Bob's corrected bits, uint8 0/1
    disclosed_bits: int       # parity bits Alice disclosed (leakage)
    efficiency: float         # disclosed / (n h(true QBER)); inf if no errors but disclosure
    round_trips: int          # request/reply pairs this frame needed
    frame_error: bool | None  # Bob's bits still differ from Alice's (None if unknown)
    bob_compared_bits: int = -1
    """Alice's parities Bob compared with his own (his count, kept apart from Alice's): each
    comparison's outcome can show in his later questions, so his traffic reveals at most this
    many bits (``leakage.leak_ec_bits``). -1 = not recorded."""


def binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def efficiency_of(disclosed_bits: int, n_bits: int, error_rate: float) -> float:
    """f = disclosed / (n h(e)); inf when e = 0 but bits were disclosed, 1.0 for 0/0."""
    ideal = n_bits * binary_entropy(error_rate)
    if ideal == 0.0:
        return math.inf if disclosed_bits else 1.0
    return disclosed_bits / ideal


def _pair(alice_bits, bob_bits) -> tuple[np.ndarray, np.ndarray]:
    a = check_key(alice_bits, "alice_bits")
    b = check_key(bob_bits, "bob_bits")
    if a.shape != b.shape:
        raise ReconciliationError(f"alice_bits has {a.shape[0]} bits, bob_bits {b.shape[0]} "
                                  "(expected equal lengths)")
    return a, b


def _result(a, corrected, disclosed, rounds, gave_up, true_errors,
            bob_compared) -> ReconcileResult:
    n = len(a)
    return ReconcileResult(bits=corrected, disclosed_bits=int(disclosed),
                           efficiency=efficiency_of(int(disclosed), n, true_errors / n),
                           round_trips=int(rounds),
                           frame_error=bool(gave_up or not np.array_equal(corrected, a)),
                           bob_compared_bits=int(bob_compared))


def reconcile(alice_bits, bob_bits, qber: float, schedule: str = "yan",
              seed: int | None = None, *, via_messages: bool = False,
              max_questions: int | None = None) -> ReconcileResult:
    """Cascade on one frame. ``qber`` is the estimate that sets the block sizes; ``seed``
    (64-bit, drawn with ``secrets`` when None) fixes the pass permutations; ``max_questions``
    caps Bob's binary-search questions per round (None: the schedule's default, 0: no cap)."""
    a, b = _pair(alice_bits, bob_bits)
    if via_messages:
        return reconcile_frames([a], [b], qber, schedule, seed, max_questions=max_questions)[0]
    sched = get_schedule(schedule)
    max_q = check_max_questions(max_questions, sched, len(a), qber)
    sizes, halving = sched.layout(len(a), qber)
    offs = block_offsets(len(a), sizes)
    seed = secrets.randbits(64) if seed is None else int(seed)
    order, perm, inv, pinfo = permutations_for(seed, len(a), halving)
    try:
        corrected, disclosed, rounds, status = run_fused(a, b, order, perm, inv, pinfo, sizes,
                                                         offs, max_q, sched.omit_first_parity)
        true_errors = int(np.count_nonzero(a != b))
        # one kernel plays both roles: every parity it discloses, Bob's half compares
        return _result(a, corrected, disclosed, rounds, status == 2, true_errors, disclosed)
    finally:
        _wipe_copies((a, alice_bits), (b, bob_bits))


def _wipe_copies(*pairs) -> None:
    """Zero the arrays ``check_key`` made as converted copies of the caller's key bits."""
    for checked, given in pairs:
        if checked is not given and not np.shares_memory(checked, np.asarray(given)):
            checked.fill(0)


_scratch = threading.local()


def run_fused(alice_bits, bob_bits, order, perm, inv, pinfo, sizes, offs, max_questions,
              omit_first_parity):
    """``kernels.cascade_fused`` with this thread's scratch buffers (grown when too small);
    ``omit_first_parity`` is the schedule's (``CascadeSchedule.omit_first_parity``)."""
    need_u8, need_i64 = kernels.fused_workspace_size(len(bob_bits), len(sizes), perm.shape[0],
                                                     int(offs[-1]))
    ubuf = getattr(_scratch, "u8", None)
    if ubuf is None or len(ubuf) < need_u8:
        ubuf = _scratch.u8 = np.empty(need_u8, dtype=np.uint8)
    ibuf = getattr(_scratch, "i64", None)
    if ibuf is None or len(ibuf) < need_i64:
        ibuf = _scratch.i64 = np.empty(need_i64, dtype=np.int64)
    try:
        return kernels.cascade_fused(alice_bits, bob_bits, order, perm, inv, pinfo, sizes, offs,
                                     max_questions, int(bool(omit_first_parity)), ubuf, ibuf)
    finally:
        # The scratch outlives the call (one per thread) and held both parties' bits and
        # parities: wipe what this frame used.
        ubuf[:need_u8].fill(0)
        ibuf[:need_i64].fill(0)


def run_roles(alice: CascadeAlice, bob: CascadeBob, *, encode: bool = True,
              transcript: list | None = None) -> int:
    """Drive both roles to the end (messages through bytes if ``encode``); returns rounds."""
    def wire(msg, kind):
        out = kind.from_bytes(msg.to_bytes()) if encode else msg
        if transcript is not None:
            transcript.append(out)
        return out

    alice.handle_setup(wire(bob.setup(), CascadeSetup))
    request = bob.start()
    rounds = 0
    while request is not None:
        reply = alice.handle_request(wire(request, ParityRequest))
        rounds += 1
        request = bob.handle_reply(wire(reply, ParityReply))
    return rounds


def reconcile_frames(alice_frames, bob_frames, qber: float, schedule: str = "yan",
                     seed: int | None = None, *, transcript: list | None = None,
                     max_questions: int | None = None) -> list[ReconcileResult]:
    """Cascade on a batch of frames through the two roles and encoded messages (one message
    per round for all frames). Disclosed counts are Alice's (what her replies carried)."""
    pairs = [_pair(a, b) for a, b in zip(alice_frames, bob_frames, strict=True)]
    alice = CascadeAlice([a for a, _ in pairs])
    bob = CascadeBob([b for _, b in pairs], qber, schedule, seed, max_questions)
    run_roles(alice, bob, transcript=transcript)
    results = []
    for i, (a, b) in enumerate(pairs):
        results.append(_result(a, bob.corrected_bits(i), alice.disclosed_bits[i],
                               bob.round_trips(i), bob.gave_up(i),
                               int(np.count_nonzero(a != b)), bob.disclosed_bits(i)))
    return results

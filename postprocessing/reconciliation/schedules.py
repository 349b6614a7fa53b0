"""Cascade block-size schedules: how long the blocks of each pass are, chosen by name.

Both parties compute the same schedule from the same (name, frame length, QBER estimate), so
only those three travel in the protocol, never the block sizes themselves.

Schedules (name, wire id):
  * "original" (1): Brassard & Salvail 1993, k1 = 0.73/QBER doubling, 4 passes.
  * "yan-plain" (2): Yan et al. 2008 as published, k1 = 0.8/QBER, 5 k1, then 8 passes of half
    the frame (10 passes); the figures of reference.md section 4 are for this one.
  * "yan" (3, the default of ``reconcile`` and distill): "yan-plain" followed by two tails of
    halving passes: one pass for every bit of the shared random label that the Yan passes did
    not use (the label tail), then one for every low bit of the position in the second pass
    (bits below bit_length(k2 - 1), k2 = 5 k1: the position tail).

Why the tails. Cascade ends with the residual errors (Bob's bits that still differ) even in
every block of every pass. "yan-plain" leaves 2e-3 (n = 1e4) to 5e-3 (n = 1e5) of the frames
wrong at QBER 1-5 %: two errors in one first-pass block that also share a second-pass block
are seen by the 8 half-frame passes only, each of which splits them with probability 1/2, so
2**-8 of such pairs survive; so do 4-, 6- and 8-error sets (pairs in first-pass blocks linked
in a cycle by shared second-pass blocks). A halving pass on bit t of a label has the blocks
"bit t is 0 / 1", so the parities of a residual set over all the passes on one label are the
XOR of its labels.
  * Label tail: once every bit t < bit_length(n - 1) has had its pass, a residual set has
    labels that XOR to 0: with distinct labels no 2-error set does (the passes are the parity
    checks of an extended Hamming code, distance 4). With it alone, 2 frames in 44000 stayed
    wrong at n = 1e4 and QBER 2 %, 1 in 36000 at n = 1e5 (8-error sets of label XOR 0).
  * Position tail: the second pass's positions are a second, independent permutation of the
    frame. A residual set is even in every second-pass block of k2 positions, so the high
    bits of its positions cancel in pairs but the bits below k2 are random: checking them
    leaves about 2**-bit_length(k2 - 1) (1/256 at QBER 2 %) of what the label tail left.
Both tails are read from rows both parties already have (no shuffle of their own) and their
block parities from one running XOR each (``kernels.label_parity``), so a pass costs one
parity and one round trip; only a pass that finds a residual set searches, and its
corrections cascade back into every earlier pass like any other. Passes added at QBER 2 %:
15 at n = 1e4 (7 + 8), 17 at 1e5 (9 + 8). Wrong frames measured with both tails (QBER
1 / 2 / 5 %): n = 1e4, 0 of 169000 / 0 of 101000 / 0 of 61000 (95 % bounds 1.8e-5 / 3e-5 /
4.9e-5; "yan-plain" 2e-3 to 3e-3); n = 1e5, 0 of 30000 at each (bound 1e-4). bench_cascade
reports the same over ~30 s (``BENCH_CASCADE_FER_SCALE`` for longer runs).

"yan" also leaves out one parity per pass after the first (``omit_first_parity``): the
parities of a pass's blocks XOR to the total parity of the frame, which the first pass
already disclosed, so one of them tells nothing new. That pays for most of the tails: on a
frame where they find nothing, "yan" discloses (tail passes - 9) bits more than "yan-plain",
6 at n = 1e4 and 8 at n = 1e5 (QBER 2 %; f + 0.004 and + 0.0006).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ReconciliationError
from .permutations import SECOND_LABEL

QBER_MIN = 1e-6
QBER_MAX = 0.25
FRAME_BITS_MAX = (1 << 31) - 1
# a halving pass on label bit t needs n >= 2**(t + 7): its blocks then differ from n/2 by at
# most 2**(t-1) <= n/256 bits; shorter frames shuffle such passes like any other
HALVING_MIN_LOG2_OVER_BIT = 7
# the position tail checks at most this many bits (keeps a schedule under 64 passes)
POSITION_TAIL_MAX_BITS = 16


@dataclass(frozen=True)
class CascadeSchedule:
    """A named block-size rule; ``schedule_id`` is the byte that names it on the wire."""

    name: str
    schedule_id: int
    n_passes: int
    reference: str
    # Bob-local default cap on binary-search questions per frame and round: one per this many
    # first-pass blocks (0 = no cap, every open search asks at once). A cap costs round trips
    # but more errors are then found through short blocks first, as in the one-block-at-a-time
    # original: at n = 1e4, QBER 1 % (137 first-pass blocks), "original" measures f = 1.12
    # asking 1 question per round, 1.15 asking 8, 1.16 asking all.
    first_pass_blocks_per_question: int = 0
    # after the passes of the rule, one halving pass per label bit not used yet, then one per
    # low bit of the second pass's positions (see above)
    tails: bool = False
    # every pass after the first leaves out the parity of its block 0: Bob derives it from
    # Alice's total parity (the XOR of her first-pass block parities), so it tells nothing new
    omit_first_parity: bool = False

    def default_max_questions(self, n_bits: int, qber: float) -> int:
        if not self.first_pass_blocks_per_question:
            return 0
        k1 = int(self.block_sizes(n_bits, qber)[0])
        return -(-(-(-n_bits // k1)) // self.first_pass_blocks_per_question)

    def block_sizes(self, n_bits: int, qber: float) -> np.ndarray:
        """Block length of every pass (int64, in [1, n_bits]); the last block may be shorter."""
        return self.layout(n_bits, qber)[0]

    def layout(self, n_bits: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
        """(block sizes int64[passes], halving bit int64[passes], -1 for a shuffled pass).

        The pass count is ``n_passes``, plus the tails' passes if the schedule has them; a
        halving bit SECOND_LABEL + t is bit t of the position in the second pass.

        A "half the frame" pass of a long frame becomes a halving pass on bit t of a shared
        random label (t = 0, 1, ... in pass order): its blocks hold the labels with bit t = 0
        (``halving_block_size`` of them, within 2**(t-1) of n/2) and with bit t = 1.
        """
        check_frame(n_bits, qber)
        half = math.ceil(n_bits / 2)
        if self.name == "original":
            # Brassard & Salvail 1993: k1 ~ 0.73/QBER, doubling each pass, 4 passes.
            k1 = math.ceil(0.73 / qber)
            sizes = [k1 << i for i in range(self.n_passes)]
        elif self.name in ("yan", "yan-plain"):
            # Yan et al. 2008: k1 = 0.8/QBER, k2 = 5 k1, then half the frame; 10 passes.
            k1 = math.ceil(0.8 / qber)
            sizes = [k1, 5 * k1] + [half] * (self.n_passes - 2)
        else:  # pragma: no cover - SCHEDULES holds only the names handled above
            raise ReconciliationError(f"schedule {self.name!r} has no block-size rule")
        sizes = [min(max(k, 1), n_bits) for k in sizes]
        bits = [-1] * len(sizes)
        t = 0
        for p in range(2, len(sizes)):
            if sizes[p] == half and n_bits >= 1 << (t + HALVING_MIN_LOG2_OVER_BIT):
                bits[p] = t
                sizes[p] = halving_block_size(n_bits, t)
                t += 1
        if self.tails:
            # every label is < n_bits, so bits >= bit_length(n_bits - 1) are 0 in all of them
            for t in range(t, (n_bits - 1).bit_length()):
                sizes.append(halving_block_size(n_bits, t))
                bits.append(t)
            # positions in the second pass are a permutation of [0, n_bits) too
            for t in range(min((sizes[1] - 1).bit_length(), POSITION_TAIL_MAX_BITS)):
                sizes.append(halving_block_size(n_bits, t))
                bits.append(SECOND_LABEL + t)
        return np.array(sizes, dtype=np.int64), np.array(bits, dtype=np.int64)


def halving_block_size(n_bits: int, t: int) -> int:
    """How many labels in [0, n_bits) have bit t clear (>= n_bits / 2)."""
    return ((n_bits >> (t + 1)) << t) + min(n_bits & ((1 << (t + 1)) - 1), 1 << t)


SCHEDULES: dict[str, CascadeSchedule] = {
    "original": CascadeSchedule("original", 1, 4, "Brassard & Salvail 1993",
                                first_pass_blocks_per_question=16),
    "yan-plain": CascadeSchedule("yan-plain", 2, 10, "Yan et al. 2008"),
    "yan": CascadeSchedule("yan", 3, 10, "Yan et al. 2008 + label tail", tails=True,
                           omit_first_parity=True),
}
SCHEDULES_BY_ID = {s.schedule_id: s for s in SCHEDULES.values()}


def get_schedule(name: str) -> CascadeSchedule:
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ReconciliationError(
            f"unknown Cascade schedule {name!r}; accepted: {sorted(SCHEDULES)}") from None


def check_max_questions(max_questions: int | None, schedule: CascadeSchedule, n_bits: int,
                        qber: float) -> int:
    if max_questions is None:
        return schedule.default_max_questions(n_bits, qber)
    if not isinstance(max_questions, (int, np.integer)) or not 0 <= max_questions <= 1 << 30:
        raise ReconciliationError(f"max_questions {max_questions!r} outside [0, {1 << 30}] "
                                  "(0 = no limit)")
    return int(max_questions)


def check_frame(n_bits: int, qber: float) -> None:
    if not isinstance(n_bits, (int, np.integer)) or not 1 <= n_bits <= FRAME_BITS_MAX:
        raise ReconciliationError(f"frame length {n_bits!r} bits outside [1, {FRAME_BITS_MAX}]")
    if not (isinstance(qber, (float, int, np.floating)) and QBER_MIN <= qber <= QBER_MAX):
        raise ReconciliationError(f"QBER estimate {qber!r} outside [{QBER_MIN}, {QBER_MAX}]")


def block_offsets(n_bits: int, sizes: np.ndarray) -> np.ndarray:
    """Index of the first block of each pass in a flat per-block array (int64, length passes+1)."""
    counts = -(-n_bits // sizes)  # ceil division
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

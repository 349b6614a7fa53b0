"""B92 sifting: Bob announces the slots of his conclusive results only (V or A), Alice keeps
them all, her key bit being the state she sent; H and D are inconclusive and never announced."""

from __future__ import annotations

import numba as nb
import numpy as np

from postprocessing.alignment import ClockFit
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting.apply import bob_apply_answer
from postprocessing.sifting.detections import (aligned_detections, built_announcement,
                                               squashed_detections)
from postprocessing.sifting.errors import SiftMessageError
from postprocessing.sifting.kernels import layout_flags, pattern_fields
from postprocessing.sifting.messages import SiftAnnouncement, SiftAnswer
from postprocessing.sifting.patterns import checked_announcement, pattern_layout_error
from postprocessing.sifting.records import AliceSifted, BobDetections, BobSifted, SiftCounts


@nb.njit(cache=True, nogil=True)
def _answer_b92(pattern, bits, intensity):
    """Alice's B92 columns from her pattern bytes in one pass (bits, intensity uint8 out);
    returns nonzero when a byte breaks the layout."""
    seen = np.uint8(0)
    pairs = np.uint8(0)
    for i in range(pattern.size):
        p = pattern[i]
        seen |= p
        pairs |= p & (p >> np.uint8(1))
        value, _, index = pattern_fields(p)
        bits[i] = value
        intensity[i] = index
    return layout_flags(seen, pairs)


def _b92_announcement(s, b, k, counts) -> tuple[SiftAnnouncement, BobDetections]:
    conclusive = k == 1  # V (basis 0, bit 1) or A (basis 1, bit 1)
    s, b_all, b = s[conclusive], b, b[conclusive]
    key_bits = np.uint8(1) - b  # V -> 1 (Alice sent D), A -> 0 (Alice sent H)
    b_all.fill(0)  # the squashed outcomes of every slot fix the key: wipe the kernel's copy
    k.fill(0)
    counts = SiftCounts(**counts, n_inconclusive=int(conclusive.size - s.size),
                        n_announced=int(s.size))
    return (built_announcement(SiftAnnouncement("b92", s, np.zeros(0, np.uint8))),
            BobDetections("b92", s, b, key_bits, counts))


def bob_announce_b92(slots, channels, rng: ProtocolRandom, *, valid=None,
                     holdoff_slots: int = 0) -> tuple[SiftAnnouncement, BobDetections]:
    """Bob's B92 announcement: the slots of conclusive results (V or A) only, nothing else."""
    return _b92_announcement(*squashed_detections(slots, channels, rng, valid, holdoff_slots))


def bob_align_and_announce_b92(timestamps_ps, channels, fit: ClockFit, gate_ps: float,
                               rng: ProtocolRandom, *, holdoff_slots: int = 0
                               ) -> tuple[SiftAnnouncement, BobDetections]:
    """B92 counterpart of ``bob_align_and_announce_bb84`` (same contract against
    ``assign_slots`` then ``bob_announce_b92``)."""
    return _b92_announcement(*aligned_detections(timestamps_ps, channels, fit, gate_ps, rng,
                                                 holdoff_slots))


def alice_answer_b92(announcement: SiftAnnouncement,
                     pattern_bytes) -> tuple[SiftAnswer, AliceSifted]:
    """Alice keeps every conclusive slot Bob announced; her key bit is the state she sent."""
    n, pattern = checked_announcement(announcement, "b92", pattern_bytes)
    bits = np.empty(n, np.uint8)
    intensity = np.empty(n, np.uint8)
    if _answer_b92(pattern, bits, intensity):
        raise pattern_layout_error()
    answer = SiftAnswer("b92", np.ones(n, np.uint8), intensity)
    object.__setattr__(answer, "_valid", True)  # built from checked pattern bytes
    return answer, AliceSifted(bits, np.zeros(n, np.uint8), intensity, announcement.slots.copy())


def bob_apply_answer_b92(answer: SiftAnswer, detections: BobDetections) -> BobSifted:
    """Bob's last B92 sifting step (see ``bob_apply_answer``)."""
    if detections.protocol != "b92":
        raise SiftMessageError(f"detections are from {detections.protocol!r}, expected 'b92'")
    return bob_apply_answer(answer, detections)

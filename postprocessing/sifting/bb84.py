"""BB84 sifting (with decoy-intensity tags): Bob announces slots and bases, Alice keeps the
slots whose basis matches hers and tags them with their intensity, Bob keeps the same rows."""

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
def _answer_bb84(slots, bob_basis, pattern, keep, out_slots, out_bits, out_basis, out_intensity):
    """Alice's basis comparison. pattern uint8 per announced row (bit0 value, bit1 basis,
    bits2-3 intensity); keep uint8 0/1 per row; out_* compacted over kept rows (out_slots
    int64). Returns (n_kept, bad) where bad != 0 flags pattern bytes outside the layout.
    """
    k = 0
    seen = np.uint8(0)
    pairs = np.uint8(0)
    for i in range(pattern.size):
        p = pattern[i]
        seen |= p
        pairs |= p & (p >> np.uint8(1))
        value, a_basis, intensity = pattern_fields(p)
        match = np.uint8(a_basis == bob_basis[i])
        keep[i] = match
        # branchless compaction: write at k, advance only on a match
        out_slots[k] = slots[i]
        out_bits[k] = value
        out_basis[k] = a_basis
        out_intensity[k] = intensity
        k += match
    return k, layout_flags(seen, pairs)


def _bb84_announcement(s, b, k, counts) -> tuple[SiftAnnouncement, BobDetections]:
    counts = SiftCounts(**counts, n_announced=int(s.size))
    return (built_announcement(SiftAnnouncement("bb84", s, b)),
            BobDetections("bb84", s, b, k, counts))


def bob_announce_bb84(slots, channels, rng: ProtocolRandom, *, valid=None,
                      holdoff_slots: int = 0) -> tuple[SiftAnnouncement, BobDetections]:
    """Bob's BB84 announcement: every detected slot with its (squashed) basis, no bit values.

    slots int64 per event (from slot alignment), channels uint8 per event, valid bool/uint8 per
    event (False = outside the timing gate). Returns the message and Bob's private record.
    """
    return _bb84_announcement(*squashed_detections(slots, channels, rng, valid, holdoff_slots))


def bob_align_and_announce_bb84(timestamps_ps, channels, fit: ClockFit, gate_ps: float,
                                rng: ProtocolRandom, *, holdoff_slots: int = 0
                                ) -> tuple[SiftAnnouncement, BobDetections]:
    """Bob's slot assignment and BB84 announcement in one pass over his events.

    Returns exactly what ``assign_slots(timestamps_ps, fit, gate_ps)`` followed by
    ``bob_announce_bb84(slots, channels, rng, valid=valid, holdoff_slots=...)`` returns (same
    messages, counts and ``rng`` use), without the per-event slot and gate arrays in between:
    on Bob's host this pass is most of the sifting work, and one pass is what keeps it above the
    line rate. timestamps_ps int64 ps, channels uint8 per event.
    """
    return _bb84_announcement(*aligned_detections(timestamps_ps, channels, fit, gate_ps, rng,
                                                  holdoff_slots))


def alice_answer_bb84(announcement: SiftAnnouncement,
                      pattern_bytes) -> tuple[SiftAnswer, AliceSifted]:
    """Alice keeps the announced slots whose basis matches hers and tags them with intensities.

    pattern_bytes: uint8, her board's pattern byte for each ``announcement.slots`` entry.
    """
    n, pattern = checked_announcement(announcement, "bb84", pattern_bytes)
    keep = np.empty(n, np.uint8)
    slots = np.empty(n, np.int64)
    bits = np.empty(n, np.uint8)
    basis = np.empty(n, np.uint8)
    intensity = np.empty(n, np.uint8)
    k, bad = _answer_bb84(announcement.slots, announcement.basis, pattern, keep, slots, bits,
                          basis, intensity)
    if bad:
        raise pattern_layout_error()
    intensity = intensity[:k]
    answer = SiftAnswer("bb84", keep, intensity)
    object.__setattr__(answer, "_valid", True)  # built from checked pattern bytes
    return answer, AliceSifted(bits[:k], basis[:k], intensity, slots[:k])


def bob_apply_answer_bb84(answer: SiftAnswer, detections: BobDetections) -> BobSifted:
    """Bob's last BB84 sifting step (see ``bob_apply_answer``)."""
    if detections.protocol != "bb84":
        raise SiftMessageError(f"detections are from {detections.protocol!r}, expected 'bb84'")
    return bob_apply_answer(answer, detections)

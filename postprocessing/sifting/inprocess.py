"""In-process wiring of both sifting roles (tests, benchmarks, single-process simulations)."""

from __future__ import annotations

from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting.apply import bob_apply_answer
from postprocessing.sifting.b92 import alice_answer_b92, bob_announce_b92
from postprocessing.sifting.bb84 import alice_answer_bb84, bob_announce_bb84
from postprocessing.sifting.messages import SiftAnnouncement, SiftAnswer
from postprocessing.sifting.records import SiftResult


def run_roles(announce, answer_fn, slots, channels, pattern_of, rng, valid, holdoff_slots,
              through_wire) -> SiftResult:
    """Bob's ``announce``, Alice's ``answer_fn`` and ``bob_apply_answer`` of one protocol in
    turn, through the wire codec when ``through_wire`` (``wire_bytes`` then counts both
    messages). Each protocol's ``sift_*`` is this with its own two role functions."""
    announcement, detections = announce(slots, channels, rng, valid=valid,
                                        holdoff_slots=holdoff_slots)
    wire = 0
    if through_wire:
        raw = announcement.to_bytes()
        wire += len(raw)
        announcement = SiftAnnouncement.from_bytes(raw)
    answer, alice = answer_fn(announcement, pattern_of(announcement.slots))
    if through_wire:
        raw = answer.to_bytes()
        wire += len(raw)
        answer = SiftAnswer.from_bytes(raw)
    bob = bob_apply_answer(answer, detections)
    return SiftResult(alice, bob, detections.counts, wire)


def sift_bb84(slots, channels, pattern_of, rng: ProtocolRandom, *, valid=None,
              holdoff_slots: int = 0, through_wire: bool = False) -> SiftResult:
    """Run both BB84 roles in one process. ``pattern_of(slots) -> uint8 pattern bytes``."""
    return run_roles(bob_announce_bb84, alice_answer_bb84, slots, channels, pattern_of, rng,
                     valid, holdoff_slots, through_wire)


def sift_b92(slots, channels, pattern_of, rng: ProtocolRandom, *, valid=None,
             holdoff_slots: int = 0, through_wire: bool = False) -> SiftResult:
    """Run both B92 roles in one process. ``pattern_of(slots) -> uint8 pattern bytes``."""
    return run_roles(bob_announce_b92, alice_answer_b92, slots, channels, pattern_of, rng,
                     valid, holdoff_slots, through_wire)

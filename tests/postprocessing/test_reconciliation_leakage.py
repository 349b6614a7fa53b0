"""leak_EC of Cascade's two-way traffic (reconciliation.leakage), against hand counts.

Hand counts use the "original" schedule on frames so short that every pass is one block
(n = 8, k1 = ceil(0.73 / 0.09) = 9 -> 8) or two first-pass blocks (n = 16, k1 = 8):
  * no error: one block parity per pass, 4 passes -> Alice sends 4 bits;
  * one error, n = 8: pass 1 parity (odd) + a binary search over 8 positions (3 halves asked)
    + one parity in each of passes 2-4 (even after the fix) -> 1 + 3 + 3 = 7;
  * one error, n = 16: pass 1 two block parities + 3 halves + passes 2-4 one block each
    (k = 16, 32 -> 16, 64 -> 16) -> 2 + 3 + 3 = 8;
  * two errors in one block of n = 8: every parity even, nothing searched -> 4 (frame wrong).
Bob compares every parity he receives, so his count equals Alice's; the full transcript
charges both.
"""

from __future__ import annotations

import numpy as np
import pytest

from postprocessing.reconciliation import ParityReply, ParityRequest, reconcile
from postprocessing.reconciliation.errors import ReconciliationError
from postprocessing.reconciliation.inprocess import reconcile_frames
from postprocessing.reconciliation.leakage import (ERROR_PATTERN_PUBLIC, FULL_TRANSCRIPT,
                                                   CascadeTraffic, leak_ec_bits)

HAND = [  # n, QBER estimate, error positions, Alice's parity bits by hand
    (8, 0.09, [3], 7),
    (8, 0.09, [], 4),
    (16, 0.0913, [5], 8),
    (8, 0.09, [1, 6], 4),
]


def frames(n, errors, seed=1):
    a = np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)
    b = a.copy()
    b[errors] ^= 1
    return a, b


@pytest.mark.parametrize("n, qber, errors, alice_bits", HAND)
@pytest.mark.parametrize("via_messages", [False, True])
def test_counts_match_the_hand_computation(n, qber, errors, alice_bits, via_messages):
    a, b = frames(n, errors)
    r = reconcile(a, b, qber, schedule="original", seed=7, via_messages=via_messages)
    assert r.disclosed_bits == alice_bits
    assert r.bob_compared_bits == alice_bits
    tag = 50
    assert leak_ec_bits(r, tag_bits=tag) == alice_bits + tag
    assert leak_ec_bits(r, tag_bits=tag, accounting=FULL_TRANSCRIPT) == 2 * alice_bits + tag


@pytest.mark.parametrize("n, qber, errors, alice_bits", HAND)
def test_transcript_carries_what_is_counted(n, qber, errors, alice_bits):
    # Count the messages themselves: each range Bob asks is answered by one of Alice's bits.
    a, b = frames(n, errors)
    transcript: list = []
    [r] = reconcile_frames([a], [b], qber, "original", seed=7, transcript=transcript)
    replies = [m for m in transcript if isinstance(m, ParityReply)]
    requests = [m for m in transcript if isinstance(m, ParityRequest)]
    assert sum(int(m.bits.size) for m in replies) == alice_bits == r.disclosed_bits
    assert len(requests) == len(replies) == r.round_trips


def test_yan_schedule_counts_agree_between_paths():
    # omitted block-0 parities are neither sent nor compared on either path
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, 20_000, dtype=np.uint8)
    b = a ^ (rng.random(a.size) < 0.02).astype(np.uint8)
    fused = reconcile(a, b, 0.02, seed=9)
    wired = reconcile(a, b, 0.02, seed=9, via_messages=True)
    assert fused.disclosed_bits == wired.disclosed_bits == wired.bob_compared_bits
    assert fused.bob_compared_bits == fused.disclosed_bits
    t = CascadeTraffic.of([fused, wired], tag_bits=64)
    assert t == CascadeTraffic(2 * fused.disclosed_bits, 2 * fused.disclosed_bits, 64)
    assert leak_ec_bits(t, accounting=ERROR_PATTERN_PUBLIC) == 2 * fused.disclosed_bits + 64


@pytest.mark.parametrize("kw, fragment", [
    (dict(alice_parity_bits=-1, bob_compared_bits=0), "alice_parity_bits=-1"),
    (dict(alice_parity_bits=3, bob_compared_bits=4), "exceeds the 3 parities"),
    (dict(alice_parity_bits=3, bob_compared_bits=3, tag_bits=1.5), "tag_bits=1.5"),
])
def test_bad_traffic_is_refused(kw, fragment):
    with pytest.raises(ReconciliationError) as info:
        CascadeTraffic(**kw)
    assert fragment in str(info.value)


def test_unknown_accounting_and_double_tag_are_refused():
    t = CascadeTraffic(10, 10, 5)
    with pytest.raises(ReconciliationError, match="accounting='bob-only'"):
        leak_ec_bits(t, accounting="bob-only")
    with pytest.raises(ReconciliationError, match="pass it once"):
        leak_ec_bits(t, tag_bits=5)

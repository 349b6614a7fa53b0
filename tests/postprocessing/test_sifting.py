"""Sifting: known answers, no-noise properties, squashing statistics, counters, input errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import (
    KEY_BASIS,
    SiftAnnouncement,
    SiftAnswer,
    SiftError,
    SiftMessageError,
    alice_answer_b92,
    alice_answer_bb84,
    bob_announce_b92,
    bob_announce_bb84,
    bob_apply_answer_b92,
    bob_apply_answer_bb84,
    pattern_from_window,
    sift_b92,
    sift_bb84,
)

det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded

H, V, D, A, SYNC = 0, 1, 2, 3, 7


def pattern_byte(value, basis, intensity):
    return value | (basis << 1) | (intensity << 2)


def table_pattern(table):
    """A pattern_of callable backed by a dict slot -> pattern byte (a stand-in for Alice's board)."""
    return lambda slots: np.array([table[int(s)] for s in slots], np.uint8)


def ideal_click(rng, value, basis, bob_basis):
    """Channel a noiseless single photon in state (value, basis) fires behind Bob's analyser."""
    bit = value if basis == bob_basis else int(rng.integers(2))
    return 2 * bob_basis + bit


def test_bb84_known_answer():
    # slot: Alice (value, basis, intensity); Bob's click
    alice = {3: (1, 0, 0), 4: (0, 1, 1), 8: (1, 1, 2), 12: (0, 0, 1), 20: (1, 0, 0)}
    slots = np.array([3, 4, 8, 12, 20], np.int64)
    channels = np.array([V, H, A, H, D], np.uint8)  # match, mismatch, match, match, mismatch
    table = {s: pattern_byte(*alice[s]) for s in alice}
    res = sift_bb84(slots, channels, table_pattern(table), det_rng(0),
                    through_wire=True)
    for side in (res.alice, res.bob):
        assert side.slots.tolist() == [3, 8, 12]
        assert side.bits.tolist() == [1, 1, 0]
        assert side.basis.tolist() == [0, 1, 0]
        assert side.intensity.tolist() == [0, 2, 1]
    assert res.counts.n_announced == 5 and res.counts.n_detected_slots == 5


def test_bb84_announcement_carries_no_bits():
    slots = np.arange(4, dtype=np.int64)
    ann0, _ = bob_announce_bb84(slots, np.array([H, D, H, D], np.uint8), det_rng(0))
    ann1, _ = bob_announce_bb84(slots, np.array([V, A, V, A], np.uint8), det_rng(0))
    assert ann0.to_bytes() == ann1.to_bytes()


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), p_x=st.sampled_from([0.1, 0.5]))
def test_bb84_no_noise_bits_agree(seed, n, p_x):
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(10 * n + 1, size=n, replace=False)).astype(np.int64)
    value = rng.integers(0, 2, n)
    basis = (rng.random(n) < p_x).astype(int)
    intensity = rng.integers(0, 3, n)
    bob_basis = rng.integers(0, 2, n)
    channels = np.array([ideal_click(rng, value[i], basis[i], bob_basis[i]) for i in range(n)],
                        np.uint8)
    table = {int(s): pattern_byte(int(value[i]), int(basis[i]), int(intensity[i]))
             for i, s in enumerate(slots)}
    res = sift_bb84(slots, channels, table_pattern(table), det_rng(seed),
                    through_wire=True)
    match = basis == bob_basis
    assert len(res.alice) == len(res.bob) == int(match.sum())
    np.testing.assert_array_equal(res.alice.bits, res.bob.bits)
    np.testing.assert_array_equal(res.alice.slots, slots[match])
    np.testing.assert_array_equal(res.bob.slots, slots[match])
    np.testing.assert_array_equal(res.alice.basis, res.bob.basis)
    np.testing.assert_array_equal(res.alice.intensity, intensity[match])
    np.testing.assert_array_equal(res.bob.intensity, intensity[match])


# B92 table of reference.md §2: (Bob's channel) -> conclusive key bit or None.
B92_TABLE = {H: None, V: 1, D: None, A: 0}


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([H, V, D, A])), max_size=60))
def test_b92_follows_reference_table(rows):
    slots = np.arange(len(rows), dtype=np.int64) * 3
    channels = np.array([c for _, c in rows], np.uint8)
    table = {int(s): rows[i][0] for i, s in enumerate(slots)}
    res = sift_b92(slots, channels, table_pattern(table), det_rng(1),
                   through_wire=True)
    expect = [(int(s), B92_TABLE[c], a) for s, (a, c) in zip(slots, rows) if B92_TABLE[c] is not None]
    assert res.bob.slots.tolist() == [s for s, _, _ in expect]
    assert res.bob.bits.tolist() == [b for _, b, _ in expect]
    assert res.alice.bits.tolist() == [a for _, _, a in expect]
    assert res.counts.n_inconclusive == len(rows) - len(expect)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400))
def test_b92_no_noise_bits_agree(seed, n):
    rng = det_rng(seed)
    slots = np.arange(n, dtype=np.int64) * 2 + 7
    states = rng.integers(0, 2, n)  # 0 = |H> (value 0 in +), 1 = |D> (value 0 in x)
    bob_basis = rng.integers(0, 2, n)
    channels = np.array([ideal_click(rng, 0, states[i], bob_basis[i]) for i in range(n)],
                        np.uint8)
    res = sift_b92(slots, channels, table_pattern(dict(zip(slots.tolist(), states.tolist()))),
                   det_rng(seed))
    assert len(res.alice) == len(res.bob)
    np.testing.assert_array_equal(res.alice.bits, res.bob.bits)
    np.testing.assert_array_equal(res.alice.slots, res.bob.slots)


def test_b92_announcement_is_slots_only():
    slots = np.array([1, 2], np.int64)
    ann_v, _ = bob_announce_b92(slots, np.array([V, V], np.uint8), det_rng(0))
    ann_a, _ = bob_announce_b92(slots, np.array([A, A], np.uint8), det_rng(0))
    assert ann_v.basis.size == 0
    assert ann_v.to_bytes() == ann_a.to_bytes()


def test_counters_and_filters():
    slots = np.array([0, 0, 1, 2, 2, 2, 5, 6, 7, 9, 9], np.int64)
    channels = np.array([SYNC, H, 5, V, V, V, D, A, H, SYNC, A], np.uint8)
    valid = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], bool)
    ann, det = bob_announce_bb84(slots, channels, det_rng(0), valid=valid,
                                 holdoff_slots=1)
    # accepted: 0 (H), 2 (V, two repeats), 6 (A); 7 held off after 6; 5 outside; 9 (A)
    assert ann.slots.tolist() == [0, 2, 6, 9]
    assert det.bits.tolist() == [0, 1, 1, 1]
    c = det.counts
    assert (c.n_sync, c.n_other_channel, c.n_outside_slot, c.n_holdoff,
            c.n_repeat_same_detector) == (2, 1, 1, 1, 2)
    assert c.n_events == 11 and c.n_detected_slots == 4


def test_holdoff_is_common_to_all_detectors():
    slots = np.array([10, 11, 12, 13], np.int64)
    channels = np.array([H, D, V, A], np.uint8)
    ann, det = bob_announce_bb84(slots, channels, det_rng(0), holdoff_slots=2)
    assert ann.slots.tolist() == [10, 13]
    assert det.counts.n_holdoff == 2


def _double_click_outcomes(masks, n_rep, seed):
    slots = np.repeat(np.arange(n_rep, dtype=np.int64), len(masks))
    channels = np.tile(np.array(masks, np.uint8), n_rep)
    return bob_announce_bb84(slots, channels, det_rng(seed))[1]


def test_same_basis_double_click_gets_random_bit_in_that_basis():
    n = 4000
    for pair, basis in (((H, V), 0), ((D, A), 1)):
        det = _double_click_outcomes(pair, n, seed=11 + basis)
        assert det.counts.n_double_same_basis == n and det.counts.n_double_cross_basis == 0
        assert np.all(det.basis == basis)
        # fair coin: mean 1/2 with sigma = sqrt(1/4/n) ~ 0.0079; 5 sigma bound
        assert abs(det.bits.mean() - 0.5) < 5 * np.sqrt(0.25 / n)


def test_cross_basis_double_click_gets_random_basis_and_bit():
    n = 4000
    det = _double_click_outcomes((H, A), n, seed=5)
    assert det.counts.n_double_cross_basis == n and det.counts.n_double_same_basis == 0
    sigma = np.sqrt(0.25 / n)  # fair coins, binomial sigma of the mean
    assert abs(det.basis.mean() - 0.5) < 5 * sigma
    assert abs(det.bits.mean() - 0.5) < 5 * sigma
    # basis and bit independent: each of the 4 outcomes has p = 1/4, sigma = sqrt(3/16/n)
    joint = np.bincount(2 * det.basis + det.bits, minlength=4) / n
    assert np.all(np.abs(joint - 0.25) < 5 * np.sqrt(3 / 16 / n))


def test_triple_click_counts_as_cross_basis():
    det = _double_click_outcomes((H, V, D), 10, seed=3)
    assert det.counts.n_double_cross_basis == 10


def test_unsorted_slots_rejected():
    with pytest.raises(SiftError, match="backwards"):
        bob_announce_bb84(np.array([5, 4], np.int64), np.array([H, H], np.uint8),
                          det_rng(0))


@pytest.mark.parametrize("kwargs", [
    dict(slots=np.array([1], np.int32), channels=np.array([0], np.uint8)),
    dict(slots=np.array([1], np.int64), channels=np.array([0, 1], np.uint8)),
    dict(slots=np.array([1], np.int64), channels=np.array([0], np.int64)),
])
def test_bad_event_arrays_rejected(kwargs):
    with pytest.raises(SiftError):
        bob_announce_bb84(rng=det_rng(0), **kwargs)


def test_rng_must_be_a_generator():
    import random
    with pytest.raises(SiftError, match="ProtocolRandom"):
        bob_announce_bb84(np.array([1], np.int64), np.array([0], np.uint8), random.Random(1))


def test_pattern_layout_checked():
    ann = SiftAnnouncement("bb84", np.array([1, 2], np.int64), np.array([0, 1], np.uint8))
    with pytest.raises(SiftError, match="intensity"):
        alice_answer_bb84(ann, np.array([0b1100, 0], np.uint8))
    with pytest.raises(SiftError, match="pattern_bytes"):
        alice_answer_bb84(ann, np.array([0], np.uint8))
    ann92 = SiftAnnouncement("b92", np.array([1], np.int64), np.zeros(0, np.uint8))
    with pytest.raises(SiftError):
        alice_answer_b92(ann92, np.array([0x10], np.uint8))


def test_role_mismatch_rejected():
    rng = det_rng(0)
    ann, det = bob_announce_bb84(np.array([1, 2], np.int64), np.array([H, D], np.uint8), rng)
    with pytest.raises(SiftMessageError, match="bb84"):
        alice_answer_b92(ann, np.zeros(2, np.uint8))
    answer, _ = alice_answer_bb84(ann, np.zeros(2, np.uint8))
    with pytest.raises(SiftMessageError):
        bob_apply_answer_b92(answer, det)
    short = SiftAnswer("bb84", np.ones(1, np.uint8), np.zeros(1, np.uint8))
    with pytest.raises(SiftMessageError, match="rows"):
        bob_apply_answer_bb84(short, det)


def test_key_basis_is_z():
    assert KEY_BASIS == 0


def test_pattern_from_window():
    window = np.arange(10, dtype=np.uint8)
    got = pattern_from_window(window, 100, np.array([100, 105, 109], np.int64))
    assert got.tolist() == [0, 5, 9]
    for outside in (99, 110):
        with pytest.raises(SiftError, match=str(outside)):
            pattern_from_window(window, 100, np.array([100, outside], np.int64))


def test_negative_slots_rejected_before_announcing():
    with pytest.raises(SiftError, match="negative"):
        bob_announce_bb84(np.array([-3, 4], np.int64), np.array([H, H], np.uint8),
                          det_rng(0))

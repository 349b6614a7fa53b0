"""Fused align-and-sift: the same result, counts, errors and rng use as the role-split chain."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.sifting import fused as sifting_fused
from tests.postprocessing.sift_events import A, D, FIT, H, PERIOD_PS, SYNC, V, jittered_events
from postprocessing.alignment import AlignmentError, ClockFit, assign_slots
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import SiftError, pattern_from_window, sift_b92, sift_bb84
from postprocessing.sifting import align_and_sift_b92, align_and_sift_bb84

FUSED = {"bb84": align_and_sift_bb84, "b92": align_and_sift_b92}
CHAIN = {"bb84": sift_bb84, "b92": sift_b92}
det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded


def chain(protocol, t, channels, fit, gate_ps, window, first, rng, holdoff):
    """The role-split reference: assign_slots, then both roles wired in process."""
    slots, valid = assign_slots(t, fit, gate_ps)
    return CHAIN[protocol](slots, channels, lambda s: pattern_from_window(window, first, s), rng,
                           valid=valid, holdoff_slots=holdoff)


def assert_same(got, want):
    for side in ("alice", "bob"):
        for name in ("bits", "basis", "intensity", "slots"):
            g, w = getattr(getattr(got, side), name), getattr(getattr(want, side), name)
            assert g.dtype == w.dtype, (side, name)
            np.testing.assert_array_equal(g, w, err_msg=f"{side}.{name}")
    assert got.counts == want.counts


@st.composite
def event_streams(draw):
    """The shared event streams plus a pattern window covering every slot."""
    t, channels, last, seed = draw(jittered_events())
    rng = np.random.default_rng(seed)
    first = 90
    window = rng.integers(0, 12, last - first + 5 if last is not None else 10).astype(np.uint8)
    window[(window >> 2) == 3] &= 0x03  # intensity index 3 is not a valid tag
    return t, channels, window, first, seed


@settings(max_examples=150, deadline=None)
@given(events=event_streams(), protocol=st.sampled_from(["bb84", "b92"]),
       gate_ps=st.sampled_from([120.0, 300.0, 500.0]), holdoff=st.sampled_from([0, 1, 3]))
def test_fused_equals_chain(events, protocol, gate_ps, holdoff):
    t, channels, window, first, seed = events
    fallbacks = []
    real = CHAIN[protocol]
    rng_fused, rng_chain = det_rng(seed), det_rng(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sifting_fused, f"sift_{protocol}",
                   lambda *a, **k: fallbacks.append(1) or real(*a, **k))
        got = FUSED[protocol](t, channels, FIT, gate_ps, window, first, rng_fused,
                              holdoff_slots=holdoff)
    want = chain(protocol, t, channels, FIT, gate_ps, window, first, rng_chain, holdoff)
    assert_same(got, want)
    assert rng_fused.bytes(16) == rng_chain.bytes(16)  # same draws consumed
    assert not fallbacks  # clean input: the fused kernel itself produced the result


def test_fused_known_answer_with_multi_clicks():
    # slot: Alice (value, basis, intensity)
    alice = {3: (1, 0, 0), 4: (0, 1, 1), 8: (1, 1, 2), 12: (0, 0, 1), 20: (1, 0, 0)}
    window = np.zeros(30, np.uint8)
    for s, (v, b, i) in alice.items():
        window[s] = v | (b << 1) | (i << 2)
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    # 3: V; 4: H (mismatch); 8: A + A again (repeat); 12: H + V (same-basis double, Z = Alice's);
    # 15: sync; 20: D
    slots = [3, 4, 8, 8, 12, 12, 15, 20]
    channels = np.array([V, H, A, A, H, V, SYNC, D], np.uint8)
    t = np.array(slots, np.int64) * 1000 + 7
    res = align_and_sift_bb84(t, channels, fit, 100.0, window, 0, det_rng(3))
    for side in (res.alice, res.bob):
        assert side.slots.tolist() == [3, 8, 12]
        assert side.basis.tolist() == [0, 1, 0]
        assert side.intensity.tolist() == [0, 2, 1]
    assert res.alice.bits.tolist() == [1, 1, 0]
    assert res.bob.bits[:2].tolist() == [1, 1]  # slot 12's bit is the squashing coin
    c = res.counts
    assert (c.n_sync, c.n_repeat_same_detector, c.n_double_same_basis, c.n_detected_slots,
            c.n_announced) == (1, 1, 1, 5, 5)


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_cross_basis_doubles_follow_the_coins(protocol):
    # every slot a cross-basis double: all rows are settled after the pass, many removed
    n = 3000
    slots = np.repeat(np.arange(n, dtype=np.int64) * 2, 2)
    channels = np.tile(np.array([H, A], np.uint8), n)
    t = slots * 1000
    window = np.random.default_rng(1).integers(0, 12, 2 * n).astype(np.uint8)
    window[(window >> 2) == 3] &= 0x03
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    got = FUSED[protocol](t, channels, fit, 100.0, window, 0, det_rng(9))
    want = chain(protocol, t, channels, fit, 100.0, window, 0, det_rng(9), 0)
    assert_same(got, want)
    assert got.counts.n_double_cross_basis == n
    # about half kept (fair basis coin in BB84, fair bit coin in B92): 5 sigma = 5 sqrt(n/4)
    assert abs(len(got.alice) - n / 2) < 5 * np.sqrt(n / 4)


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_slot_outside_window_goes_through_the_chain(protocol):
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    t = np.array([5_000, 50_000], np.int64)  # slot 50 lies past the window
    window = np.zeros(20, np.uint8)
    for channels in (np.array([V, V], np.uint8), np.array([V, H], np.uint8)):
        try:
            want = chain(protocol, t, channels, fit, 100.0, window, 0, det_rng(0), 0)
        except SiftError as exc:
            with pytest.raises(SiftError, match=str(exc).split(" outside")[0]):
                FUSED[protocol](t, channels, fit, 100.0, window, 0, det_rng(0))
            continue
        # B92 with an inconclusive H at slot 50: Alice never looks it up, so no error
        assert protocol == "b92" and channels[1] == H
        assert_same(FUSED[protocol](t, channels, fit, 100.0, window, 0,
                                    det_rng(0)), want)


def test_errors_match_the_chain():
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    window = np.zeros(20, np.uint8)
    bad_window = window.copy()
    bad_window[5] = 0b1100  # intensity index 3
    cases = [
        (np.array([9_000, 5_000], np.int64), np.array([H, H], np.uint8), window, SiftError,
         "backwards"),
        (np.array([5_000], np.int64), np.array([H], np.uint8), bad_window, SiftError,
         "intensity"),
        (np.array([5_000], np.int32), np.array([H], np.uint8), window, AlignmentError,
         "int64"),
        (np.array([5_000], np.int64), np.array([H], np.int64), window, SiftError, "uint8"),
    ]
    for t, channels, w, exc, match in cases:
        with pytest.raises(exc, match=match):
            chain("bb84", t, channels, fit, 100.0, w, 0, det_rng(0), 0)
        with pytest.raises(exc, match=match):
            align_and_sift_bb84(t, channels, fit, 100.0, w, 0, det_rng(0))


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_window_starting_below_slot_zero_goes_through_the_chain(protocol):
    # the fused kernel relies on window_first_slot >= 0 to rule out negative slots
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    window = np.full(40, 0b0101, np.uint8)  # value 1, basis Z, intensity 1
    for slots, raises in (([2, 5, 9], False), ([-3, 5], True)):
        t = np.array(slots, np.int64) * 1000
        channels = np.full(len(slots), V, np.uint8)
        if raises:
            with pytest.raises(SiftError, match="negative"):
                FUSED[protocol](t, channels, fit, 100.0, window, -10, det_rng(0))
            continue
        got = FUSED[protocol](t, channels, fit, 100.0, window, -10, det_rng(0))
        assert_same(got, chain(protocol, t, channels, fit, 100.0, window, -10,
                               det_rng(0), 0))
        assert got.alice.slots.tolist() == slots

"""Bob's one-pass slot assignment + announcement: the same messages, records, counts, errors and
rng use as ``assign_slots`` followed by ``bob_announce_*``."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.sifting import detections as sift_detections
from tests.postprocessing.sift_events import A, D, FIT, H, PERIOD_PS, SYNC, V, jittered_events
from postprocessing.alignment import AlignmentError, ClockFit, assign_slots
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import (SiftError, bob_align_and_announce_b92,
                                    bob_align_and_announce_bb84, bob_announce_b92,
                                    bob_announce_bb84)

ONE_PASS = {"bb84": bob_align_and_announce_bb84, "b92": bob_align_and_announce_b92}
ANNOUNCE = {"bb84": bob_announce_bb84, "b92": bob_announce_b92}
det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded


def two_step(protocol, t, channels, fit, gate_ps, rng, holdoff):
    slots, valid = assign_slots(t, fit, gate_ps)
    return ANNOUNCE[protocol](slots, channels, rng, valid=valid, holdoff_slots=holdoff)


def assert_same(got, want):
    (ann_g, det_g), (ann_w, det_w) = got, want
    assert ann_g.protocol == ann_w.protocol and det_g.protocol == det_w.protocol
    for name, g, w in (("announcement.slots", ann_g.slots, ann_w.slots),
                       ("announcement.basis", ann_g.basis, ann_w.basis),
                       ("detections.slots", det_g.slots, det_w.slots),
                       ("detections.basis", det_g.basis, det_w.basis),
                       ("detections.bits", det_g.bits, det_w.bits)):
        assert g.dtype == w.dtype, name
        np.testing.assert_array_equal(g, w, err_msg=name)
    assert det_g.counts == det_w.counts
    # both are marked valid, so neither is re-checked on the way to Alice
    assert ann_g.__dict__.get("_valid") and ann_w.__dict__.get("_valid")


@st.composite
def event_streams(draw):
    t, channels, _last, seed = draw(jittered_events())
    return t, channels, seed


@settings(max_examples=200, deadline=None)
@given(events=event_streams(), protocol=st.sampled_from(["bb84", "b92"]),
       gate_ps=st.sampled_from([0.0, 120.0, 300.0, 500.0]), holdoff=st.sampled_from([0, 1, 3]))
def test_one_pass_equals_two_step(events, protocol, gate_ps, holdoff):
    t, channels, seed = events
    rng_one, rng_two = det_rng(seed), det_rng(seed)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sift_detections, "assign_slots", lambda *a: calls.append(1) or assign_slots(*a))
        got = ONE_PASS[protocol](t, channels, FIT, gate_ps, rng_one, holdoff_slots=holdoff)
    want = two_step(protocol, t, channels, FIT, gate_ps, rng_two, holdoff)
    assert_same(got, want)
    assert rng_one.bytes(16) == rng_two.bytes(16)  # same draws consumed
    assert not calls  # clean input: the one-pass kernel assigned the slots itself


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_one_pass_equals_two_step_at_chunk_scale(protocol):
    # a chunk as the node sees it: a GHz clock, a click every ~50 slots, 5 % double clicks,
    # 2 % syncs, 60 ps jitter against a 150 ps gate (a few events outside it), 2 ppm drift
    rng = np.random.default_rng(11)
    n = 1 << 16
    gaps = rng.geometric(0.02, n)
    gaps[rng.random(n) < 0.05] = 0
    slots = 1_000_000 + np.cumsum(gaps)
    channels = rng.integers(0, 4, n).astype(np.uint8)
    channels[slots % 1000 < 20] = SYNC
    fit = ClockFit(0, 123_456, PERIOD_PS * (1 + 2e-6), PERIOD_PS, 60.0, 1000)
    t = np.sort(np.rint(123_456 + slots * fit.period_ps + rng.normal(0, 60, n)).astype(np.int64))
    for holdoff in (0, 2):
        got = ONE_PASS[protocol](t, channels, fit, 150.0, det_rng(5),
                                 holdoff_slots=holdoff)
        want = two_step(protocol, t, channels, fit, 150.0, det_rng(5), holdoff)
        assert_same(got, want)
        c = got[1].counts
        assert min(c.n_outside_slot, c.n_double_same_basis, c.n_double_cross_basis,
                   c.n_sync) > 0
        assert (c.n_holdoff > 0) == (holdoff > 0)


def test_known_answer_counts_events_outside_the_gate():
    fit = ClockFit(0, 0, PERIOD_PS, PERIOD_PS, 0.0, 0)
    # slot 3: V; slot 4: H 200 ps off centre (outside a 100 ps gate); slot 6: D + D (repeat);
    # slot 9: sync; slot 11: H 480 ps early (nearest slot 11, outside); slot 12: A, on time
    t = np.array([3000, 4200, 6010, 6020, 9000, 10520, 12000], np.int64)
    channels = np.array([V, H, D, D, SYNC, H, A], np.uint8)
    ann, det = bob_align_and_announce_bb84(t, channels, fit, 100.0, det_rng(0))
    assert ann.slots.tolist() == det.slots.tolist() == [3, 6, 12]
    assert ann.basis.tolist() == [0, 1, 1]
    assert det.bits.tolist() == [1, 0, 1]
    c = det.counts
    assert (c.n_events, c.n_outside_slot, c.n_repeat_same_detector, c.n_sync,
            c.n_detected_slots, c.n_announced) == (7, 2, 1, 1, 3, 3)


def _error(fn):
    try:
        fn()
    except Exception as exc:  # the type and message are what is compared
        return type(exc), str(exc)
    return None


T_OK = np.array([7_000_123, 7_001_123, 7_002_123], np.int64)
CH_OK = np.array([H, V, SYNC], np.uint8)


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
@pytest.mark.parametrize("case, expected", [
    (dict(t=T_OK.astype(np.float64)), AlignmentError),
    (dict(t=T_OK.reshape(1, 3)), AlignmentError),
    (dict(gate_ps=-1.0), AlignmentError),
    (dict(gate_ps=float("nan")), AlignmentError),
    (dict(gate_ps=float("inf")), AlignmentError),
    (dict(channels=CH_OK.astype(np.int64)), SiftError),
    (dict(channels=CH_OK[:2]), SiftError),
    (dict(rng=np.random.RandomState(0)), SiftError),
    (dict(holdoff=-1), SiftError),
    # slots go backwards at event 1
    (dict(t=np.array([7_005_123, 7_001_123], np.int64), channels=CH_OK[:2]), SiftError),
    # a (B92: conclusive) detection before slot 0 of the run
    (dict(t=np.array([6_000_000], np.int64), channels=np.array([V], np.uint8)), SiftError),
])
def test_errors_are_those_of_the_two_step_path(protocol, case, expected):
    args = dict(t=T_OK, channels=CH_OK, gate_ps=300.0, rng=None, holdoff=0) | case

    def run(fn):
        rng = args["rng"] if args["rng"] is not None else det_rng(1)
        return _error(lambda: fn(args["t"], args["channels"], FIT, args["gate_ps"], rng,
                                 args["holdoff"]))

    got = run(lambda t, c, f, g, r, h: ONE_PASS[protocol](t, c, f, g, r, holdoff_slots=h))
    want = run(lambda t, c, f, g, r, h: two_step(protocol, t, c, f, g, r, h))
    assert want is not None and want[0] is expected
    assert got == want


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_inputs_assign_slots_converts_give_the_same_result(protocol):
    # a strided int64 view, a list of ints and an integer gate are accepted by assign_slots
    t = np.repeat(T_OK, 2)[::2]
    for t_in, gate in ((t, 300.0), (T_OK.tolist(), 300.0), (T_OK, 300)):
        got = ONE_PASS[protocol](t_in, CH_OK, FIT, gate, det_rng(4))
        want = two_step(protocol, t_in, CH_OK, FIT, gate, det_rng(4), 0)
        assert_same(got, want)

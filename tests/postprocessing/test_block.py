"""Block roles: message exchanges, aborts at every step reaching both ends, bad peer input,
wiping on every path, and the block decisions (Q_tol fixed per link, per-basis checks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing import finite_key as fk
from postprocessing.block import (Abort, AliceBlock, BlockMessageError, BlockParams,
                                  BlockParamsError, BlockRoleError, BobBlock, MessageType, PaSeed,
                                  decisions, qber_tol_for)
from postprocessing.estimation import AbortReason, ClassVerdict
from tests.postprocessing import block_cases as bc
from tests.postprocessing.block_cases import N_PULSES, all_wiped, bb84_params, det_rng, roles, run

M = MessageType
STEPS = [("bob", M.SIFT_ANNOUNCE), ("alice", M.SIFT_ANSWER), ("bob", M.EST_SAMPLE),
         ("alice", M.EST_VERDICT), ("bob", M.CASCADE_SETUP), ("bob", M.PARITY_REQUEST),
         ("alice", M.PARITY_REPLY)]


@pytest.fixture(scope="module")
def honest():
    alice, bob = roles()
    transcript = run(alice, bob)
    return alice, bob, transcript


def test_roles_exchange_the_documented_steps_and_agree(honest):
    alice, bob, transcript = honest
    assert transcript[:len(STEPS)] == STEPS
    middle = transcript[len(STEPS):-2]
    assert middle == [("bob", M.PARITY_REQUEST), ("alice", M.PARITY_REPLY)] * (len(middle) // 2)
    assert transcript[-2:] == [("bob", M.VERIFY_TAGS), ("alice", M.PA_SEED)]
    assert alice.done and bob.done and not alice.outcome.aborted and not bob.outcome.aborted
    assert np.array_equal(alice.outcome.key, bob.outcome.key) and alice.outcome.key.size > 0
    a, b = alice.outcome.stats, bob.outcome.stats
    # both ends computed the same bound from the same public data
    assert a.key_length == b.key_length == alice.outcome.key.size
    assert a.leak_ec == b.leak_ec == b.cascade_disclosed_bits + b.tag_bits
    assert a.round_trips == b.round_trips == len(middle) // 2 + 1
    assert b.to_dict()["bound"] == fk.BOUND_TOMAMICHEL_2012
    assert all_wiped(alice, bob)


def test_cascade_frames_split_and_give_the_same_length_rule():
    alice, bob = roles(bb84_params(frame_bits=4096))
    run(alice, bob)
    assert not bob.outcome.aborted, bob.outcome.stats.abort_details
    assert np.array_equal(alice.outcome.key, bob.outcome.key)
    st = bob.outcome.stats
    assert st.key_length == fk.bb84_key_length(st.key_input_bits, min(st.sample_by_basis), 0.05,
                                               st.leak_ec, st.eps_sec, st.eps_cor)


def _flip_one_byte(payload: bytes) -> bytes:
    if not payload:
        return b"\x00"
    b = bytearray(payload)
    b[0] ^= 0xFF  # the magic / type / version byte of every step codec
    return bytes(b)


@pytest.mark.parametrize("step", range(len(STEPS) + 1))
def test_a_corrupt_message_at_any_step_aborts_both_ends(step):
    """Corrupt message ``step`` (the last case: the verification tags): the receiver aborts
    with protocol_error, its ABORT reaches the sender, both stop with the same reasons, and
    every array either held is zero."""
    alice, bob = roles(seed=3)
    target = {"n": None}

    def tamper(i, sender, msg):
        kinds = [k for _, k in STEPS] + [M.VERIFY_TAGS]
        if target["n"] is None and msg[0] == kinds[step] and (
                step < len(STEPS) or msg[0] == M.VERIFY_TAGS):
            target["n"] = i
            return (msg[0], _flip_one_byte(msg[1]))
    transcript = run(alice, bob, tamper)
    assert target["n"] is not None
    assert transcript[-1][1] == M.ABORT  # the receiver told the sender
    assert alice.outcome.aborted and bob.outcome.aborted
    assert alice.outcome.reasons == bob.outcome.reasons == [AbortReason.PROTOCOL_ERROR.value]
    assert alice.outcome.key.size == bob.outcome.key.size == 0
    assert all_wiped(alice, bob)


@pytest.mark.parametrize("msg", [
    (int(M.PA_SEED), b"\x01"), (200, b""), (int(M.PARITY_REPLY), b""), ("x", b""),
    (int(M.SIFT_ANNOUNCE), "not bytes"), None, (1, 2, 3),
])
def test_unexpected_or_malformed_messages_abort_with_a_reason(msg):
    alice = AliceBlock(bb84_params(), bc.pattern_of, det_rng(0))
    out = alice.receive(msg)
    assert alice.outcome.aborted and alice.outcome.reasons == [AbortReason.PROTOCOL_ERROR.value]
    assert [m[0] for m in out] == [M.ABORT]
    assert Abort.from_bytes(out[0][1]).reasons == (AbortReason.PROTOCOL_ERROR,)
    assert alice.receive((int(M.SIFT_ANNOUNCE), b"")) == []  # a finished role stays quiet


@settings(max_examples=60, deadline=None)
@given(kind=st.integers(0, 255), payload=st.binary(max_size=64), state=st.integers(0, 3))
def test_random_peer_input_never_raises(kind, payload, state):
    """Whatever arrives, in whatever state: a list of messages comes back, no exception."""
    alice, bob = roles(bb84_params(), events=(bc.BB84[0][:4000], bc.BB84[1][:4000]))
    msgs = bob.start()
    for _ in range(state):  # advance a few real steps first
        replies = []
        for m in msgs:
            replies += alice.receive(m)
        msgs = []
        for m in replies:
            msgs += bob.receive(m)
    for role in (alice, bob):
        out = role.receive((kind, payload))
        assert isinstance(out, list)


def test_abort_decided_by_alice_reaches_bob_with_her_reasons():
    """QBER 25 % (intercept-resend): Alice sends her verdict and ABORT; Bob reaches the same
    decision from the verdict; both stop on the QBER."""
    alice, bob = roles(events=bc.bb84_events(N_PULSES, 0.2, 0.25, seed=102))
    transcript = run(alice, bob)
    assert ("alice", M.ABORT) in transcript and M.CASCADE_SETUP not in [k for _, k in transcript]
    for r in (alice, bob):
        assert r.outcome.aborted and AbortReason.QBER_ABOVE_THRESHOLD.value in r.outcome.reasons
    assert bob.outcome.stats.qber_estimate > 0.2


def test_peer_abort_message_stops_a_role_with_the_peers_reasons():
    alice, bob = roles()
    bob.start()
    out = bob.receive((int(M.ABORT), Abort((AbortReason.NO_SECRET_KEY,), "peer says").to_bytes()))
    assert out == [] and bob.outcome.aborted
    assert bob.outcome.reasons == [AbortReason.NO_SECRET_KEY.value]
    assert any("peer says" in d for d in bob.outcome.stats.abort_details)
    assert all_wiped(bob)


def test_too_few_sifted_bits_aborts_at_bob_and_reaches_alice():
    alice, bob = roles(events=bc.bb84_events(10_000, 0.1, 0.02, seed=5), n_pulses=10_000)
    run(alice, bob)
    for r in (alice, bob):
        assert r.outcome.reasons == [AbortReason.TOO_FEW_SIFTED_BITS.value]
    assert all_wiped(alice, bob)


def test_verification_failure_stops_the_block():
    bc.check_verification_failure_stops_the_block()


def test_toeplitz_seeds_are_fresh_per_block():
    bc.check_toeplitz_seeds_fresh_per_block()


def test_abort_wipes_everything():
    bc.check_abort_wipes_everything()


@pytest.mark.slow
def test_b92_never_yields_key_and_keeps_its_qber_alarm():
    bc.check_b92_never_yields_key_and_flags_qber_above_ceiling()


# --- decisions ----------------------------------------------------------------------------------

def _estimate(k_by_basis, errors_by_basis, n_key_by_basis):
    verdict = ClassVerdict(tuple(k_by_basis), tuple(errors_by_basis))
    return decisions.sampled_estimate(verdict, n_key_by_basis, 1e-10)


def test_q_tol_is_checked_per_basis():
    """4 % errors in X but 0 % in Z average to 2 %, under Q_tol = 3 %: the per-basis check
    still stops the block (the mixed-basis average would have let it through)."""
    p = bb84_params(qber_tol=0.03, min_sample_size=100)
    e = _estimate((50_000, 50_000), (0, 2_000), (450_000, 450_000))
    assert e.qber == pytest.approx(0.02)
    d = decisions.sampled_decision(p, e)
    assert d.reasons == (AbortReason.QBER_ABOVE_THRESHOLD,)
    assert any("basis X" in x and "Q_tol" in x for x in d.details)
    ok = decisions.sampled_decision(p, _estimate((50_000, 50_000), (1_000, 1_000),
                                                 (450_000, 450_000)))
    assert not ok.abort


def test_a_basis_with_key_bits_but_no_sample_aborts():
    e = _estimate((5_000, 0), (50, 0), (45_000, 45_000))
    d = decisions.sampled_decision(bb84_params(), e)
    assert AbortReason.SAMPLE_TOO_SMALL in d.reasons


def test_bound_uses_q_tol_and_the_smaller_basis_sample():
    p = bb84_params(qber_tol=0.04)
    e = _estimate((30_000, 20_000), (300, 200), (250_000, 200_000))
    got = decisions.sampled_key_length(p, e, 10_000)
    assert got.key_length == fk.bb84_key_length(450_000, 20_000, 0.04, 10_000, 1e-10, 1e-15)
    assert got.terms["qber_tol"] == 0.04  # the fixed tolerance, not the observed 1 %


def test_qber_tol_default_comes_from_the_expected_qber():
    assert qber_tol_for(0.02) == pytest.approx(0.035)
    assert qber_tol_for(0.2) == 0.11
    with pytest.raises(BlockParamsError, match="expected_qber"):
        qber_tol_for(0.7)


@pytest.mark.parametrize("kw,word", [
    (dict(protocol="e91"), "protocol"), (dict(qber_tol=0.6), "qber_tol"),
    (dict(eps_sec=0.0), "eps_sec"), (dict(schedule="x"), "schedule"),
    (dict(frame_bits=10), "frame_bits"), (dict(min_sample_size=0), "min_sample_size"),
    (dict(intensities=(0.5, 0.1, 0.0)), "intensity_probabilities"),
    (dict(protocol="b92"), "expected_conclusive_per_pulse"),
])
def test_block_params_reject_bad_values(kw, word):
    with pytest.raises(BlockParamsError, match=word):
        BlockParams(**{"protocol": "bb84", "qber_tol": 0.05, **kw})


def test_qber_tol_is_required():
    with pytest.raises(TypeError):
        BlockParams(protocol="bb84")  # type: ignore[call-arg]


def test_roles_refuse_a_numpy_generator():
    with pytest.raises(BlockRoleError, match="ProtocolRandom"):
        AliceBlock(bb84_params(), bc.pattern_of, np.random.default_rng(0))


def test_abort_and_pa_seed_codecs_round_trip_and_reject_garbage():
    a = Abort((AbortReason.QBER_ABOVE_THRESHOLD, AbortReason.YIELD_DROP), "QBER 0.3 > 0.11")
    assert Abort.from_bytes(a.to_bytes()) == a
    seed = det_rng(1).bits(1000 + 300 - 1)
    p = PaSeed.from_bytes(PaSeed(1000, 300, seed).to_bytes())
    assert (p.n_bits, p.key_length) == (1000, 300) and np.array_equal(p.seed, seed)
    for bad in (b"", b"\x02\x00\x00\x00", b"\x01\x01\xee\x00\x00"):
        with pytest.raises(BlockMessageError):
            Abort.from_bytes(bad)
    with pytest.raises(BlockMessageError, match="key length"):
        PaSeed.from_bytes(PaSeed(10, 10, np.zeros(19, np.uint8)).to_bytes()[:1]
                          + (10).to_bytes(8, "little") + (11).to_bytes(8, "little"))


def test_b92_estimate_records_the_attack_statistics():
    """Bob records conclusive yield and multi-click rate; too many multi-clicks raise their own
    alarm (the multi-photon resend signature)."""
    slots, ch = bc.b92_events(2_000_000, 0.4, 0.005, seed=9)
    # every 20th conclusive click becomes a double click in both analysers (cross-basis)
    extra = slots[::20]
    slots2 = np.sort(np.concatenate([slots, extra]), kind="stable")
    order = np.argsort(np.concatenate([slots, extra]), kind="stable")
    ch2 = np.concatenate([ch, np.full(extra.size, 3, np.uint8)])[order]
    p = BlockParams(protocol="b92", qber_tol=0.05, expected_conclusive_per_pulse=0.1,
                    min_sample_size=500)
    alice, bob = roles(p, events=(slots2, ch2), n_pulses=2_000_000)
    run(alice, bob)
    st = bob.outcome.stats
    assert bob.outcome.aborted and alice.outcome.aborted
    assert AbortReason.MULTI_CLICK_EXCESS.value in st.abort_reasons
    assert AbortReason.NO_SECURITY_PROOF.value in st.abort_reasons
    # a doubled click on the A detector itself counts once (same detector, same slot)
    doubled = int(np.count_nonzero(ch[::20] != 3))
    assert st.multi_click_fraction == doubled / slots.size
    assert st.conclusive_per_pulse == st.sifted_bits / 2_000_000
    assert st.bound == fk.BOUND_B92_NONE and math.isfinite(st.qber_upper)
    assert all_wiped(alice, bob)


def test_frames_whose_lengths_get_different_cascade_layouts_stay_one_frame():
    """The reconciliation roles give a batch one pass count: frame lengths L and L + 1 whose
    layouts differ must not be split (else Alice refuses Bob's questions)."""
    from postprocessing.block.roles import _split_frames
    from postprocessing.reconciliation.schedules import get_schedule

    sched, q = get_schedule("yan"), 0.02
    passes = {m: len(sched.layout(m, q)[0]) for m in range(3800, 4300)}
    split_l = next(m for m in range(3800, 4299) if passes[m] != passes[m + 1])
    same_l = next(m for m in range(3800, 4299) if passes[m] == passes[m + 1])
    bits = np.zeros(2 * split_l + 1, np.uint8)
    assert len(_split_frames(bits, split_l, "yan", q)) == 1
    frames = _split_frames(np.zeros(2 * same_l + 1, np.uint8), same_l, "yan", q)
    assert [f.size for f in frames] == [same_l + 1, same_l]     # the longer ones first


def test_frames_cut_longer_first_cover_the_key_in_order():
    from postprocessing.block.roles import _split_frames
    bits = np.arange(1_000_003) % 2
    frames = _split_frames(bits.astype(np.uint8), 200_000, "yan", 0.02)
    sizes = [f.size for f in frames]
    assert sizes == [200_001, 200_001, 200_001, 200_000, 200_000]
    assert np.array_equal(np.concatenate(frames), bits)


def test_only_small_cascade_requests_are_light_steps():
    from postprocessing.block.messages import LIGHT_STEP_BYTES, MessageType, is_light_step
    assert is_light_step(MessageType.PARITY_REQUEST, 0)
    assert is_light_step(MessageType.PARITY_REQUEST, LIGHT_STEP_BYTES - 1)
    assert not is_light_step(MessageType.PARITY_REQUEST, LIGHT_STEP_BYTES)
    # Bob's steps (a small reply may open the next pass) and every other step keep the pool
    for t in MessageType:
        if t != MessageType.PARITY_REQUEST:
            assert not is_light_step(t, 10)

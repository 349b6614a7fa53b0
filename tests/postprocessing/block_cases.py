"""Shared blocks and checks for the block-role tests and their mutation list.

Each ``check_*`` asserts one security property of the block roles; the regular tests call them
on the real code, and tests/postprocessing/test_block_mutations.py calls them again with the
code mutated (monkeypatched) and requires them to fail.
"""

from __future__ import annotations

import math

import numpy as np

from postprocessing import distill as dist
from postprocessing.block import AliceBlock, BlockParams, BobBlock, MessageType
from postprocessing.estimation import AbortReason
from postprocessing.randomness import ProtocolRandom
from sim_backend.pattern import pattern_at

PATTERN_KEY = 0x5EED_0F_A11CE
det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded


def pattern_of(slots):
    return pattern_at(PATTERN_KEY, slots)


def bb84_events(n_pulses: int, p_click: float, qber: float, seed: int):
    """Synthetic BB84 clicks (as in test_distill): Bob's basis 50/50, matched bits flipped with
    probability qber, unmatched bits random, no multi-clicks."""
    rng = np.random.default_rng(seed)
    slots = np.flatnonzero(rng.random(n_pulses) < p_click).astype(np.int64)
    pat = pattern_at(PATTERN_KEY, slots)
    a_bit, a_basis = pat & 1, (pat >> 1) & 1
    b_basis = rng.integers(0, 2, slots.size, dtype=np.uint8)
    flip = (rng.random(slots.size) < qber).astype(np.uint8)
    b_bit = np.where(b_basis == a_basis, a_bit ^ flip, rng.integers(0, 2, slots.size))
    return slots, (2 * b_basis + b_bit).astype(np.uint8)


def b92_events(n_pulses: int, p_click: float, qber: float, seed: int):
    """Synthetic B92 clicks (as in test_distill): a fraction qber of conclusive outcomes lands
    on the wrong conclusive detector."""
    rng = np.random.default_rng(seed)
    slots = np.flatnonzero(rng.random(n_pulses) < p_click).astype(np.int64)
    a_bit = pattern_at(PATTERN_KEY, slots) & 1
    b_basis = rng.integers(0, 2, slots.size, dtype=np.uint8)
    coin = rng.integers(0, 2, slots.size, dtype=np.uint8)
    outcome_bit = np.where(b_basis == 0, np.where(a_bit == 0, 0, coin),
                           np.where(a_bit == 1, 0, coin)).astype(np.uint8)
    noise = (rng.random(slots.size) < qber) & (outcome_bit == 1)
    b_basis = np.where(noise, 1 - b_basis, b_basis).astype(np.uint8)
    return slots, (2 * b_basis + outcome_bit).astype(np.uint8)


N_PULSES = 1_000_000  # 2e5 clicks, 1e5 sifted, 5e3 sampled per basis: a key at 2 %
BB84 = bb84_events(N_PULSES, 0.2, 0.02, seed=101)
B92_PULSES = 6_000_000
B92_P_CLICK = 0.4


def bb84_params(**kw) -> BlockParams:
    return BlockParams(**{"protocol": "bb84", "qber_tol": 0.05, "min_sample_size": 500, **kw})


def roles(params: BlockParams | None = None, events=BB84, seed: int = 1,
          n_pulses: int = N_PULSES):
    params = params or bb84_params()
    slots, ch = events
    alice = AliceBlock(params, pattern_of, det_rng(seed))
    bob = BobBlock(params, slots, ch, None, n_pulses, det_rng(seed + 1000))
    return alice, bob


def run(alice, bob, tamper=None):
    """Drive both roles; ``tamper(i, sender, msg)`` may replace message i (or return None to
    pass it). Returns the transcript [(sender, msg_type)]."""
    transcript = []
    pending = [("bob", m) for m in bob.start()] + [("alice", m) for m in alice.start()]
    while pending:
        sender, msg = pending.pop(0)
        if tamper is not None:
            msg = tamper(len(transcript), sender, msg) or msg
        transcript.append((sender, msg[0]))
        receiver = alice if sender == "bob" else bob
        other = "alice" if sender == "bob" else "bob"
        pending.extend((other, m) for m in receiver.receive(msg))
    return transcript


def all_wiped(*role_objects) -> bool:
    held = [a for r in role_objects for a in r.key_material()]
    return bool(held) and not any(a.any() for a in held)


# --- checks (used by the tests and by the mutation list) ------------------------------------

def check_verification_failure_stops_the_block():
    """Bob's reconciled key differs from Alice's in one bit Cascade did not fix: verification
    must abort the block at both ends and no key may come out."""
    from postprocessing.block import roles as block_roles

    alice, bob = roles(seed=7)
    real = block_roles.BobBlock._after_cascade

    def corrupt_then_continue(self):
        # flip one bit of Bob's reconciled frame, as a residual Cascade error would
        cb = self._cascade
        real_corrected = cb.corrected_bits

        def corrected(i):
            out = real_corrected(i)
            if i == 0:
                out[0] ^= 1
            return out
        cb.corrected_bits = corrected
        return real(self)

    block_roles.BobBlock._after_cascade = corrupt_then_continue
    try:
        run(alice, bob)
    finally:
        block_roles.BobBlock._after_cascade = real
    assert alice.outcome.aborted and bob.outcome.aborted
    assert AbortReason.VERIFICATION_FAILED.value in alice.outcome.reasons
    assert AbortReason.VERIFICATION_FAILED.value in bob.outcome.reasons
    assert alice.outcome.key.size == bob.outcome.key.size == 0


def check_toeplitz_seeds_fresh_per_block():
    """Two blocks with the node's CSPRNG: their Toeplitz seeds (sent in PA_SEED) differ."""
    from postprocessing.block.messages import PaSeed

    seeds = []
    for _ in range(2):
        alice = AliceBlock(bb84_params(), pattern_of, ProtocolRandom())
        bob = BobBlock(bb84_params(), *BB84, None, N_PULSES, ProtocolRandom())

        def spy(i, sender, msg):
            if msg[0] == MessageType.PA_SEED:
                seeds.append(PaSeed.from_bytes(msg[1]).seed)
        run(alice, bob, tamper=spy)
        assert not alice.outcome.aborted, alice.outcome.stats.abort_details
    a, b = seeds
    m = min(a.size, b.size)
    # equal prefixes of m > 10^4 uniform bits would happen with probability 2^-m
    assert m > 10_000 and not np.array_equal(a[:m], b[:m])


def check_abort_wipes_everything():
    """A block that aborts on its QBER (intercept-resend level, 25 %): every array either role
    held is zero afterwards."""
    alice, bob = roles(events=bb84_events(N_PULSES, 0.2, 0.25, seed=102))
    run(alice, bob)
    assert bob.outcome.aborted and AbortReason.QBER_ABOVE_THRESHOLD.value in bob.outcome.reasons
    assert all_wiped(alice, bob)


def check_b92_never_yields_key_and_flags_qber_above_ceiling():
    """B92 at 5 % QBER (above the 3.5 % ceiling, below the 11 % BB84 threshold): no key, and
    the QBER alarm is raised; at 0.5 % only no_security_proof stops it."""
    y = B92_P_CLICK / 4
    for qber, alarm in ((0.005, False), (0.05, True)):
        res = dist.distill(protocol="b92", slots=(ev := b92_events(B92_PULSES, B92_P_CLICK,
                                                                    qber, seed=103))[0],
                           channels=ev[1], alice_pattern=pattern_of, n_pulses=B92_PULSES,
                           rng=det_rng(5), expected_conclusive_per_pulse=y)
        st = res.stats
        assert res.alice_key.size == res.bob_key.size == st.key_length == 0 and st.aborted
        assert AbortReason.NO_SECURITY_PROOF.value in st.abort_reasons
        # Q + mu, mu = sqrt((n+k)/(nk) (k+1)/k ln(2/eps)) ~ 0.021 at k ~ 6e4
        assert (AbortReason.QBER_ABOVE_THRESHOLD.value in st.abort_reasons) == alarm
        assert math.isfinite(st.qber_upper)

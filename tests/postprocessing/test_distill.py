"""distill(): the whole chain on synthetic slot-level blocks (fast, exact expectations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from postprocessing import distill as dist
from postprocessing import finite_key as fk
from postprocessing.block import DEFAULT_QBER_TOL
from postprocessing.estimation import AbortReason
from postprocessing.randomness import ProtocolRandom
from sim_backend.pattern import pattern_at, sync_on, sync_slots

PATTERN_KEY = 0x5EED_0F_A11CE
det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded


def bb84_events(n_pulses: int, p_click: float, qber: float, rng, *, p_signal=1.0, p_decoy1=0.0):
    """Synthetic BB84 detections: a click per slot with probability p_click, Bob's basis 50/50,
    matched-basis bits flipped with probability qber, unmatched bits random. No multi-clicks."""
    slots = np.flatnonzero(rng.random(n_pulses) < p_click).astype(np.int64)
    pat = pattern_at(PATTERN_KEY, slots, p_signal=p_signal, p_decoy1=p_decoy1)
    a_bit, a_basis = pat & 1, (pat >> 1) & 1
    b_basis = rng.integers(0, 2, slots.size, dtype=np.uint8)
    flip = (rng.random(slots.size) < qber).astype(np.uint8)
    b_bit = np.where(b_basis == a_basis, a_bit ^ flip, rng.integers(0, 2, slots.size))
    return slots, (2 * b_basis + b_bit).astype(np.uint8)


def b92_events(n_pulses: int, p_click: float, qber: float, rng):
    """Synthetic B92: Alice sends |H> (0) or |D> (1); Bob measures + or x at random. A
    conclusive outcome (V or A) happens for half the non-orthogonal cases; a fraction qber of
    conclusive outcomes is flipped to the wrong conclusive channel (noise)."""
    slots = np.flatnonzero(rng.random(n_pulses) < p_click).astype(np.int64)
    a_bit = pattern_at(PATTERN_KEY, slots) & 1
    b_basis = rng.integers(0, 2, slots.size, dtype=np.uint8)
    coin = rng.integers(0, 2, slots.size, dtype=np.uint8)
    # + basis: H -> H (0); D -> H/V at random. x basis: D -> D (2); H -> D/A at random.
    outcome_bit = np.where(b_basis == 0, np.where(a_bit == 0, 0, coin),
                           np.where(a_bit == 1, 0, coin)).astype(np.uint8)
    conclusive = outcome_bit == 1
    noise = (rng.random(slots.size) < qber) & conclusive
    # a wrong conclusive result: the other analyser's conclusive port
    b_basis = np.where(noise, 1 - b_basis, b_basis).astype(np.uint8)
    return slots, (2 * b_basis + outcome_bit).astype(np.uint8)


def pattern_of(slots):
    return pattern_at(PATTERN_KEY, slots)


@pytest.fixture(scope="module")
def bb84_block():
    rng = np.random.default_rng(11)
    n_pulses = 2_000_000
    slots, ch = bb84_events(n_pulses, 0.1, 0.02, rng)
    return n_pulses, slots, ch


def test_bb84_block_gives_identical_keys_of_the_bound_length(bb84_block):
    n_pulses, slots, ch = bb84_block
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=n_pulses, rng=det_rng(1))
    st = res.stats
    assert not st.aborted, st.abort_details
    assert np.array_equal(res.alice_key, res.bob_key)
    # about half the clicks survive basis sifting: binomial, sigma = sqrt(N/4) ~ 224
    assert abs(st.sifted_bits - slots.size / 2) < 5 * math.sqrt(slots.size / 4)
    # the sampled QBER is binomial around 2 %: sigma = sqrt(q (1 - q) / k), per basis k/2
    assert abs(st.qber_estimate - 0.02) < 5 * math.sqrt(0.02 * 0.98 / st.sample_bits)
    for q_basis in st.qber_by_basis:
        assert abs(q_basis - 0.02) < 5 * math.sqrt(0.02 * 0.98 / (0.45 * st.sample_bits))
    # the bound is taken at the link's fixed Q_tol with the smaller per-basis sample
    assert st.bound_terms["qber_tol"] == DEFAULT_QBER_TOL
    assert sum(st.sample_by_basis) == st.sample_bits
    expected = fk.bb84_key_length(st.key_input_bits, min(st.sample_by_basis), DEFAULT_QBER_TOL,
                                  st.leak_ec, st.eps_sec, st.eps_cor)
    assert st.key_length == expected == res.alice_key.size > 0
    assert st.bound == fk.BOUND_TOMAMICHEL_2012 and st.eps_sec == 1e-10
    assert st.leak_ec == st.cascade_disclosed_bits + st.tag_bits and st.tag_bits > 0
    assert set(st.timings_s) >= {"sifting", "estimation", "reconciliation", "verification",
                                 "finite_key", "amplification"}
    # the final key is balanced (2-universal hashing of a high-entropy key): 5 sigma
    assert abs(res.alice_key.mean() - 0.5) < 5 * 0.5 / math.sqrt(res.alice_key.size)


def test_bb84_high_qber_aborts_with_the_qber_reason():
    rng = np.random.default_rng(12)
    n_pulses = 400_000
    slots, ch = bb84_events(n_pulses, 0.1, 0.25, rng)  # intercept-resend on every pulse
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=n_pulses, rng=det_rng(2))
    assert res.stats.aborted
    assert res.stats.abort_reasons == [AbortReason.QBER_ABOVE_THRESHOLD.value]
    assert res.alice_key.size == res.bob_key.size == 0
    assert res.stats.qber_upper > 0.11


def test_too_few_bits_aborts():
    rng = np.random.default_rng(13)
    slots, ch = bb84_events(10_000, 0.1, 0.02, rng)
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=10_000, rng=det_rng(3))
    assert res.stats.abort_reasons == [AbortReason.TOO_FEW_SIFTED_BITS.value]


def test_pattern_array_input_equals_callable(bb84_block):
    n_pulses, slots, ch = bb84_block
    pat = pattern_at(PATTERN_KEY, np.arange(n_pulses, dtype=np.int64))
    a = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pat,
                     n_pulses=n_pulses, rng=det_rng(5))
    b = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                     n_pulses=n_pulses, rng=det_rng(5))
    assert np.array_equal(a.alice_key, b.alice_key) and a.stats.key_length == b.stats.key_length


def test_b92_block_reports_its_statistics_and_never_yields_key():
    """B92 has no security proof on this hardware (finite_key.b92_key_length_result): an honest
    block stops with no_security_proof alone, after estimating what eavesdropper detection
    needs; a USD attack (forward successes only) adds the conclusive-yield alarm."""
    rng = np.random.default_rng(14)
    # 6e6 pulses: 6e5 conclusive bits put Q + mu (mu ~ 0.021) under the 3.5 % alarm ceiling
    n_pulses, p_click = 6_000_000, 0.4
    slots, ch = b92_events(n_pulses, p_click, 0.005, rng)
    expected_y = p_click / 4  # conclusive: half the bases x half the outcomes
    res = dist.distill(protocol="b92", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=n_pulses, rng=det_rng(4),
                       expected_conclusive_per_pulse=expected_y)
    st = res.stats
    assert st.aborted and st.abort_reasons == [AbortReason.NO_SECURITY_PROOF.value]
    assert res.alice_key.size == res.bob_key.size == st.key_length == 0
    assert st.bound == fk.BOUND_B92_NONE
    # conclusive fraction 1/4 of clicks: binomial, sigma = sqrt(N p (1-p))
    assert abs(st.sifted_bits - slots.size / 4) < 5 * math.sqrt(slots.size * 3 / 16)
    # sampled QBER binomial around 0.5 %: 5 sigma
    assert abs(st.qber_estimate - 0.005) < 5 * math.sqrt(0.005 * 0.995 / st.sample_bits)
    assert st.conclusive_per_pulse == st.sifted_bits / n_pulses
    assert st.multi_click_fraction == 0.0  # the synthetic events have no multi-clicks
    # USD attack, forward successes only: yield x (1 - 1/sqrt 2), no errors
    slots_e, ch_e = b92_events(n_pulses, p_click * (1 - 1 / math.sqrt(2)), 0.0, rng)
    res_e = dist.distill(protocol="b92", slots=slots_e, channels=ch_e, alice_pattern=pattern_of,
                         n_pulses=n_pulses, rng=det_rng(5),
                         expected_conclusive_per_pulse=expected_y)
    assert res_e.stats.aborted and res_e.alice_key.size == 0
    assert AbortReason.YIELD_DROP.value in res_e.stats.abort_reasons
    assert res_e.stats.qber_estimate < 0.01


def test_b92_requires_calibrated_yield():
    with pytest.raises(dist.DistillInputError, match="expected_conclusive_per_pulse"):
        dist.distill(protocol="b92", slots=np.zeros(0, np.int64), channels=np.zeros(0, np.uint8),
                     alice_pattern=pattern_of, n_pulses=10, rng=det_rng(0))


@pytest.mark.parametrize("kw,word", [
    (dict(protocol="e91"), "protocol"), (dict(eps_sec=0.0), "eps_sec"),
    (dict(eps_cor=1.0), "eps_cor"), (dict(n_pulses=0), "n_pulses"),
    (dict(rng=7), "ProtocolRandom"), (dict(sample_fraction=1.0), "sample_fraction"),
    (dict(qber_threshold=0.6), "qber_threshold"),
    (dict(qber_tol=None), "fixed per link"),
    (dict(intensities=(0.5, 0.1, 0.0)), "intensity_probabilities"),
])
def test_distill_rejects_bad_input(kw, word):
    args = dict(protocol="bb84", slots=np.zeros(0, np.int64), channels=np.zeros(0, np.uint8),
                alice_pattern=pattern_of, n_pulses=10, rng=det_rng(0))
    args.update(kw)
    with pytest.raises(dist.DistillInputError, match=word):
        dist.distill(**args)


DECOY_MUS, DECOY_PS = (0.5, 0.15, 0.0), (0.7, 0.2, 0.1)


def decoy_pattern(slots):
    return pattern_at(PATTERN_KEY, slots, p_signal=DECOY_PS[0], p_decoy1=DECOY_PS[1])


def decoy_events(n_pulses: int, eta: float, rng, *, y0=1e-5, e_det=0.02, chunk=4_000_000):
    """Synthetic decoy BB84 clicks from the GYS-form model (reference.md section 1): gain
    Q_k = Y0 + 1 - exp(-eta mu_k), error rate (Y0/2 + e_det (1 - exp(-eta mu_k))) / Q_k.
    Returns slots, channels and the true sifted counts/errors per [basis, intensity]."""
    mus = np.array(DECOY_MUS)
    gain = y0 + 1 - np.exp(-eta * mus)
    err = (0.5 * y0 + e_det * (1 - np.exp(-eta * mus))) / gain
    out_slots, out_ch = [], []
    counts = np.zeros((2, 3), np.int64)
    errors = np.zeros((2, 3), np.int64)
    for first in range(0, n_pulses, chunk):
        all_slots = np.arange(first, min(first + chunk, n_pulses), dtype=np.int64)
        pat = decoy_pattern(all_slots)
        k = pat >> 2
        hit = rng.random(all_slots.size) < gain[k]
        slots, pat, k = all_slots[hit], pat[hit], k[hit]
        a_bit, a_basis = pat & 1, (pat >> 1) & 1
        b_basis = rng.integers(0, 2, slots.size, dtype=np.uint8)
        flip = (rng.random(slots.size) < err[k]).astype(np.uint8)
        match = b_basis == a_basis
        b_bit = np.where(match, a_bit ^ flip, rng.integers(0, 2, slots.size))
        np.add.at(counts, (a_basis[match], k[match]), 1)
        np.add.at(errors, (a_basis[match], k[match]), flip[match])
        out_slots.append(slots)
        out_ch.append((2 * b_basis + b_bit).astype(np.uint8))
    q_model = float(np.dot(DECOY_PS, gain * err) / np.dot(DECOY_PS, gain))
    return np.concatenate(out_slots), np.concatenate(out_ch), counts, errors, q_model


def test_decoy_block_too_small_for_lim_stops_with_no_secret_key():
    """1e6 pulses at eta = 0.1 are far below what Lim 2014 needs at eps_sec = 1e-10: the chain
    must run, count per basis and intensity, and stop with no_secret_key naming the bound."""
    rng = np.random.default_rng(15)
    n_pulses = 1_000_000
    slots, ch, _, _, q_model = decoy_events(n_pulses, 0.1, rng)
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=decoy_pattern,
                       n_pulses=n_pulses, rng=det_rng(6),
                       intensities=DECOY_MUS, intensity_probabilities=DECOY_PS)
    st = res.stats
    assert st.bound == fk.BOUND_LIM_2014
    assert st.abort_reasons == [AbortReason.NO_SECRET_KEY.value]
    assert {"s_x1", "phi_x", "v_z1"} <= set(st.bound_terms)
    # key basis and test basis each get about half the sifted bits: 5 sigma
    assert abs(st.key_input_bits - st.sifted_bits / 2) < 5 * math.sqrt(st.sifted_bits / 4)
    sigma = math.sqrt(q_model * (1 - q_model) / st.sample_bits)
    assert abs(st.qber_estimate - q_model) < 5 * sigma
    # Per basis [Z, X] (the polarization loop steers on X): X is the disclosed test basis, Z
    # the key basis as Bob's error correction found it; both bases share the error model.
    assert st.qber_by_basis[1] == st.qber_estimate
    assert st.sample_by_basis == [st.key_input_bits, st.sample_bits]
    sigma_z = math.sqrt(q_model * (1 - q_model) / st.key_input_bits)
    assert abs(st.qber_by_basis[0] - q_model) < 5 * sigma_z


@pytest.mark.slow
def test_decoy_block_gives_identical_keys_of_the_lim_length():
    """3e7 pulses at eta = 0.3 (Lim 2014 allows ~1e5 bits): keys agree, and the length equals
    the bound evaluated on the true per-intensity counts of the generated events."""
    rng = np.random.default_rng(17)
    n_pulses = 30_000_000
    slots, ch, counts, errors, _ = decoy_events(n_pulses, 0.3, rng)
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=decoy_pattern,
                       n_pulses=n_pulses, rng=det_rng(8),
                       intensities=DECOY_MUS, intensity_probabilities=DECOY_PS)
    st = res.stats
    assert not st.aborted, st.abort_details
    assert np.array_equal(res.alice_key, res.bob_key)
    key_b, test_b = 0, 1  # sifting.KEY_BASIS = 0 (Z)
    allowed = fk.decoy_key_length(n_x=counts[key_b].tolist(), n_z=counts[test_b].tolist(),
                                  m_z=errors[test_b].tolist(), intensities=DECOY_MUS,
                                  probabilities=DECOY_PS, eps_sec=st.eps_sec,
                                  eps_cor=st.eps_cor, leak_ec=st.leak_ec)
    assert res.alice_key.size == st.key_length == allowed > 0
    assert st.key_input_bits == counts[key_b].sum() and st.sample_bits == counts[test_b].sum()
    assert st.decoy_counts == counts.tolist() and st.decoy_test_errors == errors[test_b].tolist()


def test_distill_events_aligns_raw_time_tags():
    """Raw time tags with an unknown clock offset and 5 ppm drift: alignment must recover the
    slots, and the chain must give the same keys as when it is handed the true slots."""
    rng = np.random.default_rng(16)
    n_pulses, sync_period, period_ps = 2_000_000, 1000, 1000.0
    slots, ch = bb84_events(n_pulses, 0.1, 0.02, rng)
    sync_key = 0xC0FFEE  # jitter sigma 30 ps, gate 400 ps: no event is lost to the gate
    s_sync = sync_slots(sync_key, 0, n_pulses, sync_period)
    all_slots = np.concatenate([slots, s_sync])
    all_ch = np.concatenate([ch, np.full(s_sync.size, 7, np.uint8)])
    order = np.argsort(all_slots, kind="stable")
    all_slots, all_ch = all_slots[order], all_ch[order]
    offset_ps, drift = 123_456_789, 5e-6
    t = (offset_ps + all_slots * period_ps * (1 + drift)
         + rng.normal(0, 30, all_slots.size)).round().astype(np.int64)
    order = np.argsort(t, kind="stable")
    t, all_ch = t[order], all_ch[order]
    bits = sync_on(sync_key, np.arange(n_pulses // sync_period + 1))
    res = dist.distill_events(timestamps_ps=t, channels=all_ch, nominal_period_ps=period_ps,
                              sync_period=sync_period, sync_on_bits=bits, gate_ps=400.0,
                              protocol="bb84",
                              alice_pattern=pattern_of, n_pulses=n_pulses,
                              rng=det_rng(7))
    ref = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=n_pulses, rng=det_rng(7))
    assert "alignment" in res.stats.timings_s
    assert res.stats.sifted_bits == ref.stats.sifted_bits
    assert np.array_equal(res.alice_key, ref.alice_key)
    assert np.array_equal(res.alice_key, res.bob_key) and res.stats.key_length > 0


def test_intermediate_key_material_is_wiped(bb84_block):
    """Detections, pattern bytes, sifted, sampled, kept and corrected bits held by either role
    are zero once distill returns; only the final keys survive (block tests cover aborts)."""
    n_pulses, slots, ch = bb84_block
    res = dist.distill(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
                       n_pulses=n_pulses, rng=det_rng(9), keep_roles=True)
    assert res.stats.key_length > 0 and res.alice_key.any()
    alice, bob = res.roles
    held = alice.key_material() + bob.key_material()
    assert len(held) >= 8 and sum(a.size for a in held) > slots.size
    assert not any(a.any() for a in held)


def test_fixed_qber_tol_sets_the_bound_and_the_abort(bb84_block):
    n_pulses, slots, ch = bb84_block
    kw = dict(protocol="bb84", slots=slots, channels=ch, alice_pattern=pattern_of,
              n_pulses=n_pulses)
    res = dist.distill(rng=det_rng(21), qber_tol=0.03, **kw)
    st = res.stats
    assert not st.aborted and st.bound_terms["qber_tol"] == 0.03
    assert st.key_length == fk.bb84_key_length(st.key_input_bits, min(st.sample_by_basis), 0.03,
                                               st.leak_ec, st.eps_sec, st.eps_cor) > 0
    low = dist.distill(rng=det_rng(21), qber_tol=0.01, **kw)
    assert low.stats.abort_reasons == [AbortReason.QBER_ABOVE_THRESHOLD.value]
    assert "Q_tol" in low.stats.abort_details[0]

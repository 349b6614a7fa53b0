"""Parameter estimation: sampled QBER bound, message round trips, counts, yield monitor, aborts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from postprocessing.randomness import ProtocolRandom

det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded
from hypothesis import given
from hypothesis import strategies as st

from postprocessing import estimation as est


def test_qber_upper_matches_serfling_form_by_hand():
    errors, k, n, eps = 230, 10_000, 90_000, 1e-10
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / eps))
    assert est.estimate_qber_upper(errors, k, n, eps) == pytest.approx(0.023 + mu, rel=1e-15)


@given(errors=st.integers(0, 500), extra=st.integers(0, 500), k=st.integers(1000, 5000),
       n=st.integers(1000, 10**6))
def test_qber_upper_monotone(errors, extra, k, n):
    base = est.estimate_qber_upper(errors, k, n, 1e-6)
    assert base >= errors / k
    assert est.estimate_qber_upper(errors + extra, k, n, 1e-6) >= base
    assert est.estimate_qber_upper(errors, k, n, 1e-9) >= base  # stricter eps: looser bound
    assert est.estimate_qber_upper(errors, 2 * k, n, 1e-6) - errors / (2 * k) < base - errors / k


def test_qber_upper_covers_true_key_qber():
    """Sampling without replacement from a block with a fixed error count: the bound on the
    unsampled part may fail with probability <= (eps/2)^2 (Serfling). With eps = 0.2 the failure
    rate over 2000 trials must stay below 0.01 + 3 binomial sigma
    (sqrt(0.01 * 0.99 / 2000) = 0.0022)."""
    rng = np.random.default_rng(1234)
    total, k, eps = 4000, 400, 0.2
    n = total - k
    block = np.zeros(total, dtype=np.uint8)
    block[:120] = 1  # 3 % errors
    fails = 0
    trials = 2000
    for _ in range(trials):
        perm = rng.permutation(total)
        sample, rest = block[perm[:k]], block[perm[k:]]
        bound = est.estimate_qber_upper(int(sample.sum()), k, n, eps)
        fails += rest.mean() > bound
    assert fails / trials <= (eps / 2) ** 2 + 3 * math.sqrt(0.01 * 0.99 / trials)


@pytest.mark.parametrize("args,word", [
    ((5, 0, 100, 0.1), "k=0"), ((5, 10, 0, 0.1), "n=0"), ((11, 10, 100, 0.1), "exceeds"),
    ((-1, 10, 100, 0.1), "errors=-1"), ((1, 10, 100, 0.0), "eps"), ((1, 10, 100, 1.0), "eps"),
])
def test_qber_upper_rejects_bad_input(args, word):
    with pytest.raises(est.EstimationInputError, match=word):
        est.estimate_qber_upper(*args)


def test_sample_exchange_roles_and_wire_round_trip():
    rng_bits = np.random.default_rng(7)
    alice = rng_bits.integers(0, 2, 5000, dtype=np.uint8)
    flips = rng_bits.random(5000) < 0.03
    bob = alice ^ flips.astype(np.uint8)
    rng = det_rng(int.from_bytes(b"\x01" * 8, "little"))
    ann, bob_kept = est.announce_sample(bob, 500, rng)
    wire = ann.to_bytes()
    ann2 = est.SampleAnnouncement.from_bytes(wire)
    assert ann2.n_sifted == 5000
    assert np.array_equal(ann2.positions, ann.positions)
    assert np.array_equal(ann2.bits, bob[ann.positions])
    verdict, alice_kept = est.answer_sample(alice, ann2)
    verdict2 = est.SampleVerdict.from_bytes(verdict.to_bytes())
    assert verdict2 == verdict
    assert verdict.k == 500
    assert verdict.errors == int(flips[ann.positions].sum())
    # sampled bits left both keys, and the same ones
    keep = np.ones(5000, bool)
    keep[ann.positions] = False
    assert np.array_equal(alice_kept, alice[keep]) and np.array_equal(bob_kept, bob[keep])
    assert np.unique(ann.positions).size == 500


def test_sample_depends_only_on_rng():
    bits = np.zeros(1000, np.uint8)
    a, _ = est.announce_sample(bits, 100, det_rng(5))
    b, _ = est.announce_sample(bits, 100, det_rng(5))
    c, _ = est.announce_sample(bits, 100, det_rng(6))
    assert np.array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)


def test_sample_positions_uniform():
    """Each position is sampled with probability k/n; over 400 draws of 100 from 1000 the count
    per decile (mean 4000) stays within 5 sigma (sigma <= sqrt(4000) ~ 63)."""
    rng = det_rng(99)
    hist = np.zeros(10)
    for _ in range(400):
        pos = est.choose_sample(1000, 100, rng)
        hist += np.bincount(pos // 100, minlength=10)
    assert np.all(np.abs(hist - 4000) < 5 * math.sqrt(4000))


@pytest.mark.parametrize("mutate,word", [
    (lambda b: b[:-1], "bytes"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:12] + (5000).to_bytes(4, "big") + b[16:], "strictly increasing"),
])
def test_announcement_rejects_corrupt_bytes(mutate, word):
    ann, _ = est.announce_sample(np.zeros(100, np.uint8), 10, det_rng(1))
    with pytest.raises(est.EstimationInputError, match=word):
        est.SampleAnnouncement.from_bytes(mutate(ann.to_bytes()))


def test_verdict_rejects_corrupt_bytes():
    with pytest.raises(est.EstimationInputError, match="exceeds"):
        est.SampleVerdict.from_bytes(est.SampleVerdict(5, 6).to_bytes())
    with pytest.raises(est.EstimationInputError, match="bytes"):
        est.SampleVerdict.from_bytes(b"QSV1")


def test_answer_rejects_mismatched_length_and_bad_k():
    ann, _ = est.announce_sample(np.zeros(100, np.uint8), 10, det_rng(1))
    with pytest.raises(est.EstimationInputError, match="100 sifted bits"):
        est.answer_sample(np.zeros(99, np.uint8), ann)
    with pytest.raises(est.EstimationInputError, match="k=100"):
        est.announce_sample(np.zeros(100, np.uint8), 100, det_rng(1))
    with pytest.raises(est.EstimationInputError, match="ProtocolRandom"):
        est.choose_sample(100, 10, 42)


def test_counts_and_errors_by_basis_intensity():
    basis = np.array([0, 0, 1, 1, 1, 0, 1], np.uint8)
    inten = np.array([0, 1, 0, 2, 2, 2, 0], np.uint8)
    alice = np.array([0, 1, 1, 0, 1, 1, 0], np.uint8)
    bob = np.array([1, 1, 1, 1, 1, 0, 1], np.uint8)
    counts = est.counts_by_basis_intensity(basis, inten)
    assert counts.tolist() == [[1, 1, 1], [2, 0, 2]]
    errs = est.errors_by_basis_intensity(alice, bob, basis, inten)
    # disagreements at indices 0 (Z,0), 3 (X,2), 5 (Z,2), 6 (X,0)
    assert errs.tolist() == [[1, 0, 1], [1, 0, 1]]
    rates = est.error_rates(errs, counts)
    assert rates[1, 0] == 0.5 and np.isnan(rates[1, 1])
    stats = est.decoy_statistics(alice, bob, basis, inten)
    # the key basis is sifting.KEY_BASIS = 0 (Z): Lim's "X" counts come from row 0
    assert stats.lim_arguments()["n_x"] == [1, 1, 1] and stats.lim_arguments()["m_z"] == [1, 0, 1]
    assert stats.lim_arguments(key_basis=1)["n_x"] == [2, 0, 2]


def test_counts_reject_bad_labels():
    with pytest.raises(est.EstimationInputError, match=r"\[0, 2\]"):
        est.counts_by_basis_intensity(np.zeros(3, np.uint8), np.array([0, 3, 1], np.uint8))
    with pytest.raises(est.EstimationInputError, match="length"):
        est.counts_by_basis_intensity(np.zeros(3, np.uint8), np.zeros(2, np.uint8))


def test_yields_per_intensity():
    ys = est.yields_per_intensity(np.array([0, 0, 1, 2, 0], np.uint8), [1000, 100, 50])
    assert ys.detected.tolist() == [3, 1, 1]
    assert ys.yields.tolist() == [0.003, 0.01, 0.02]
    with pytest.raises(est.EstimationInputError, match="more detections"):
        est.yields_per_intensity(np.array([1, 1], np.uint8), [10, 1, 10])


def test_yield_monitor_false_alarm_and_usd_detection():
    """Binomial conclusive counts at the calibrated rate must not alarm (P <= eps by Chernoff);
    a USD attack on every pulse (yield x 0.293, reference.md section 2) must."""
    rng = np.random.default_rng(2024)
    n_pulses, p = 10**6, 1.7e-3
    alarms = sum(est.check_conclusive_yield(int(rng.binomial(n_pulses, p)), n_pulses, p,
                                            eps=1e-6).drop for _ in range(200))
    assert alarms == 0  # expected 200 * 1e-6 false alarms at most
    attacked = int(rng.binomial(n_pulses, p * (1 - 1 / math.sqrt(2))))
    chk = est.check_conclusive_yield(attacked, n_pulses, p, eps=1e-6)
    assert chk.drop and chk.observed_per_pulse < chk.threshold / n_pulses


def test_yield_monitor_threshold_by_hand():
    chk = est.check_conclusive_yield(1500, 10**6, 2e-3, eps=1e-9, rel_tolerance=0.1)
    lam = 0.9 * 10**6 * 2e-3
    assert chk.threshold == pytest.approx(lam - math.sqrt(2 * lam * math.log(1e9)))
    assert chk.drop == (1500 < chk.threshold)


def test_decide_abort_reasons():
    ok = est.decide_abort(qber_upper=0.05, qber_threshold=0.11, sample_size=1000,
                          min_sample_size=100)
    assert not ok.abort and ok.reason is None
    bad = est.decide_abort(qber_upper=0.2, qber_threshold=0.11, sample_size=10,
                           min_sample_size=100)
    assert bad.abort
    assert set(bad.reasons) == {est.AbortReason.QBER_ABOVE_THRESHOLD,
                                est.AbortReason.SAMPLE_TOO_SMALL}
    drop = est.check_conclusive_yield(10, 10**6, 1e-3)
    y = est.decide_abort(qber_upper=0.01, qber_threshold=0.11, sample_size=1000,
                         min_sample_size=100, yield_check=drop)
    assert y.reasons == (est.AbortReason.YIELD_DROP,) and "conclusive yield" in y.details[0]
    assert est.AbortReason.YIELD_DROP.value == "conclusive_yield_drop"


@given(n=st.integers(2, 3000), data=st.data())
def test_announcement_wire_round_trip_property(n, data):
    k = data.draw(st.integers(1, n - 1))
    seed = data.draw(st.integers(0, 2**32))
    bits = np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)
    ann, kept = est.announce_sample(bits, k, det_rng(seed + 1))
    back = est.SampleAnnouncement.from_bytes(ann.to_bytes())
    assert back.n_sifted == n and np.array_equal(back.positions, ann.positions)
    assert np.array_equal(back.bits, bits[ann.positions]) and kept.size == n - k
    assert est.SampleVerdict.from_bytes(est.SampleVerdict(k, k // 2).to_bytes()) == \
        est.SampleVerdict(k, k // 2)


def test_fixed_positions_and_per_class_verdict():
    alice = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.uint8)
    bob = np.array([0, 0, 1, 1, 1, 0, 1, 1], np.uint8)
    intensity = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.uint8)
    ann, bob_kept = est.announce_positions(bob, np.array([1, 3, 5, 6]))
    ann = est.SampleAnnouncement.from_bytes(ann.to_bytes())
    verdict, alice_kept = est.answer_by_class(alice, ann, intensity, 3)
    verdict = est.ClassVerdict.from_bytes(verdict.to_bytes())
    # disclosed rows 1 (k=1, wrong), 3 (k=0, wrong), 5 (k=2, right), 6 (k=0, wrong)
    assert verdict.counts == (2, 1, 1) and verdict.errors == (2, 1, 0)
    assert verdict.k == 4 and verdict.total_errors == 3
    assert alice_kept.tolist() == [0, 1, 1, 1] and bob_kept.tolist() == [0, 1, 1, 1]


def test_fixed_positions_and_class_verdict_reject_bad_input():
    with pytest.raises(est.EstimationInputError, match="strictly increasing"):
        est.announce_positions(np.zeros(5, np.uint8), np.array([3, 1]))
    with pytest.raises(est.EstimationInputError, match="strictly increasing"):
        est.announce_positions(np.zeros(5, np.uint8), np.array([5]))
    ann, _ = est.announce_positions(np.zeros(5, np.uint8), np.array([0, 2]))
    with pytest.raises(est.EstimationInputError, match=r"\[0, 1\]"):
        est.answer_by_class(np.zeros(5, np.uint8), ann, np.full(5, 2, np.uint8), 2)
    with pytest.raises(est.EstimationInputError, match="more errors"):
        est.ClassVerdict.from_bytes(est.ClassVerdict((1, 2), (2, 0)).to_bytes())
    with pytest.raises(est.EstimationInputError, match="classes"):
        est.ClassVerdict.from_bytes(est.ClassVerdict((1, 2), (0, 0)).to_bytes()[:-1])


def test_yields_per_basis_intensity():
    basis = np.array([0, 0, 1, 1, 1], np.uint8)
    inten = np.array([0, 1, 0, 0, 2], np.uint8)
    ys = est.yields_per_basis_intensity(basis, inten, [[100, 10, 10], [100, 10, 20]])
    assert ys.detected.tolist() == [[1, 1, 0], [2, 0, 1]]
    assert ys.yields.tolist() == [[0.01, 0.1, 0.0], [0.02, 0.0, 0.05]]
    with pytest.raises(est.EstimationInputError, match="2x3"):
        est.yields_per_basis_intensity(basis, inten, [1, 2, 3])
    with pytest.raises(est.EstimationInputError, match="more detections"):
        est.yields_per_basis_intensity(basis, inten, [[0, 10, 10], [100, 10, 20]])

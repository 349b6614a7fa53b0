"""LT3 end to end: the simulated link's events through sifting (count table), the block roles
and ``distill``; the eavesdropper models of the simulator give no key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from postprocessing import distill as dist
from postprocessing import finite_key_lt as fkl
from postprocessing.estimation import AbortReason
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import lt3 as slt3
from postprocessing.sifting.errors import SiftMessageError
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.physics import eve as eve_model

# A short high-efficiency link: 2 km, 60 % detectors (SNSPD class), 1 % misalignment,
# negligible dead time. With Azuma's inequality over all N pulses LT3 needs ~3e8 pulses per
# block here; decoy BB84 on the same link needs far fewer (docs/protocols.md).
LINK = dict(protocol="lt3", distance_km=2.0, detector_efficiency=0.6, misalignment=0.01,
            dark_count_probability=1e-7, p_basis_x=0.3, mu=0.3, nu1=0.1, p_signal=0.6,
            p_decoy1=0.2, dead_time_ns=0.0, jitter_ps=10.0)
MULTI_CLICK_CEILING = 0.15
"""Calibrated ceiling: at eta mu ~ 0.17 the squashed multi-click fraction is ~5 %."""


def run_lt3(n_pulses: int, seed: int, **overrides):
    params = LinkParams.preset("gys", **{**LINK, **overrides})
    sim = LinkSimulator(params, seed=seed)
    chunk = sim.run_slots(n_pulses)
    det = chunk.channels < 4
    px = params.p_basis_x
    res = dist.distill(protocol="lt3", slots=chunk.true_slots[det], channels=chunk.channels[det],
                       alice_pattern=sim.alice_pattern, n_pulses=n_pulses,
                       rng=ProtocolRandom.deterministic_for_tests(seed + 100),
                       intensities=params.intensities,
                       intensity_probabilities=params.intensity_probabilities,
                       alice_state_probabilities=((1 - px) / 2, (1 - px) / 2, px),
                       max_multi_click_fraction=MULTI_CLICK_CEILING, keep_roles=True)
    return res, params


def test_usd3_success_is_the_series_of_the_equal_success_measurement():
    for mu in (0.1, 0.5, 2.0):
        series = sum(math.exp(-mu) * mu ** n / math.factorial(n) * (1 - 2 ** ((1 - n) / 2))
                     for n in range(2, 80))
        assert eve_model.usd3_success_probability(mu) == pytest.approx(series, rel=1e-12)
    # one photon of three qubit states: no unambiguous discrimination (n = 1 term is 0)
    assert eve_model.usd3_success_probability(1e-6) < 1e-12


def test_announcement_and_answer_round_trip_and_refuse_key_disclosure():
    slots = np.array([3, 8, 9, 20], np.int64)
    basis = np.array([0, 1, 1, 0], np.uint8)
    ann = slt3.Lt3Announcement(slots, basis, np.array([1, 0], np.uint8), 100)
    back = slt3.Lt3Announcement.from_bytes(ann.to_bytes())
    assert np.array_equal(back.slots, slots) and np.array_equal(back.x_bits, [1, 0])
    # pattern: H mu, V nu (Bob X, A), D vacuum (Bob X, D), V mu (Bob Z)
    pattern = np.array([0b0000, 0b0101, 0b1010, 0b0001], np.uint8)
    answer, rows = slt3.alice_answer_lt3(back, pattern)
    assert list(answer.rows & 3) == [slt3.CODE_Z, slt3.CODE_Z1, slt3.CODE_X0, slt3.CODE_Z]
    assert list(rows.key_bits) == [0, 1]            # Z rows at mu: H -> 0, V -> 1
    assert rows.counts.x_clicks[1][1][1] == 1       # A click, Z1, nu
    assert rows.counts.x_clicks[0][2][2] == 1       # D click, X0, vacuum
    assert rows.counts.key_clicks == (2, 0, 0)
    bad = slt3.Lt3Answer(np.array([slt3.CODE_Z0, 1, 3, 0], np.uint8))
    with pytest.raises(SiftMessageError, match="key"):
        bad.validate(basis)
    with pytest.raises(SiftMessageError, match="span"):
        slt3.Lt3Announcement(slots, basis, np.array([1, 0], np.uint8), 10).validate()


@pytest.mark.slow
def test_honest_short_link_gives_identical_keys_of_the_bound_length():
    n = 300_000_000
    res, params = run_lt3(n, seed=31)
    st = res.stats
    assert not st.aborted, st.abort_details
    assert np.array_equal(res.alice_key, res.bob_key) and res.alice_key.size == st.key_length > 0
    alice, bob = res.roles
    assert all(not a.any() for a in alice.key_material() + bob.key_material())
    # the length is the bound of the public table with the charged leakage, nothing else
    counts = fkl.Lt3Counts(**{k: v for k, v in st.lt3_counts.items()})
    setup = fkl.Lt3Setup(params.intensities, params.intensity_probabilities,
                         (0.35, 0.35, 0.3))
    again = fkl.lt3_key_length(counts, setup, eps_sec=st.eps_sec, eps_cor=st.eps_cor,
                               leak_ec=st.leak_ec)
    assert again == st.key_length
    # X0 error rate: misalignment 1 % plus half the cross-basis multi-clicks (random outcome);
    # expected 1-3 %; binomial 5 sigma on ~1.6e6 X0 clicks is < 0.1 %: a loose physical window
    assert 0.005 < st.qber_estimate < 0.04


@pytest.mark.slow
def test_intercept_resend_gives_no_key():
    res, _ = run_lt3(30_000_000, seed=32, eve="intercept-resend", eve_fraction=1.0)
    st = res.stats
    assert st.aborted and res.alice_key.size == 0 and res.bob_key.size == 0
    # Eve's random basis: X0 error 1/4 on her wrong-basis half ... 1/4 + e_det/2 in all
    assert AbortReason.QBER_ABOVE_THRESHOLD.value in st.abort_reasons
    q = 0.25 + 0.01 / 2
    assert abs(st.qber_estimate - q) < 5 * math.sqrt(q * (1 - q) / st.sample_bits) + 0.02


@pytest.mark.slow
def test_three_state_usd_multiphoton_gives_no_key_at_the_honest_block_size():
    # Eve blocks every single photon (three qubit states admit no unambiguous discrimination),
    # identifies the state of multi-photon pulses and resends it as one photon around the
    # fibre. No multi-clicks, no errors beyond misalignment: only the decoys see her, because
    # her clicks grow like mu^2 (vacuum+weak bound: no single-photon key detections).
    res, _ = run_lt3(300_000_000, seed=33, eve="usd-multiphoton", eve_fraction=1.0,
                     eve_bypass_fibre=True)
    st = res.stats
    assert st.aborted and res.alice_key.size == 0 and res.bob_key.size == 0
    assert st.abort_reasons == [AbortReason.NO_SECRET_KEY.value]
    assert "m1 0" in st.abort_details[0]
    assert st.multi_click_fraction == 0.0 and st.qber_estimate < 0.02


@pytest.mark.slow
def test_basis_dependent_efficiency_aborts():
    res, _ = run_lt3(20_000_000, seed=34, efficiency_mismatch=0.2)
    st = res.stats
    assert st.aborted and AbortReason.ASSUMPTION_VIOLATED.value in st.abort_reasons

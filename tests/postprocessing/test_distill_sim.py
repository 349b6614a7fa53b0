"""distill() end to end on events of the simulated link (sim_backend.link) at GYS 25 km."""

from __future__ import annotations

import math

import numpy as np
import pytest

from postprocessing import distill as dist
from postprocessing import finite_key as fk
from postprocessing.block import DEFAULT_QBER_TOL
from postprocessing.estimation import AbortReason
from postprocessing.randomness import ProtocolRandom
from sim_backend.link import LinkSimulator, simulate
from sim_backend.params import LinkParams
from sim_backend.pattern import sync_on

pytestmark = pytest.mark.slow

N_PULSES = 50_000_000  # ~1.7e5 sifted BB84 bits at 25 km (GYS): enough for a Tomamichel key


def run_block(params: LinkParams, n_pulses: int, seed: int, **distill_kwargs):
    """One block: Bob's raw time tags from the simulator, aligned and distilled."""
    sim = LinkSimulator(params, seed=seed)
    chunk = sim.run_slots(n_pulses)
    sync_bits = sync_on(sim.sync_key, np.arange(n_pulses // params.sync_period + 1))
    res = dist.distill_events(timestamps_ps=chunk.timestamps_ps, channels=chunk.channels,
                              nominal_period_ps=1e12 / params.clock_hz,
                              sync_period=params.sync_period, sync_on_bits=sync_bits,
                              protocol=params.protocol, alice_pattern=sim.alice_pattern,
                              n_pulses=n_pulses, rng=ProtocolRandom.deterministic_for_tests(seed + 1000),
                              **distill_kwargs)
    return res, chunk


def test_gys_25km_bb84_identical_keys_of_the_allowed_length():
    params = LinkParams.preset("gys", distance_km=25.0, p_signal=1.0, p_decoy1=0.0,
                               clock_offset_ps=987_654_321, clock_drift_ppm=3.0)
    res, chunk = run_block(params, N_PULSES, seed=21)
    st = res.stats
    assert not st.aborted, st.abort_details
    assert np.array_equal(res.alice_key, res.bob_key)
    # Tomamichel at the link's fixed Q_tol (distill's default) with the smaller basis sample
    allowed = fk.bb84_key_length(st.key_input_bits, min(st.sample_by_basis),
                                 st.bound_terms["qber_tol"], st.leak_ec, st.eps_sec, st.eps_cor)
    assert st.bound_terms["qber_tol"] == DEFAULT_QBER_TOL
    assert res.alice_key.size == st.key_length == allowed > 0
    # QBER of the GYS model at 25 km: (Y0/2 + e_det (1 - e^{-eta mu})) / Q_mu ~ 3.3 %;
    # binomial sigma of the sampled estimate sqrt(q (1 - q) / k)
    eta = 0.045 * 10 ** (-0.21 * 25 / 10)
    gain = 1.7e-6 + 1 - math.exp(-eta * 0.5)
    q_model = (0.5 * 1.7e-6 + 0.033 * (1 - math.exp(-eta * 0.5))) / gain
    assert abs(st.qber_estimate - q_model) < 5 * math.sqrt(q_model * (1 - q_model) / st.sample_bits)
    # sifted bits ~ N Q / 2, less dead time (10 slots per detector, each detector clicking at
    # r = Q/4 per slot: dead fraction r d / (1 + r d)) and the 3-sigma timing gate (0.27 %).
    # Tolerance: 5 binomial sigma plus 0.1 % for the first-order dead-time model (O((r d)^2)).
    r, d = gain / 4, 10
    expected = N_PULSES * gain / 2 * (1 - r * d / (1 + r * d)) * (1 - 0.0027)
    assert abs(st.sifted_bits - expected) < 5 * math.sqrt(expected) + 1e-3 * expected
    assert st.timings_s["alignment"] > 0


def test_gys_25km_intercept_resend_aborts_on_qber():
    params = LinkParams.preset("gys", distance_km=25.0, p_signal=1.0, p_decoy1=0.0,
                               eve="intercept-resend", eve_fraction=1.0)
    res, _ = run_block(params, 5_000_000, seed=22)
    st = res.stats
    assert st.aborted and AbortReason.QBER_ABOVE_THRESHOLD.value in st.abort_reasons
    assert res.alice_key.size == 0 and res.bob_key.size == 0
    # QBER 1/4 from Eve's wrong-basis half (reference.md section 2) plus misalignment on her
    # right-basis half: 1/4 + e_det/2; the sample mean is binomial: 5 sigma
    q = 0.25 + 0.033 / 2
    assert abs(st.qber_estimate - q) < 5 * math.sqrt(q * (1 - q) / st.sample_bits)


def _b92_calibration_kwargs(params, expected_conclusive):
    """What a B92 node knows from calibration: the conclusive yield per pulse."""
    return dict(expected_conclusive_per_pulse=expected_conclusive)


def _b92_params(**kw):
    # a short, well-aligned link: B92 needs Q + mu under the 3.5 % ceiling
    return LinkParams.preset("gys", protocol="b92", distance_km=5.0, p_signal=1.0,
                             p_decoy1=0.0, misalignment=0.002, **kw)


@pytest.fixture(scope="module")
def b92_calibration():
    """Conclusive yield per pulse measured on a calibration run (as a node does at start-up)."""
    r = simulate(_b92_params(), 20_000_000, seed=30)
    return r.sifted_bits / r.pulses


def test_b92_honest_link_yields_no_key_but_its_statistics(b92_calibration):
    """B92 has no security proof with weak coherent pulses (finite_key): even an honest short
    link stores nothing, stopping on no_security_proof alone, with its statistics estimated."""
    params = _b92_params()
    res, _ = run_block(params, 20_000_000, seed=31,
                       **_b92_calibration_kwargs(params, b92_calibration))
    st = res.stats
    # (a block this small may also raise the 3.5 % QBER alarm: Q + mu with mu ~ 0.05)
    assert st.aborted and AbortReason.NO_SECURITY_PROOF.value in st.abort_reasons
    assert AbortReason.YIELD_DROP.value not in st.abort_reasons
    assert AbortReason.MULTI_CLICK_EXCESS.value not in st.abort_reasons
    assert res.alice_key.size == res.bob_key.size == 0 and st.bound == fk.BOUND_B92_NONE
    assert st.sifted_bits > 0 and 0 <= st.qber_estimate < 0.035
    assert 0 <= st.multi_click_fraction < 0.01


def test_b92_usd_attack_is_caught_by_the_yield_monitor(b92_calibration):
    params = _b92_params(eve="usd", eve_fraction=1.0)
    res, _ = run_block(params, 20_000_000, seed=32,
                       **_b92_calibration_kwargs(params, b92_calibration))
    st = res.stats
    assert st.aborted and AbortReason.YIELD_DROP.value in st.abort_reasons
    # the yield falls to ~0.293 of the calibrated value (reference.md section 2)
    assert st.conclusive_per_pulse < 0.5 * b92_calibration

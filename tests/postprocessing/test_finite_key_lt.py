"""The LT3 finite-key bound (postprocessing.finite_key_lt) against hand computations and the
qubit algebra done independently with 2x2 matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from postprocessing import finite_key_lt as fkl
from postprocessing.block import BlockParams, BlockParamsError
from postprocessing.block import decisions
from postprocessing.estimation import AbortReason
from postprocessing.finite_key import FiniteKeyInputError, binary_entropy

X = np.array([[0.0, 1.0], [1.0, 0.0]])
Z = np.array([[1.0, 0.0], [0.0, -1.0]])
I2 = np.eye(2)


def rho(bloch):
    x, z = bloch
    return 0.5 * (I2 + x * X + z * Z)


def ket(theta):
    return np.array([math.cos(theta / 2), math.sin(theta / 2)])


def depolarised_x_povm(p, eta):
    """Bob's X detectors after a depolarising channel of strength p and loss eta: D_D, D_A."""
    plus, minus = ket(math.pi / 2), ket(-math.pi / 2)
    d_plus = eta / 2 * ((1 - p) * np.outer(plus, plus) + p * I2 / 2)
    d_minus = eta / 2 * ((1 - p) * np.outer(minus, minus) + p * I2 / 2)
    return d_plus, d_minus


SETUP = fkl.Lt3Setup((0.5, 0.1, 0.0), (0.6, 0.2, 0.2), (0.35, 0.35, 0.3))


def test_ideal_virtual_coefficients_match_the_hand_derivation():
    # By hand: Y_H = (q_I + q_Z)/2, Y_V = (q_I - q_Z)/2, Y_D = (q_I + q_X)/2, so
    # q_I = Y_H + Y_V, q_X = 2 Y_D - Y_H - Y_V; sigma_+- = (1 +- X)/4 gives
    # Tr(D sigma_+) = (q_I + q_X)/4 = Y_D/2 and Tr(D sigma_-) = (Y_H + Y_V - Y_D)/2.
    cp, cm = fkl.virtual_coefficients(fkl.IDEAL_BLOCH)
    assert cp == pytest.approx((0.0, 0.0, 0.5), abs=1e-12)
    assert cm == pytest.approx((0.5, 0.5, -0.5), abs=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.02, 0.1, 0.3])
def test_ideal_states_depolarising_channel_phase_error_is_p_over_2(p):
    d_plus, d_minus = depolarised_x_povm(p, eta=0.37)
    yields = [[float(np.trace(d @ rho(b))) for b in fkl.IDEAL_BLOCH] for d in (d_plus, d_minus)]
    assert fkl.phase_error_rate(yields) == pytest.approx(p / 2, abs=1e-12)


@pytest.mark.parametrize("delta", [0.05, 0.2])
def test_flawed_states_inversion_reproduces_the_virtual_yields(delta):
    # The paper's flaw model: polar angles 0, pi + delta, pi/2 + delta/2; an arbitrary positive
    # operator for Bob's outcome. The virtual yield Tr(D sigma_+-) computed directly from the
    # kets must equal the inversion's linear form of the three measured yields.
    thetas = (0.0, math.pi + delta, math.pi / 2 + delta / 2)
    bloch = tuple((math.sin(t), math.cos(t)) for t in thetas)
    rng = np.random.default_rng(7)
    m = rng.normal(size=(2, 2))
    d = m @ m.T / 5.0
    cp, cm = fkl.virtual_coefficients(bloch)
    y = [float(np.trace(d @ rho(b))) for b in bloch]
    phi0, phi1 = ket(thetas[0]), ket(thetas[1])
    for c, sign in ((cp, 1.0), (cm, -1.0)):
        v = (phi0 + sign * phi1) / 2
        direct = float(v @ d @ v)
        assert sum(ci * yi for ci, yi in zip(c, y)) == pytest.approx(direct, abs=1e-12)


def test_collinear_bloch_vectors_are_refused():
    collinear = ((0.0, 1.0), (0.0, -1.0), (0.0, 1.0))
    assert any("collinear" in v for v in fkl.bloch_violations(collinear))
    mixed = ((0.0, 0.8), (0.0, -1.0), (1.0, 0.0))
    assert any("Z0" in v for v in fkl.bloch_violations(mixed))
    assert fkl.bloch_violations(fkl.IDEAL_BLOCH) == []
    setup = fkl.Lt3Setup(SETUP.intensities, SETUP.intensity_probabilities,
                         SETUP.state_probabilities, bloch=collinear)
    counts = fkl.Lt3Counts([[[1, 1, 1]] * 3] * 2, [1, 1, 1], [1, 1, 1], 100)
    with pytest.raises(FiniteKeyInputError, match="collinear"):
        fkl.lt3_key_length_result(counts, setup, eps_sec=1e-10, eps_cor=1e-15, leak_ec=0)


def _hand_decoy(counts, eps):
    """Lim 2014 eqs. (2)-(4) for (0.5, 0.1, 0) with p = (0.6, 0.2, 0.2), written out."""
    n = sum(counts)
    delta = math.sqrt(n / 2 * math.log(1 / eps))
    e5, e1 = math.exp(0.5), math.exp(0.1)
    lo = [e5 / 0.6 * (counts[0] - delta), e1 / 0.2 * (counts[1] - delta),
          (counts[2] - delta) / 0.2]
    hi = [e5 / 0.6 * (counts[0] + delta), e1 / 0.2 * (counts[1] + delta),
          (counts[2] + delta) / 0.2]
    tau0 = 0.6 * math.exp(-0.5) + 0.2 * math.exp(-0.1) + 0.2
    tau1 = 0.6 * 0.5 * math.exp(-0.5) + 0.2 * 0.1 * math.exp(-0.1)
    s0 = max(0.0, lo[2])
    s1 = 0.5 * (lo[1] - hi[2] - 0.01 / 0.25 * (hi[0] - s0)) / (0.5 * 0.1 - 0.01)
    s1_up = min((hi[1] - s0) / 0.1, (hi[0] - s0) / 0.5)
    return tau0 * s0, max(0.0, tau1 * s1), tau1 * s1_up, tau0, tau1


def test_key_length_matches_an_independent_hand_computation():
    n_pulses = 10**9
    # gains nearly linear in the intensity: count_nu ~ 0.2 x 0.2/0.6 x count_mu
    x = [[[60000, 4100, 150], [60000, 4100, 150], [100000, 6800, 200]],    # D detector
         [[60000, 4100, 150], [60000, 4100, 150], [2000, 140, 150]]]       # A detector
    key = [250000, 17000, 400]
    x = [[[100 * v for v in row] for row in det] for det in x]
    key = [100 * v for v in key]
    counts = fkl.Lt3Counts(x, key, [10**7, 680000, 20000], n_pulses)
    leak = 30000
    eps_sec, eps_cor = 1e-10, 1e-15
    res = fkl.lt3_key_length_result(counts, SETUP, eps_sec=eps_sec, eps_cor=eps_cor,
                                    leak_ec=leak)
    # eta_est = eps_sec^2 / 2 over 57 bounds (7 classes x 3 intensities x 2 sides, 2 splits,
    # 6 x 2 + 1 Azuma)
    eps = eps_sec ** 2 / 2 / 57
    azuma = math.sqrt(n_pulses / 2 * math.log(1 / eps))
    k0, k1, _, tau0, tau1 = _hand_decoy(key, eps)

    def split(s, share):
        return share * s - math.sqrt(s / 2 * math.log(1 / eps))
    m1 = split(k1, 0.6 * 0.5 * math.exp(-0.5) / tau1)
    m0 = split(k0, 0.6 * math.exp(-0.5) / tau0)
    lam = {}
    p_state = (0.35, 0.35, 0.3)
    for d in range(2):
        for j in range(3):
            _, lo, hi, _, _ = _hand_decoy(x[d][j], eps)
            lam[d, j] = (max(0.0, lo - azuma) / (p_state[j] * tau1),
                         (hi + azuma) / (p_state[j] * tau1))
    # ideal coefficients: + with A: Y_A|X0 / 2; - with D: (Y_D|Z0 + Y_D|Z1 - Y_D|X0) / 2
    worst = 0.5 * lam[1, 2][1] + 0.5 * (lam[0, 0][1] + lam[0, 1][1] - lam[0, 2][0])
    n_ph = 0.7 * 0.6 * 0.5 * math.exp(-0.5) * worst + azuma
    e = min(0.5, n_ph / m1)
    raw = (m0 + m1 * (1 - binary_entropy(e)) - leak - math.log2(2 / (eps_sec ** 2 / 2))
           - math.log2(2 / eps_cor))
    assert res.terms["m1"] == pytest.approx(m1, rel=1e-12)
    assert res.terms["m0"] == pytest.approx(m0, rel=1e-12)
    assert res.terms["phase_errors_upper"] == pytest.approx(n_ph, rel=1e-12)
    assert res.terms["raw_length"] == pytest.approx(raw, rel=1e-9)
    assert res.key_length == max(0, math.floor(raw))
    assert 0 < m1 < key[0] and 0 < e < 0.5


def expected_counts(n_pulses, setup, *, eta, p_dep, y0=1e-7):
    """Expected count table: Poisson photon numbers, each photon depolarised with p_dep and
    detected with eta split over the bases by q_Z; dark counts y0/4 per detector."""
    q = setup.bob_z_probability
    x = [[[0.0] * 3 for _ in range(3)] for _ in range(2)]
    key, zx = [0.0] * 3, [0.0] * 3
    for j, (bx, bz) in enumerate(setup.bloch):
        for k, (mu, pk) in enumerate(zip(setup.intensities, setup.intensity_probabilities)):
            n = n_pulses * setup.state_probabilities[j] * pk

            def det(comp, share):
                pp = (1 + (1 - p_dep) * comp) / 2
                return [n * (1 - math.exp(-mu * eta * share * pp) + y0 / 4),
                        n * (1 - math.exp(-mu * eta * share * (1 - pp)) + y0 / 4)]
            xd = det(bx, 1 - q)
            x[0][j][k], x[1][j][k] = xd
            if j < 2:
                key[k] += sum(det(bz, q))
            else:
                zx[k] = sum(det(bz, q))
    return fkl.Lt3Counts([[[round(v) for v in r] for r in d] for d in x],
                         [round(v) for v in key], [round(v) for v in zx], n_pulses)


def test_finite_phase_error_bound_is_sound_and_tightens_with_block_size():
    # Expected counts of a depolarising link: the bound never falls below the true single-photon
    # phase error p/2 and shrinks as the block grows; with a faint decoy (nu = 0.001, the
    # multi-photon bias of the upper yield bound ~ nu) it comes within 0.01 of p/2 at 1e18 pulses.
    p = 0.04
    setup = fkl.Lt3Setup((0.5, 0.001, 0.0), (0.6, 0.3, 0.1), (0.35, 0.35, 0.3))
    rates = []
    for n in (10**10, 10**12, 10**14, 10**18):
        c = expected_counts(n, setup, eta=0.3, p_dep=p)
        r = fkl.lt3_key_length_result(c, setup, eps_sec=1e-10, eps_cor=1e-15, leak_ec=0)
        rates.append(r.terms["phase_error_rate_upper"])
    assert all(e >= p / 2 for e in rates)
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] - p / 2 < 0.01


def test_basis_dependent_efficiency_is_detected():
    setup = fkl.Lt3Setup((0.5, 0.1, 0.0), (0.6, 0.2, 0.2), (0.35, 0.35, 0.3))
    c = expected_counts(10**9, setup, eta=0.3, p_dep=0.02)
    assert fkl.basis_efficiency_violations(c, setup, 0.02, 1e-10) == []
    # Z detectors 10 % less efficient than calibrated: Z fraction 0.5 -> 0.474 on ~1e8 clicks
    skewed = fkl.Lt3Counts(c.x_clicks, [round(v * 0.9) for v in c.key_clicks],
                           [round(v * 0.9) for v in c.z_clicks_x0], c.n_pulses)
    out = fkl.basis_efficiency_violations(skewed, setup, 0.02, 1e-10)
    assert len(out) == 2 and "basis-dependent" in out[0]


def _lt3_params(**kw):
    base = dict(protocol="lt3", qber_tol=0.05, intensities=(0.5, 0.1, 0.0),
                intensity_probabilities=(0.6, 0.2, 0.2),
                alice_state_probabilities=(0.35, 0.35, 0.3))
    base.update(kw)
    return BlockParams(**base)


def test_block_decision_aborts_on_each_assumption_violation():
    params = _lt3_params()
    setup = decisions.lt3_setup(params)
    good = expected_counts(10**10, setup, eta=0.3, p_dep=0.02)
    assert not decisions.lt3_decision(params, good, 0.01, multi_click_fraction=0.001).abort
    multi = decisions.lt3_decision(params, good, 0.01, multi_click_fraction=0.05)
    assert multi.reasons == (AbortReason.MULTI_CLICK_EXCESS,)
    skewed = fkl.Lt3Counts(good.x_clicks, [round(v * 0.9) for v in good.key_clicks],
                           good.z_clicks_x0, good.n_pulses)
    assert decisions.lt3_decision(params, skewed, 0.01).reasons == (
        AbortReason.ASSUMPTION_VIOLATED,)
    noisy = decisions.lt3_decision(params, good, 0.2)
    assert AbortReason.QBER_ABOVE_THRESHOLD in noisy.reasons
    small = expected_counts(10**6, setup, eta=0.3, p_dep=0.02)
    assert decisions.lt3_decision(params, small, 0.01).reasons == (AbortReason.NO_SECRET_KEY,)


def test_block_params_check_the_lt3_calibration():
    with pytest.raises(BlockParamsError, match="alice_state_probabilities"):
        BlockParams(protocol="lt3", qber_tol=0.05, intensities=(0.5, 0.1, 0.0),
                    intensity_probabilities=(0.6, 0.2, 0.2))
    with pytest.raises(BlockParamsError, match="equally likely"):
        _lt3_params(alice_state_probabilities=(0.4, 0.3, 0.3))
    with pytest.raises(BlockParamsError, match="mu > nu > 0"):
        _lt3_params(intensities=(0.5, 0.1, 0.05))
    p = _lt3_params(bloch_vectors=((0.0, 1.0), (0.0, -1.0), (0.0, 1.0)))
    # collinear states are accepted as configuration but never give key
    assert decisions.lt3_key_length(p, expected_counts(10**12, decisions.lt3_setup(p),
                                                       eta=0.3, p_dep=0.0), 0).key_length == 0

"""Finite-key lengths against hand computation, monotonicity, the asymptotic limit, bad input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing import finite_key as fk


def h2(p):
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


# --- Tomamichel et al. 2012 --------------------------------------------------------------------

@pytest.mark.parametrize("n,k,q,leak,es,ec", [
    (100_000, 10_000, 0.02, 17_000.0, 1e-10, 1e-15),
    (1_000_000, 50_000, 0.033, 250_000.0, 1e-9, 1e-12),
    (20_000, 2_000, 0.01, 2_500.0, 1e-6, 1e-10),
])
def test_bb84_matches_hand_computation(n, k, q, leak, es, ec):
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / es))
    expected = math.floor(n * (1 - h2(q + mu)) - leak - math.log2(2 / (es * es * ec)))
    res = fk.bb84_key_length_result(n, k, q, leak, es, ec)
    assert res.key_length == expected > 0
    assert res.terms["mu"] == pytest.approx(mu, rel=1e-15)
    assert res.bound == fk.BOUND_TOMAMICHEL_2012
    assert (res.eps_sec, res.eps_cor) == (es, ec)
    assert fk.bb84_key_length(n, k, q, leak, es, ec) == expected


def test_bb84_first_point_by_numbers():
    # n = 1e5, k = 1e4, eps_sec = 1e-10: mu^2 = 1.1e5/1e9 * 1.0001 * ln(2e10) = 2.60777...e-3
    mu = fk.sampling_deviation(100_000, 10_000, 1e-10)
    assert mu ** 2 == pytest.approx(1.1e-4 * 1.0001 * 23.7189981105004, rel=1e-12)


def test_bb84_no_key_is_zero_not_negative():
    assert fk.bb84_key_length(1000, 100, 0.11, 500.0, 1e-10, 1e-15) == 0
    assert fk.bb84_key_length(10, 10, 0.0, 0.0, 1e-10, 1e-15) == 0


@given(n=st.integers(1_000, 10**7), k=st.integers(100, 10**6),
       q1=st.floats(0, 0.2), q2=st.floats(0, 0.2),
       leak1=st.floats(0, 1e6), leak2=st.floats(0, 1e6))
def test_bb84_monotone_and_nonnegative(n, k, q1, q2, leak1, leak2):
    q_lo, q_hi = sorted((q1, q2))
    l_lo, l_hi = sorted((leak1, leak2))
    ref = fk.bb84_key_length(n, k, q_lo, l_lo, 1e-10, 1e-12)
    assert ref >= 0
    assert fk.bb84_key_length(n, k, q_hi, l_lo, 1e-10, 1e-12) <= ref      # more errors
    assert fk.bb84_key_length(n, k, q_lo, l_hi, 1e-10, 1e-12) <= ref      # more leakage
    assert fk.bb84_key_length(n, k, q_lo, l_lo, 1e-14, 1e-12) <= ref      # stricter eps_sec


@pytest.mark.parametrize("kwargs,word", [
    (dict(n=0), "n=0"), (dict(k=0), "k=0"), (dict(k=-5), "k=-5"),
    (dict(eps_sec=0.0), "eps_sec"), (dict(eps_sec=1.0), "eps_sec"), (dict(eps_cor=2.0), "eps_cor"),
    (dict(qber_tol=-0.1), "qber_tol"), (dict(leak_ec=-1.0), "leak_ec"),
    (dict(leak_ec=float("nan")), "leak_ec"), (dict(n=10.5), "n=10.5"),
])
def test_bb84_rejects_bad_input(kwargs, word):
    args = dict(n=1000, k=100, qber_tol=0.02, leak_ec=100.0, eps_sec=1e-10, eps_cor=1e-12)
    args.update(kwargs)
    with pytest.raises(fk.FiniteKeyInputError, match=word.replace("(", r"\(")) as info:
        fk.bb84_key_length(**args)
    assert isinstance(info.value, ValueError)


# --- Lim et al. 2014 ---------------------------------------------------------------------------

def lim_by_hand(nx, nz, mz, mus, ps, es, ec, leak):
    """Straight transcription of Lim et al. 2014 eqs. (1)-(5), written apart from the module."""
    def pm(c):
        d = math.sqrt(sum(c) / 2 * math.log(21 / es))
        return ([math.exp(m) / p * (x - d) for x, m, p in zip(c, mus, ps)],
                [math.exp(m) / p * (x + d) for x, m, p in zip(c, mus, ps)])
    t0 = sum(p * math.exp(-m) for m, p in zip(mus, ps))
    t1 = sum(p * math.exp(-m) * m for m, p in zip(mus, ps))
    m1, m2, m3 = mus
    xl, xh = pm(nx)
    zl, zh = pm(nz)
    ml, mh = pm(mz)
    # Vacuum counts are >= 0, so max(0, bound) is still a lower bound (the module clips too;
    # it matters when the Hoeffding term exceeds the weakest intensity's counts).
    sx0 = max(0.0, t0 * (m2 * xl[2] - m3 * xh[1]) / (m2 - m3))
    sx1 = t1 * m1 * (xl[1] - xh[2] - (m2**2 - m3**2) / m1**2 * (xh[0] - sx0 / t0)) / (
        m1 * (m2 - m3) - m2**2 + m3**2)
    sz0 = max(0.0, t0 * (m2 * zl[2] - m3 * zh[1]) / (m2 - m3))
    sz1 = t1 * m1 * (zl[1] - zh[2] - (m2**2 - m3**2) / m1**2 * (zh[0] - sz0 / t0)) / (
        m1 * (m2 - m3) - m2**2 + m3**2)
    vz1 = t1 * (mh[1] - ml[2]) / (m2 - m3)
    b = vz1 / sz1
    c, d = sz1, sx1
    gamma = math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2))
                      * math.log2((c + d) / (c * d * (1 - b) * b) * 21**2 / es**2))
    phi = b + gamma
    return math.floor(sx0 + sx1 * (1 - h2(phi)) - leak - 6 * math.log2(21 / es)
                      - math.log2(2 / ec)), dict(s_x0=sx0, s_x1=sx1, s_z1=sz1, v_z1=vz1, phi_x=phi)


LIM_POINTS = [
    # counts of a 1e10-pulse run at ~25 km (GYS-like), and a bigger one with other intensities
    dict(nx=[1.6e7, 3.4e5, 5.0e2], nz=[1.6e7, 3.4e5, 5.0e2], mz=[5.4e5, 1.2e4, 2.4e2],
         mus=[0.5, 0.1, 0.0002], ps=[0.8, 0.1, 0.1], es=1e-10, ec=1e-15, leak=3.0e6),
    dict(nx=[4.0e8, 3.0e7, 2.0e4], nz=[3.0e7, 2.3e6, 1.5e3], mz=[6.0e5, 5.0e4, 7.0e2],
         mus=[0.6, 0.2, 0.001], ps=[0.7, 0.2, 0.1], es=1e-9, ec=1e-12, leak=6.0e7),
    # short link, many vacuum-intensity counts: no clipping anywhere
    dict(nx=[1.0e8, 2.0e7, 1.0e7], nz=[1.0e8, 2.0e7, 1.0e7], mz=[1.0e6, 3.0e5, 2.0e5],
         mus=[0.5, 0.15, 0.05], ps=[0.5, 0.25, 0.25], es=1e-10, ec=1e-15, leak=2.0e7),
]


@pytest.mark.parametrize("pt", LIM_POINTS)
def test_decoy_matches_hand_computation(pt):
    expected, t = lim_by_hand(pt["nx"], pt["nz"], pt["mz"], pt["mus"], pt["ps"], pt["es"],
                              pt["ec"], pt["leak"])
    res = fk.decoy_key_length_result(n_x=pt["nx"], n_z=pt["nz"], m_z=pt["mz"],
                                     intensities=pt["mus"], probabilities=pt["ps"],
                                     eps_sec=pt["es"], eps_cor=pt["ec"], leak_ec=pt["leak"])
    assert res.key_length == expected > 0
    for name, value in t.items():
        assert res.terms[name] == pytest.approx(value, rel=1e-12), name
    assert res.bound == fk.BOUND_LIM_2014 and res.eps_sec == pt["es"]
    if pt is LIM_POINTS[2]:
        assert t["s_x0"] > 0 and t["s_z1"] > 0  # the unclipped branch is exercised


def _gys_counts(n_pulses, mus=(0.5, 0.1, 0.0002), ps=(0.8, 0.1, 0.1), distance_km=25.0, f=1.22):
    """Expected counts of the GYS model (reference.md section 1), both bases chosen 50/50."""
    eta = 0.045 * 10 ** (-0.21 * distance_km / 10)
    y0, e_det = 1.7e-6, 0.033
    q_sift = 0.25  # Alice and Bob both pick X (key) or both Z (test)
    gain = [y0 + 1 - math.exp(-eta * m) for m in mus]
    err = [0.5 * y0 + e_det * (1 - math.exp(-eta * m)) for m in mus]
    n = [n_pulses * p * q_sift * g for p, g in zip(ps, gain)]
    m = [n_pulses * p * q_sift * e for p, e in zip(ps, err)]
    leak = sum(f * ni * h2(mi / ni) for ni, mi in zip(n, m))
    y1 = y0 + eta
    e1 = (0.5 * y0 + e_det * eta) / y1
    tau1 = sum(p * m_ * math.exp(-m_) for p, m_ in zip(ps, mus))
    # GLLP (reference.md section 1) with the same sifting factor and EC leak per pulse
    gllp = q_sift * tau1 * y1 * (1 - h2(e1)) - leak / n_pulses
    args = dict(n_x=n, n_z=n, m_z=m, intensities=mus, probabilities=ps, leak_ec=leak)
    return args, gllp


def test_decoy_approaches_gllp_from_below():
    rates = []
    for n_pulses in (1e9, 1e10, 1e11, 1e12, 1e14, 1e16):
        args, gllp = _gys_counts(n_pulses)
        ell = fk.decoy_key_length(eps_sec=1e-10, eps_cor=1e-15, **args)
        rates.append(ell / n_pulses)
        assert ell / n_pulses < gllp
    assert all(b >= a for a, b in zip(rates, rates[1:])) and rates[-1] > 0
    # Limit of the same bounds without fluctuation terms (eps -> 1 in spirit: delta = gamma = 0):
    # the three-intensity decoy bound itself, which must lie below GLLP's infinite-decoy rate.
    args, gllp = _gys_counts(1.0)
    mus, ps = args["intensities"], args["probabilities"]
    t0 = sum(p * math.exp(-m) for m, p in zip(mus, ps))
    t1 = sum(p * math.exp(-m) * m for m, p in zip(mus, ps))
    m1, m2, m3 = mus
    nn = [math.exp(m) / p * x for x, m, p in zip(args["n_x"], mus, ps)]
    mm = [math.exp(m) / p * x for x, m, p in zip(args["m_z"], mus, ps)]
    s0 = t0 * (m2 * nn[2] - m3 * nn[1]) / (m2 - m3)
    s1 = t1 * m1 * (nn[1] - nn[2] - (m2**2 - m3**2) / m1**2 * (nn[0] - s0 / t0)) / (
        m1 * (m2 - m3) - m2**2 + m3**2)
    v1 = t1 * (mm[1] - mm[2]) / (m2 - m3)
    limit = s0 + s1 * (1 - h2(v1 / s1)) - args["leak_ec"]
    assert rates[-1] < limit < gllp
    # at 1e16 pulses the finite-size terms are O(1/sqrt(N)) ~ 1e-8 relative: within 1 % of limit
    assert rates[-1] == pytest.approx(limit, rel=0.01)


@given(extra_err=st.floats(0, 2e4), extra_leak=st.floats(0, 1e6))
def test_decoy_monotone_in_errors_and_leak(extra_err, extra_leak):
    pt = LIM_POINTS[0]
    base = dict(n_x=pt["nx"], n_z=pt["nz"], intensities=pt["mus"], probabilities=pt["ps"],
                eps_sec=pt["es"], eps_cor=pt["ec"])
    ref = fk.decoy_key_length(m_z=pt["mz"], leak_ec=pt["leak"], **base)
    more_err = [pt["mz"][0] + extra_err, pt["mz"][1] + extra_err / 10, pt["mz"][2]]
    assert 0 <= fk.decoy_key_length(m_z=more_err, leak_ec=pt["leak"], **base) <= ref
    assert 0 <= fk.decoy_key_length(m_z=pt["mz"], leak_ec=pt["leak"] + extra_leak, **base) <= ref


def test_decoy_too_few_counts_gives_zero():
    args, _ = _gys_counts(1e6)
    assert fk.decoy_key_length(eps_sec=1e-10, eps_cor=1e-15, **args) == 0


@pytest.mark.parametrize("change,word", [
    (dict(intensities=[0.5, 0.4, 0.2]), "mu1 > mu2"),
    (dict(intensities=[0.5, 0.1, 0.1]), "mu2 > mu3"),
    (dict(probabilities=[0.5, 0.1, 0.1]), "sum to 1"),
    (dict(probabilities=[1.0, 0.0, 0.0]), "> 0"),
    (dict(n_x=[1.0, 2.0]), "3 values"),
    (dict(m_z=[2e7, 0, 0]), "exceeds n_z"),
    (dict(n_z=[-1.0, 0, 0]), "n_z"),
    (dict(eps_sec=0.0), "eps_sec"),
    (dict(eps_cor=1.5), "eps_cor"),
    (dict(leak_ec=-3.0), "leak_ec"),
])
def test_decoy_rejects_bad_input(change, word):
    pt = LIM_POINTS[0]
    args = dict(n_x=pt["nx"], n_z=pt["nz"], m_z=pt["mz"], intensities=pt["mus"],
                probabilities=pt["ps"], eps_sec=pt["es"], eps_cor=pt["ec"], leak_ec=pt["leak"])
    args.update(change)
    with pytest.raises(fk.FiniteKeyInputError, match=word):
        fk.decoy_key_length(**args)


# --- B92 conservative rule ---------------------------------------------------------------------

# Bob's efficiency so small that the loss-compensated USD charge is negligible (< 1e-9 of the
# key): isolates the other terms of the rule.
def test_binary_entropy_edges():
    assert fk.binary_entropy(0.0) == 0.0
    assert fk.binary_entropy(0.5) == 1.0 and fk.binary_entropy(0.7) == 1.0
    assert fk.binary_entropy(0.11) == pytest.approx(h2(0.11), rel=1e-15)


def test_result_to_dict_names_bound_and_eps():
    d = fk.bb84_key_length_result(10**5, 10**4, 0.02, 1e4, 1e-10, 1e-12).to_dict()
    assert d["bound"] == fk.BOUND_TOMAMICHEL_2012
    assert d["eps_sec"] == 1e-10 and d["eps_cor"] == 1e-12 and "mu" in d["terms"]



# --- B92: no key, whatever the statistics (no published proof covers the node's B92) --------

@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 10**9), k=st.integers(0, 10**8), q=st.floats(0, 0.5),
       y=st.floats(0, 1), m=st.floats(0, 1))
def test_b92_key_length_is_zero_for_any_statistics(n, k, q, y, m):
    res = fk.b92_key_length_result(n, k, q, 1e-10, 1e-12, conclusive_per_pulse=y,
                                   multi_click_fraction=m)
    assert res.key_length == 0 and res.bound == fk.BOUND_B92_NONE
    assert res.terms["conclusive_per_pulse"] == y and res.terms["multi_click_fraction"] == m


def test_usd_matches_bobs_click_rate_below_the_transmittance_limit():
    """Why B92 with weak coherent pulses has no key here (Tamaki & Lutkenhaus 2004's boundary,
    extended to coherent states): Eve's unambiguous-discrimination success per pulse,
    1 - exp(-mu (1 - s)) with s = |<H|D>| = 1/sqrt 2, is at least Bob's click probability
    1 - exp(-eta mu) for every mu exactly when eta <= 1 - s; the node's total transmittance at
    0 km (GYS: eta_Bob = 4.5 %) is far below that limit."""
    s = 1 / math.sqrt(2)
    assert fk.USD_SUCCESS_SINGLE_PHOTON == pytest.approx(1 - s, rel=1e-15)
    for mu in (1e-3, 0.1, 0.5, 1.0, 5.0):
        p_usd = -math.expm1(-mu * (1 - s))
        assert p_usd >= -math.expm1(-(1 - s) * mu) * (1 - 1e-15)   # equality at the limit
        assert p_usd > -math.expm1(-0.045 * mu)                    # GYS detector, 0 km
        assert p_usd < -math.expm1(-0.30 * mu)                     # just above the limit
    assert 0.045 < fk.USD_SUCCESS_SINGLE_PHOTON


def test_b92_assumptions_name_each_proof_and_what_the_node_misses():
    refs = " ".join(fk.B92_PROOF_ASSUMPTIONS)
    for ref in ("PRA 69, 032316", "PRA 80, 032302", "PRL 93, 120501", "1301.5083"):
        assert ref in refs
    assert all("Not met" in why for why in fk.B92_PROOF_ASSUMPTIONS.values())


@pytest.mark.parametrize("kw,word", [
    (dict(conclusive_per_pulse=-0.1), "conclusive_per_pulse"),
    (dict(multi_click_fraction=-1.0), "multi_click_fraction"),
    (dict(eps_sec=0.0), "eps_sec"),
])
def test_b92_rejects_bad_input(kw, word):
    args = dict(conclusive_per_pulse=1e-3, multi_click_fraction=0.0, eps_sec=1e-10)
    args.update(kw)
    with pytest.raises(fk.FiniteKeyInputError, match=word):
        fk.b92_key_length(1000, 100, 0.01, eps_cor=1e-12, **args)

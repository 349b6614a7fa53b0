"""The paper's model of the node's QBER test is the node's own decision, basis by basis, and
its analytic abort probability matches an independent evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from paper import binomial
from paper import qkd_first_key as fk
from paper.node_rules import QberRule, block_params, may_yield_key, p_abort_by_basis
from postprocessing import estimation as est
from postprocessing.block import decisions


def _node_aborts(rule: QberRule, errors, ks) -> bool:
    """The node's own verdict on a two-basis sample (QBER reasons and sample size only)."""
    n = [rule.key_bits_for(k) if k else 1 for k in ks]
    uppers = tuple(est.estimate_qber_upper(x, k, nb, rule.eps) if k else math.nan
                   for x, k, nb in zip(errors, ks, n))
    e = decisions.SampledEstimate(sum(n), sum(ks), sum(errors), tuple(ks), tuple(errors),
                                  tuple(n), tuple(x / k if k else math.nan
                                                  for x, k in zip(errors, ks)), uppers)
    reasons = decisions.sampled_decision(block_params(rule.protocol), e).reasons
    return bool({est.AbortReason.QBER_ABOVE_THRESHOLD, est.AbortReason.SAMPLE_TOO_SMALL}
                & set(reasons))


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_rule_agrees_with_the_nodes_decision(protocol):
    rule = QberRule.for_protocol(protocol)
    rng = np.random.default_rng(5)
    for _ in range(300):
        m = int(rng.integers(900, 6000))
        kz = int(rng.binomial(m, 0.5))
        ks = (kz, m - kz)
        errors = tuple(int(rng.binomial(k, rng.uniform(0, 0.12))) for k in ks)
        assert rule.aborts(errors, ks) == _node_aborts(rule, errors, ks), (ks, errors)


@pytest.mark.parametrize("protocol", ["bb84", "b92"])
def test_critical_table_is_the_boundary_of_the_rule(protocol):
    rule = QberRule.for_protocol(protocol)
    table = rule.critical_table(3000)
    assert table[0] == -1 and np.all(np.diff(table) >= 0)
    for k in (1, 50, 400, 999, 1500, 3000):
        c = int(table[k])
        if c >= 0:
            assert rule.basis_passes(c, k)
        assert not rule.basis_passes(c + 1, k)
    # B92's ceiling is below BB84's threshold, so B92 tolerates fewer errors per sample
    assert rule.threshold <= QberRule.for_protocol("bb84").threshold


def test_analytic_abort_probability_by_direct_enumeration():
    # independent evaluation: sum over every (k_Z, E_Z, E_X) with exact binomial pmfs
    rule = QberRule.for_protocol("bb84")
    m, p_z, e_z, e_x = 1200, 0.47, 0.015, 0.03
    table = rule.critical_table(m)
    accept = 0.0
    for kz in range(m + 1):
        w = math.exp(math.lgamma(m + 1) - math.lgamma(kz + 1) - math.lgamma(m - kz + 1)
                     + kz * math.log(p_z) + (m - kz) * math.log1p(-p_z))
        if w < 1e-40 or kz in (0, m):
            continue
        a_z = sum(math.comb(kz, x) * e_z**x * (1 - e_z) ** (kz - x)
                  for x in range(int(table[kz]) + 1))
        a_x = sum(math.comb(m - kz, x) * e_x**x * (1 - e_x) ** (m - kz - x)
                  for x in range(int(table[m - kz]) + 1))
        accept += w * a_z * a_x
    assert p_abort_by_basis(rule, m, p_z, e_z, e_x, table) == pytest.approx(1 - accept,
                                                                             abs=1e-9)
    assert p_abort_by_basis(rule, rule.min_sample_size - 1, p_z, e_z, e_x) == 1.0
    assert binomial.cdf(-1, 10, 0.1) == 0.0


def test_b92_is_refused_key_and_its_search_stops_at_one_block():
    assert may_yield_key("bb84") and not may_yield_key("b92")
    case = next(c for c in fk.cases() if c.protocol == "b92" and c.overrides)
    r = fk.first_key(case, 5.0, 256, max_events=1e6, seed=2, log=lambda _m: None)
    assert not r.found and r.never == fk.REFUSED and len(r.attempts) == 1
    assert r.attempts[0]["key_bits"] == 0 and "no_security_proof" in r.attempts[0]["reasons"]

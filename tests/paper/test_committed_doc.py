"""The committed document is what the command renders from the committed results, and it says
what the node does: B92 yields no key, every modulus factors as p q = n, every analytic point
lies within its simulated interval.

These read docs/paper-results.json and docs/paper-comparison.md as committed by `make paper`;
a hand edit of either, or a report change without a rerun, fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paper import binomial, report
from paper.qkd_first_key import REFUSED

DOCS = Path(__file__).resolve().parents[2] / "docs"
ALPHA = 1e-3


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((DOCS / "paper-results.json").read_text())


@pytest.fixture(scope="module")
def doc() -> str:
    return (DOCS / "paper-comparison.md").read_text()


def test_the_committed_document_is_the_rendering_of_the_committed_results(results, doc):
    assert not results["meta"]["quick"], "the committed results must come from a full run"
    assert report.render(results) == doc
    for rows in (report.paper_table_rows(results), report.readings_rows(results),
                 report.curve_rows(results), report.first_key_rows(results),
                 report.rsa_rows(results), report.extrapolation_rows(results)):
        assert rows
        for row in rows:
            assert report.table_line(row) in doc


def test_every_committed_modulus_is_p_times_q(results):
    for size in results["rsa"]:
        assert size["factored"] == size["count"] == len(size["moduli"])
        for n, p, q in size["moduli"]:
            n, p, q = int(n), int(p), int(q)
            assert p * q == n and 1 < p < q
            assert n.bit_length() == size["bits"]


def test_committed_curves_agree_with_their_analytic_values(results):
    # Each simulated point is a count x of `blocks` independent blocks. Its exact
    # Clopper-Pearson interval at level 1 - ALPHA/K (K = points) holds the true value for all K
    # points at once with probability >= 1 - ALPHA (Bonferroni), so a right analytic curve
    # fails this with probability <= ALPHA. Counts are recovered from the stored fractions.
    points = [(a["label"], c, j) for a in results["detection"] for c in a["curves"]
              for j in range(len(c["bits"]))]
    level = ALPHA / len(points)
    for label, c, j in points:
        x = round(c["simulated"][j] * c["blocks"])
        assert math.isclose(x / c["blocks"], c["simulated"][j], abs_tol=1e-12)
        lo, hi = binomial.clopper_pearson(x, c["blocks"], level)
        assert lo <= c["analytic"][j] <= hi, (label, c["test"], c["bits"][j])


def test_the_document_reports_zero_b92_key(results, doc):
    node = results["meta"]["node"]
    assert node["b92_yields_key"] is False
    b92 = [r for r in results["first_key"] if r["protocol"] == "b92"]
    assert b92 and all(not r["found"] and r["key_bits"] is None for r in b92)
    assert all(r["never"] == REFUSED for r in b92)
    # every B92 block the search ran was granted 0 bits, with the node's refusal among its reasons
    attempts = [a for r in b92 for a in r["attempts"]]
    assert attempts and all(a["key_bits"] == 0 and "no_security_proof" in a["reasons"]
                            for a in attempts)
    assert "**B92 yields no key under the node's rule.**" in doc
    assert "B92 reaches no distance at all" in doc
    # no table row gives B92 a pulse count, a key length or a time
    for line in doc.splitlines():
        if line.startswith("| B92") or line.startswith("| QKD B92 ("):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if len(cells) == 8:                 # the first-key table
                assert cells[3].startswith("none: the node grants this protocol no key")
                assert cells[4:] == ["—"] * 4
            elif "secret key" in cells[0]:      # the paper's table
                assert cells[1] == "—" and cells[2].startswith("none:")
    # decoy BB84's figures are given instead
    bb = [r for r in results["first_key"] if r["case"] == "decoy BB84" and r["found"]]
    assert bb and all(r["key_bits"] >= r["target_bits"] for r in bb)
    assert {r["target_bits"] for r in bb} == {256, 1_000_000}


def test_the_honest_reading_matches_the_measurements(results, doc):
    node = results["meta"]["node"]
    # "B92 tolerates less noise than BB84": the node's own thresholds say so
    assert node["qber_threshold_b92"] < node["qber_threshold_bb84"]
    # the GYS optics alone put B92's measured QBER above its ceiling, and decoy BB84's below
    gys_b92 = [r["last_qber"] for r in results["first_key"] if r["case"] == "B92 (GYS optics)"]
    bb = [r["last_qber"] for r in results["first_key"] if r["case"] == "decoy BB84"]
    assert gys_b92 and min(gys_b92) > node["qber_threshold_b92"]
    assert bb and max(bb) < node["qber_threshold_b92"] < node["qber_threshold_bb84"]
    # the node's USD argument: its total transmittance is below the single-photon limit
    assert node["eta_total_0km"] < node["b92_usd_limit"]
    # the honest B92 alarm fires on every simulated sample, as the text says it must below
    # twice the clean basis sample
    honest = next(a for a in results["detection"] if a["protocol"] == "b92"
                  and a["model"] == "none")
    alarm = next(c for c in honest["curves"] if c["test"] == "node rule")
    assert max(alarm["bits"]) < 2 * node["clean_basis_sample"]["b92"]
    assert all(s == 1.0 for s in alarm["simulated"])
    for phrase in ("authenticated classical channel", "Shor's algorithm",
                   "harvest now, decrypt later", 'What "success" means on each side',
                   "B92 tolerates *less* noise than BB84"):
        assert phrase in doc


def test_the_papers_317_s_is_placed_by_the_measurements(results):
    bits = report.paper_equivalent_bits(results)
    totals = sorted((r["bits"], r["total_s"] * 100 / r["count"]) for r in results["rsa"])
    above = [b for b, t in totals if t >= 317.0]
    below = [b for b, t in totals if t <= 317.0]
    if above:
        assert max(below, default=0) <= bits <= min(above)
    else:
        assert bits > totals[-1][0]
    assert f"about {bits:.0f} bits on this machine" in report.render(results)
    # log-linear between two bracketing sizes: 100 s at 100 bits, 1000 s at 120 bits
    two = {"rsa": [{"bits": 100, "count": 100, "total_s": 100.0},
                   {"bits": 120, "count": 100, "total_s": 1000.0}]}
    assert report.paper_equivalent_bits(two) == pytest.approx(100 + 20 * math.log10(3.17))

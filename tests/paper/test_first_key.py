"""The first-key search follows the node's protocol list and never hides a failure as a figure."""

from __future__ import annotations

from paper import qkd_first_key as fk
from postprocessing import distill as dist


def test_cases_follow_the_protocols_the_node_lists(monkeypatch):
    names = [c.protocol for c in fk.cases()]
    assert names[0] == "bb84" and names.count("b92") == 2
    monkeypatch.setattr(dist, "PROTOCOLS", ("bb84",))
    assert [c.protocol for c in fk.cases()] == ["bb84"]


def test_a_protocol_the_run_does_not_feed_is_named_in_the_document(monkeypatch):
    from paper import report
    results = {"first_key": [{"protocol": "bb84"}, {"protocol": "b92"}],
               "meta": {"node": {"protocols": ["bb84", "b92", "lt3"]}}}
    assert "`lt3`" in report.unmeasured_line(results)
    results["meta"]["node"]["protocols"] = ["bb84", "b92"]
    assert report.unmeasured_line(results) == ""


def test_a_protocol_that_cannot_run_is_reported_not_raised(monkeypatch):
    case = fk.Case("made-up", "no-such-protocol", {}, True)
    r = fk.first_key(case, 10.0, 256, max_events=1e5, seed=1, log=lambda _m: None)
    assert not r.found and r.pulses is None
    assert r.error.startswith("the simulator cannot run it")


def test_b92_on_gys_optics_gets_no_key_and_says_why():
    # GYS misalignment puts B92's QBER near 6 %: whatever the node's B92 rule, no 256-bit key
    case = next(c for c in fk.cases() if c.protocol == "b92" and not c.overrides)
    r = fk.first_key(case, 10.0, 256, max_events=1e6, seed=3, log=lambda _m: None)
    assert not r.found and r.pulses is None
    assert r.never or r.error or r.last_reasons


def test_a_qber_far_above_the_threshold_ends_the_search():
    thr = fk.QberRule.for_protocol("bb84").threshold
    case = fk.cases()[0]
    # 3 sigma of a 10^4-bit sample at q ~ thr is ~0.01: 0.05 above is decisive, 0.001 is not
    far = fk.Attempt(10**8, 0, float("nan"), 0.1, True, ["qber_above_threshold"], thr + 0.05,
                     10_000)
    near = fk.Attempt(10**8, 0, float("nan"), 0.1, True, ["qber_above_threshold"], thr + 0.001,
                      10_000)
    assert fk._why_never(case, [far]).startswith("sample QBER")
    assert fk._why_never(case, [near]) == ""

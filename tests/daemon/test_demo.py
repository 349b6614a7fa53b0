"""`make demo` end to end: simulated hardware on loopback, drivers by URL, keys at both ends."""

from daemon import demo


def test_demo_agrees_keys_and_catches_both_attacks(capsys):
    assert demo.main(["--seed", "11"]) == 0
    out = capsys.readouterr().out
    bb84, b92 = out.split("== B92", 1)
    assert "identical at both ends: yes" in bb84 and "Lim-Curty" in bb84
    assert "ABORTED: qber_above_threshold" in bb84
    honest_b92, attacked_b92 = b92.split("== B92", 1)
    assert "ABORTED: no_security_proof" in honest_b92 and "secret key:" not in b92
    assert "conclusive_yield_drop" in attacked_b92


def test_cli_passes_demo_flags_through(capsys):
    from daemon import cli
    assert cli.main(["demo", "--pulses", "10"]) == 2
    assert "pulses = 10" in capsys.readouterr().err


def test_demo_rejects_a_bad_block_size(capsys):
    assert demo.main(["--pulses", "10"]) == 2
    assert "pulses" in capsys.readouterr().err


def test_demo_rejects_a_negative_distance(capsys):
    assert demo.main(["--distance-km", "-5"]) == 2
    assert "distance_km" in capsys.readouterr().err


# -- issue 7: bad input, and what "detected" may mean ------------------------------------------

import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.parametrize("argv, fragment", [
    (["--seed", "-1", "--pulses", "1e6"], "seed = -1 is outside the accepted range"),
    (["--seed", str(2**63), "--pulses", "1e6"], "seed = 9223372036854775808 is outside"),
    (["--seed", "1e30"], "seed = 1000000000000000019884624838656 is outside"),
    (["--pulses", "inf"], "pulses = 'inf' is not a finite number"),
    (["--pulses", "nan"], "pulses = 'nan' is not a finite number"),
    (["--pulses", "1e300"], "pulses = 1e+300 is outside"),
    (["--distance-km", "inf"], "distance_km = 'inf' is not a finite number"),
    (["--distance-km", "1e300"], "distance_km = 1e+300 km is outside"),
])
def test_bad_numbers_are_one_line_usage_errors(capsys, argv, fragment):
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1


# Blocks that fail for reasons other than an attack must not count as a detection.
@pytest.mark.parametrize("reasons, verdict", [
    (["qber_above_threshold"], "detected"),
    (["conclusive_yield_drop"], "detected"),
    (["qber_above_threshold", "conclusive_yield_drop"], "detected"),
    (["sample_too_small", "qber_above_threshold"], "detected"),
    (["too_few_sifted_bits"], "undetermined"),
    (["sample_too_small"], "undetermined"),
    (["reconciliation_failed"], "undetermined"),
    (["verification_failed"], "undetermined"),
    (["no_secret_key"], "undetermined"),
])
def test_only_a_measured_signature_is_a_detection(reasons, verdict):
    assert demo.attack_verdict(demo.BlockOutcome(False, True, reasons)) == verdict


def test_a_key_under_attack_is_a_miss():
    assert demo.attack_verdict(demo.BlockOutcome(True, False, [])) == "missed"


def test_summary_says_undetermined_not_yes_when_the_attacked_block_lacked_bits():
    too_few = demo.BlockOutcome(False, True, ["too_few_sifted_bits"])
    text = demo.summary(too_few, too_few, demo.BlockOutcome(True, False),
                        demo.BlockOutcome(False, True, ["conclusive_yield_drop"]))
    assert "intercept-resend detected: not determined" in text
    assert "key agreed without Eve: no (too_few_sifted_bits)" in text
    assert "unambiguous-discrimination attack detected: yes (conclusive_yield_drop)" in text


def test_estimate_line_never_prints_nan_and_gives_bound_and_threshold():
    none = SimpleNamespace(sample_bits=0, qber_estimate=math.nan, qber_upper=math.nan)
    assert "nan" not in demo._format_estimate(none, 0.11)
    s = SimpleNamespace(sample_bits=3861, qber_estimate=0.0028, qber_upper=0.131)
    assert demo._format_estimate(s, 0.11) == ("QBER 0.28% in a 3,861-bit sample, finite-size "
                                              "upper bound 13.10% > threshold 11.00%")


def test_attack_at_1000_km_is_undetermined_not_detected(capsys):
    """The reproduction from the issue: at 1000 km the attacked block has too few bits."""
    from sim_backend.params import LinkParams
    attacked = LinkParams.preset("gys", distance_km=1000, eve="intercept-resend",
                                 eve_fraction=1.0)
    outcome = demo.run_block(attacked, 1_000_000, seed=5)
    assert outcome.aborted and not outcome.attack_signature
    assert demo.attack_verdict(outcome) == "undetermined"
    out = capsys.readouterr().out
    assert "nan" not in out and "e+" not in out        # counts are printed as integers


def test_help_states_ranges_defaults_and_bb84_only_distance(capsys):
    assert demo.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "fibre length of the BB84 scenes in km, [0, 1000] (default 10)" in text
    assert "the B92 scenes always run at 5 km" in text
    assert "[1e+06, 2e+10] (default 2e+09" in text and "[0, 2^63 - 4]" in text

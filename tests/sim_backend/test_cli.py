"""``qkd-node sim``: JSON report, readable table, exit code 2 with a message for bad flags."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from daemon.cli import main as qkd_node_main
from sim_backend.cli import main

PHYSICAL_KEYS = ("mu", "nu1", "nu2", "distance_km", "loss_db_per_km", "detector_efficiency",
                 "dark_count_probability", "misalignment", "dead_time_ns", "clock_hz")


def run_json(capsys, *argv) -> dict:
    assert main(["run", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1                              # exactly one JSON object
    return json.loads(out)


def test_bb84_json_report(capsys):
    r = run_json(capsys, "--protocol", "bb84", "--distance-km", "20", "--pulses", "2e7",
                 "--seed", "7")
    for key in ("pulses", "detections", "detection_probability", "sifted_bits", "qber",
                "intensities", "expected", "seed", *PHYSICAL_KEYS):
        assert key in r, key
    assert r["pulses"] == 20_000_000 and r["distance_km"] == 20.0 and r["seed"] == 7
    assert r["detection_probability"] == r["detections"] / r["pulses"]
    assert set(r["intensities"]) == {"signal", "decoy1", "decoy2"}
    sig = r["intensities"]["signal"]
    for key in ("gain", "error_rate", "expected_gain", "expected_error_rate"):
        assert key in sig
    # Measured gain within 5 binomial sigma of the expectation printed beside it.
    n = sig["pulses"]
    q = sig["expected_gain"]
    assert abs(sig["gain"] - q) <= 5 * math.sqrt(q * (1 - q) / n)
    assert r["expected"]["decoy_key_rate_per_pulse"] > 0
    assert "conclusive_fraction" not in r


def test_same_seed_same_report(capsys):
    a = run_json(capsys, "--pulses", "1e6", "--seed", "3", "--distance-km", "0")
    b = run_json(capsys, "--pulses", "1e6", "--seed", "3", "--distance-km", "0")
    assert (a["detections"], a["errors"]) == (b["detections"], b["errors"])


def test_b92_with_eve_and_overrides(capsys):
    r = run_json(capsys, "--protocol", "b92", "--distance-km", "0", "--pulses", "2e6",
                 "--eve", "intercept-resend", "--mu", "0.3", "--misalignment", "0",
                 "--dark-count-probability", "0", "--p-signal", "1", "--p-decoy1", "0",
                 "--seed", "1")
    assert r["mu"] == 0.3 and r["eve"] == "intercept-resend" and r["eve_fraction"] == 1.0
    assert r["expected"]["eve_ideal_optics"]["qber"] == pytest.approx(1 / 3)
    assert r["expected"]["eve_ideal_optics"]["conclusive_fraction"] == pytest.approx(0.375)
    sifted = r["sifted_bits"]
    assert abs(r["qber"] - 1 / 3) <= 5 * math.sqrt((1 / 3) * (2 / 3) / sifted)
    assert abs(r["conclusive_fraction"] - 0.375) <= 5 * math.sqrt(
        0.375 * 0.625 / r["detections"])


def test_table_output(capsys):
    assert main(["run", "--pulses", "1e6", "--seed", "2", "--protocol", "b92"]) == 0
    out = capsys.readouterr().out
    assert "B92 link" in out and "conclusive fraction" in out and "measured" in out
    assert "misalignment=0.033" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--pulses", "0"], "pulses = 0"),
    (["--pulses", "-5"], "pulses = -5"),
    (["--pulses", "1e6", "--distance-km", "-1"], "distance_km = -1.0 km"),
    (["--pulses", "1e6", "--mu", "0"], "mu = 0.0"),
    (["--pulses", "1e6", "--protocol", "e91"], "protocol = 'e91' is not one of bb84, b92"),
    (["--pulses", "1e6", "--eve", "intercept-resend", "--eve-fraction", "1.2"],
     "eve_fraction = 1.2 is outside the accepted range [0, 1]"),
    (["--pulses", "1e6", "--eve", "trojan"], "eve = 'trojan'"),
    (["--pulses", "1e6", "--eve", "usd"], "B92 states only"),
    (["--pulses", "many"], "pulses = 'many' is not a number"),
    (["--pulses", "1.5"], "pulses = '1.5' is not an integer"),
    (["--pulses", "1e6", "--preset", "nope"], "preset = 'nope'"),
    (["--pulses", "1e6", "--clock-drift-ppm", "50"], "clock_drift_ppm = 50.0 ppm"),
    (["--pulses", "1e6", "--seed", "-1"], "seed = -1"),
    ([], "--pulses"),
    (["--pulses", "1e6", "--frobnicate"], "--frobnicate"),
    # issue 7: non-finite and huge numbers, and flags that need another flag
    (["--pulses", "inf"], "pulses = 'inf' is not a finite number"),
    (["--pulses", "nan"], "pulses = 'nan' is not a finite number"),
    (["--pulses", "1e14"], "pulses = 100000000000000 is outside"),
    (["--pulses", "1e400"], "pulses = '1e400' is not a finite number"),
    (["--pulses", "1e6", "--seed", "1e30"], "seed = 1000000000000000019884624838656 is outside"),
    (["--pulses", "1e6", "--seed", str(2**63)], f"seed = {2**63} is outside the accepted range"),
    (["--pulses", "1e6", "--seed", "inf"], "seed = 'inf' is not a finite number"),
    (["--pulses", "1e6", "--distance-km", "inf"], "distance_km = 'inf' is not a finite number"),
    (["--pulses", "1e6", "--distance-km", "1e300"], "distance_km = 1e+300 km is outside"),
    (["--pulses", "1e6", "--mu", "nan"], "mu = 'nan' is not a finite number"),
    (["--pulses", "1e6", "--clock-hz", "1e300"], "clock_hz = 1e+300 Hz is outside"),
    (["--pulses", "1e6", "--dead-time-ns=-inf"], "dead_time_ns = '-inf' is not a finite"),
    (["--pulses", "1e6", "--sync-period", "1e300"], "sync_period = 1"),
    (["--pulses", "1e6", "--eve-fraction", "0.5"], "--eve-fraction 0.5 needs an eavesdropper"),
    (["--pulses", "1e6", "--mu", "0.05"], "nu1 is preset gys's value, and its range follows "
                                           "from --mu 0.05; set --nu1 too"),
])
def test_bad_flags_exit_2_with_a_message(capsys, argv, fragment):
    assert main(["run", *argv]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_no_command_and_help():
    assert main([]) == 2
    assert main(["run", "--help"]) == 0


def test_help_gives_unit_range_and_default_of_every_option(capsys):
    """Every link flag's help names its range and its default (issue 7, first hour)."""
    from sim_backend.cli import build_parser
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    for action in run._actions:
        if action.dest in ("help", "json", "pulses", "protocol", "eve", "preset"):
            continue
        assert "default" in action.help, action.dest
        assert "[" in action.help or "(" in action.help, action.dest     # a range


def test_json_counts_are_integers(capsys):
    r = run_json(capsys, "--pulses", "1e8", "--seed", "1", "--distance-km", "200")
    for name, stats in r["intensities"].items():
        assert isinstance(stats["pulses"], int), name
    assert r["p_decoy2"] == 0.1


def test_serve_is_delegated_lazily(monkeypatch):
    seen = []
    fake = types.ModuleType("sim_backend.serve")
    fake.main = lambda args: seen.append(list(args)) or 0
    monkeypatch.setitem(sys.modules, "sim_backend.serve", fake)
    assert main(["serve", "--config", "x.toml", "--verbose"]) == 0
    assert seen == [["--config", "x.toml", "--verbose"]]


def test_qkd_node_dispatches_sim(capsys):
    assert qkd_node_main(["sim", "run", "--pulses", "1e5", "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pulses"] == 100_000


def test_usd_multiphoton_run_reports_the_exact_expectation(capsys):
    r = run_json(capsys, "--protocol", "b92", "--distance-km", "2", "--pulses", "2e7",
                 "--eve", "usd-multiphoton", "--eve-resend-photons", "3", "--eve-bypass-fibre",
                 "--mu", "0.1", "--misalignment", "0.002", "--seed", "4")
    assert (r["eve"], r["eve_resend_photons"], r["eve_bypass_fibre"]) == ("usd-multiphoton", 3,
                                                                          True)
    exp = r["expected"]["usd_multiphoton"]
    # conclusive count within 5 binomial sigma (plus 2e-3 for the first-order dead time)
    n, y = r["pulses"], exp["conclusive_per_pulse"]
    assert abs(r["sifted_bits"] - n * y) <= 5 * math.sqrt(n * y) + 2e-3 * n * y
    assert 0 < r["eve_known_sifted"] <= r["sifted_bits"]


@pytest.mark.parametrize("argv, fragment", [
    (["--eve-resend-photons", "0"], "eve_resend_photons = 0 photons is outside"),
    (["--eve-resend-photons", "2.5"], "is not an integer"),
    (["--eve-resend-mu", "101"], "eve_resend_mu = 101.0 photons/pulse is outside"),
    (["--eve-resend-photons", "3", "--eve-resend-mu", "2"], "not both"),
])
def test_bad_usd_multiphoton_flags_exit_2(capsys, argv, fragment):
    assert main(["run", "--protocol", "b92", "--eve", "usd-multiphoton", "--pulses", "1e6",
                 *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_documents_the_resend_flags(capsys):
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usd-multiphoton" in out
    assert "integer in [1, 50] (default 1)" in out
    assert "photons/pulse in (0, 100] (default 0: the Fock state)" in out
    assert "--eve-bypass-fibre" in out

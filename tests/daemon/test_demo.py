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

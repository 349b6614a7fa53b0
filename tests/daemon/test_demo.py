"""`make demo` end to end: simulated hardware on loopback, drivers by URL, keys at both ends."""

from daemon import demo


def test_demo_agrees_a_key_and_catches_intercept_resend(capsys):
    assert demo.main(["--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "identical at both ends: yes" in out
    assert "ABORTED: qber_above_threshold" in out


def test_demo_rejects_a_bad_block_size(capsys):
    assert demo.main(["--pulses", "10"]) == 2
    assert "pulses" in capsys.readouterr().err


def test_demo_rejects_a_negative_distance(capsys):
    assert demo.main(["--distance-km", "-5"]) == 2
    assert "distance_km" in capsys.readouterr().err

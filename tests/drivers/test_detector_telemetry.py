"""blinding_indicators on synthetic telemetry: which readings alarm, and which window they name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.detector.telemetry import (BlindingLimits, BlindingLimitsError, Indicator, Telemetry,
                                        blinding_indicators)

LIMITS = BlindingLimits(photocurrent_ceiling_ua=1.0, max_bias_sag_v=2.0,
                        click_rate_ceiling_hz=1e6, click_rate_floor_hz=100.0)


def reading(t, *, rate=(1000.0, 1000.0), bias=(50.0, 50.0), current=(0.01, 0.01),
            setpoint=50.0):
    n = len(rate)
    return Telemetry(timestamp_s=float(t), counts=tuple(range(n)), count_rate_hz=tuple(rate),
                     bias_setpoint_v=setpoint, bias_v=tuple(bias),
                     photocurrent_ua=tuple(current), temperature_c=(-50.0,) * n)


def test_clean_history_raises_no_alarm():
    history = [reading(t) for t in range(5)]
    assert blinding_indicators(history, LIMITS) == []
    assert blinding_indicators([], LIMITS) == []


def test_blinding_episode_flags_photocurrent_and_bias_sag_with_the_surrounding_window():
    # Readings at t = 0..5 s; channel 1 is blinded during readings 2 and 3 (t = 2, 3 s).
    blinded = dict(current=(0.01, 35.0), bias=(50.0, 41.5))
    history = [reading(0), reading(1), reading(2, **blinded),
               reading(3, current=(0.01, 40.0), bias=(50.0, 40.0)), reading(4), reading(5)]
    alarms = blinding_indicators(history, LIMITS)
    assert [(a.indicator, a.channel) for a in alarms] == [
        (Indicator.PHOTOCURRENT_HIGH, 1), (Indicator.BIAS_SAG, 1)]
    current, sag = alarms
    # The suspect window runs from the last clean reading (t=1) to the first clean one (t=4).
    assert (current.start_s, current.end_s, current.ongoing) == (1.0, 4.0, False)
    assert (sag.start_s, sag.end_s, sag.n_readings) == (1.0, 4.0, 2)
    assert current.worst_value == 40.0 and current.limit == 1.0
    assert sag.worst_value == pytest.approx(10.0) and sag.limit == 2.0
    assert "photocurrent_high on channel 1" in str(current)


def test_bias_sag_is_measured_against_the_setpoint_not_an_absolute_level():
    # 45 V is fine when the set-point is 45 V, a 5 V sag when it is 50 V.
    assert blinding_indicators([reading(0, bias=(45.0, 45.0), setpoint=45.0)], LIMITS) == []
    alarms = blinding_indicators([reading(0, bias=(45.0, 50.0), setpoint=50.0)], LIMITS)
    assert [(a.indicator, a.channel, a.worst_value) for a in alarms] == [
        (Indicator.BIAS_SAG, 0, 5.0)]


def test_click_rate_ceiling_and_floor():
    history = [reading(0, rate=(2e6, 1000.0)), reading(1, rate=(3e6, 5.0)),
               reading(2, rate=(1000.0, 1000.0))]
    alarms = blinding_indicators(history, LIMITS)
    assert [(a.indicator, a.channel, a.worst_value, a.n_readings) for a in alarms] == [
        (Indicator.CLICK_RATE_HIGH, 0, 3e6, 2), (Indicator.CLICK_RATE_LOW, 1, 5.0, 1)]
    # The history starts inside the high-rate run: its window starts at its own first reading.
    assert (alarms[0].start_s, alarms[0].end_s) == (0.0, 2.0)
    # The floor check is off when no floor is given (e.g. while the link is not acquiring).
    no_floor = BlindingLimits(click_rate_ceiling_hz=1e6)
    assert [a.indicator for a in blinding_indicators(history, no_floor)] == [
        Indicator.CLICK_RATE_HIGH]


def test_run_still_open_at_the_end_is_ongoing_and_two_runs_make_two_alarms():
    bright = dict(current=(5.0, 0.01))
    history = [reading(0, **bright), reading(1), reading(2, **bright), reading(3, **bright)]
    alarms = blinding_indicators(history, LIMITS)
    assert [(a.start_s, a.end_s, a.ongoing, a.n_readings) for a in alarms] == [
        (0.0, 1.0, False, 1), (1.0, 3.0, True, 2)]


def test_limits_and_history_are_validated():
    with pytest.raises(BlindingLimitsError, match="photocurrent_ceiling_ua=-1"):
        BlindingLimits(photocurrent_ceiling_ua=-1)
    with pytest.raises(BlindingLimitsError, match="click_rate_floor_hz=2000000.0"):
        BlindingLimits(click_rate_ceiling_hz=1e6, click_rate_floor_hz=2e6)
    with pytest.raises(ValueError, match="time order"):
        blinding_indicators([reading(1), reading(0)], LIMITS)
    with pytest.raises(ValueError, match="channels"):
        blinding_indicators([reading(0), reading(1, rate=(1.0,), bias=(50.0,),
                                                   current=(0.0,))], LIMITS)


# -- property: alarms cover exactly the violating readings ---------------------------------------

values = st.tuples(st.floats(0.0, 3.0), st.floats(45.0, 51.0), st.floats(0.0, 2e6))


@given(st.lists(values, min_size=1, max_size=30))
def test_alarms_cover_exactly_the_readings_that_break_a_limit(samples):
    history = [reading(t, current=(c, 0.0), bias=(b, 50.0), rate=(r, 1000.0))
               for t, (c, b, r) in enumerate(samples)]
    alarms = blinding_indicators(history, LIMITS)
    broken = {
        Indicator.PHOTOCURRENT_HIGH: [c > 1.0 for c, _, _ in samples],
        Indicator.BIAS_SAG: [50.0 - b > 2.0 for _, b, _ in samples],
        Indicator.CLICK_RATE_HIGH: [r > 1e6 for _, _, r in samples],
        Indicator.CLICK_RATE_LOW: [r < 100.0 for _, _, r in samples],
    }
    for indicator, flags in broken.items():
        mine = [a for a in alarms if a.indicator is indicator]
        assert all(a.channel == 0 for a in mine)
        covered = [False] * len(samples)
        for a in mine:
            first = next(k for k in range(len(samples)) if a.start_s <= k and flags[k])
            run = range(first, first + a.n_readings)
            assert all(flags[k] for k in run)
            for k in run:
                assert not covered[k]
                covered[k] = True
            # The window reaches the neighbouring clean readings, never beyond them.
            assert a.start_s == max(first - 1, 0)
            assert a.end_s == (run[-1] if a.ongoing else run[-1] + 1)
        assert covered == flags


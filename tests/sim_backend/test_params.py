"""LinkParams: validation names the value and its range; presets; JSON-ready dict."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim_backend.params import PRESETS, LinkParams, ParameterError


def test_gys_preset_carries_the_reference_values():
    p = LinkParams.preset("gys")
    # docs/physics.md section 1: alpha 0.21 dB/km, e_det 3.3 %, Y0 1.7e-6, eta_Bob 4.5 %.
    assert (p.loss_db_per_km, p.misalignment, p.dark_count_probability,
            p.detector_efficiency) == (0.21, 0.033, 1.7e-6, 0.045)
    assert p.clock_hz == 1e9
    assert p.transmittance == pytest.approx(0.045 * 10 ** (-0.21 * p.distance_km / 10))


def test_preset_overrides_and_unknowns():
    p = LinkParams.preset("gys", distance_km=80.0, protocol="b92")
    assert (p.distance_km, p.protocol) == (80.0, "b92")
    with pytest.raises(ParameterError, match="preset = 'nope'"):
        LinkParams.preset("nope")
    with pytest.raises(ParameterError, match="distance_kms"):
        LinkParams.preset("gys", distance_kms=3.0)


@pytest.mark.parametrize("field, value, fragment", [
    ("distance_km", -1.0, "distance_km = -1.0 km is outside the accepted range [0, 1000]"),
    ("mu", 0.0, "mu = 0.0"),
    ("mu", -0.5, "(0, 100]"),
    ("nu1", 0.7, "nu1 = 0.7"),
    ("nu2", 0.2, "nu2 = 0.2"),
    ("protocol", "e91", "protocol = 'e91' is not one of bb84, b92"),
    ("eve", "photon-splitting", "eve = 'photon-splitting'"),
    ("eve_fraction", 1.5, "eve_fraction = 1.5 is outside the accepted range [0, 1]"),
    ("eve_fraction", -0.1, "eve_fraction = -0.1"),
    ("misalignment", 0.6, "misalignment = 0.6"),
    ("dark_count_probability", -1e-6, "dark_count_probability"),
    ("detector_efficiency", 0.0, "detector_efficiency = 0.0"),
    ("clock_drift_ppm", 11.0, "clock_drift_ppm = 11.0 ppm is outside the accepted range [-10, 10]"),
    ("clock_hz", 0.0, "clock_hz = 0.0"),
    ("sync_period", 1, "sync_period = 1"),
    ("sync_period", 10.5, "sync_period = 10.5 is not an integer"),
    ("p_signal", 0.0, "p_signal = 0.0"),
    ("p_decoy1", 0.5, "p_decoy1 = 0.5"),
    ("afterpulse_probability", 1.0, "afterpulse_probability = 1.0"),
    ("dead_time_ns", float("nan"), "dead_time_ns = nan is not a number"),
    ("jitter_ps", "50", "jitter_ps = '50' is not a number"),
])
def test_invalid_values_name_value_and_range(field, value, fragment):
    with pytest.raises(ParameterError) as err:
        LinkParams.preset("gys", **{field: value})
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_b92_only_attacks_are_refused_for_bb84():
    for model in ("usd", "helstrom", "b92-resend"):
        with pytest.raises(ParameterError, match=f"eve = '{model}' attacks B92 states only"):
            LinkParams(protocol="bb84", eve=model, eve_fraction=1.0)
        assert LinkParams(protocol="b92", eve=model, eve_fraction=1.0).eve_active


def test_to_dict_is_json_and_complete():
    p = LinkParams.preset("gys")
    d = json.loads(json.dumps(p.to_dict()))
    for f in dataclasses.fields(LinkParams):
        assert d[f.name] == getattr(p, f.name)
    assert d["p_decoy2"] == pytest.approx(0.1)


@given(distance=st.floats(0, 300), mu=st.floats(0.01, 2), ratio1=st.floats(0, 1),
       ratio2=st.floats(0, 1), e_det=st.floats(0, 0.5), p_signal=st.floats(0.01, 1),
       split=st.floats(0, 1), drift=st.floats(-10, 10))
def test_valid_parameters_round_trip(distance, mu, ratio1, ratio2, e_det, p_signal, split, drift):
    nu1 = mu * ratio1
    p = LinkParams(distance_km=distance, mu=mu, nu1=nu1, nu2=nu1 * ratio2, misalignment=e_det,
                   p_signal=p_signal, p_decoy1=(1 - p_signal) * split, clock_drift_ppm=drift)
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(LinkParams)}
    assert LinkParams(**fields) == p
    assert 0.0 <= p.p_decoy2 <= 1.0
    assert sum(p.intensity_probabilities) == pytest.approx(1.0)
    assert 0.0 < p.transmittance <= p.detector_efficiency


def test_presets_are_all_valid():
    for name in PRESETS:
        assert isinstance(LinkParams.preset(name), LinkParams)

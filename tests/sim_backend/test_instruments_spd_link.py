"""Driver -> simulated detector unit -> LinkControls -> link physics, and the telemetry back.

The physics runs at a 1 MHz clock so that the unit's shortest dead time (100 ns) spans no slot:
click counts then follow the textbook gain and can be checked against it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.detector.id120 import Id120, StatusAlarm
from drivers.detector.telemetry import BlindingLimits, Indicator, blinding_indicators
from sim_backend.controls import LinkControls
from sim_backend.instruments.spd import serve_spd
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams

TIMEOUT_S = 0.5


@pytest.fixture
def controls():
    return LinkControls()


def open_unit(controls, channels=(0, 1, 2, 3)):
    server = serve_spd(controls, channels)
    return server, Id120.from_url(server.visa_resource + "@py", timeout_s=TIMEOUT_S)


@pytest.fixture
def unit(controls):
    server, det = open_unit(controls)
    yield det
    det.close()
    server.close()


def expected_clicks(params: LinkParams, efficiency_pct: float, n_slots: int) -> float:
    """n * (Y0 + sum_k p_k (1 - exp(-eta mu_k))), eta = channel x eta_Bob x setting / 10 %."""
    eta = params.channel_transmittance * params.detector_efficiency * efficiency_pct / 10.0
    weights = (params.p_signal, params.p_decoy1, 1.0 - params.p_signal - params.p_decoy1)
    gain = sum(p * -math.expm1(-eta * mu)
               for p, mu in zip(weights, (params.mu, params.nu1, params.nu2)))
    return n_slots * (gain + params.dark_count_probability)


@pytest.mark.parametrize("efficiency_pct", [10, 25])
def test_efficiency_set_through_the_driver_scales_the_clicks(unit, controls, efficiency_pct):
    params = LinkParams.preset("gys", clock_hz=1e6)
    unit.efficiency_pct = efficiency_pct
    sim = LinkSimulator(params, controls, seed=11)
    n_slots = 2_000_000
    chunk = sim.run_slots(n_slots)
    clicks = int(np.count_nonzero(chunk.channels < 4))
    expected = expected_clicks(params, efficiency_pct, n_slots)   # ~3.3e3 at 10 %, ~8.2e3 at 25 %
    # Clicks are Poisson with this mean up to relative corrections of order eta*mu ~ 1e-3
    # (two detectors clicking on one pulse), far below sigma = sqrt(expected): allow 5 sigma.
    # A setting that did not reach the physics would be 2.5x off, i.e. > 30 sigma.
    assert abs(clicks - expected) < 5 * math.sqrt(expected)


def test_counts_read_through_the_driver_are_the_clicks_the_physics_made(unit, controls):
    sim = LinkSimulator(LinkParams.preset("gys", clock_hz=1e6), controls, seed=5)
    chunk = sim.run_slots(500_000)
    per_detector = np.bincount(chunk.channels[chunk.channels < 4], minlength=4)
    counts, _rates = unit.detection_counts()
    assert counts == tuple(int(n) for n in per_detector)
    assert sum(counts) > 0


def test_a_disabled_single_channel_unit_gets_no_clicks(controls):
    server, det_h = open_unit(controls, channels=(0,))
    try:
        det_h.enabled = False
        sim = LinkSimulator(LinkParams.preset("gys", clock_hz=1e6), controls, seed=7)
        chunk = sim.run_slots(1_000_000)
        per_detector = np.bincount(chunk.channels[chunk.channels < 4], minlength=4)
        assert per_detector[0] == 0
        # The other three (about 400 expected each) still count: P(0 | mean 400) ~ e^-400.
        assert all(per_detector[1:] > 0)
        assert det_h.detection_counts()[0] == (0,)
    finally:
        det_h.close()
        server.close()


def test_a_blinding_attack_shows_through_the_driver(unit, controls):
    unit.bias_v = 60.0
    clean_sim = LinkSimulator(LinkParams.preset("gys", clock_hz=1e6), controls, seed=1)
    clean_sim.run_slots(100_000)
    clean = unit.read_telemetry()
    limits = BlindingLimits()
    assert blinding_indicators([clean], limits) == []
    assert clean.bias_v == (60.0,) * 4       # the physics holds the bias the driver set

    attacked = LinkSimulator(LinkParams.preset("gys", clock_hz=1e6, eve="blinding",
                                               eve_fraction=1.0), controls, seed=2)
    attacked.run_slots(100_000)
    blinded = unit.read_telemetry()
    assert all(i > limits.photocurrent_ceiling_ua for i in blinded.photocurrent_ua)
    assert all(60.0 - b > limits.max_bias_sag_v for b in blinded.bias_v)
    alarms = blinding_indicators([clean, blinded], limits)
    fired = {(a.indicator, a.channel) for a in alarms}
    assert fired == {(ind, ch) for ind in (Indicator.PHOTOCURRENT_HIGH, Indicator.BIAS_SAG)
                     for ch in range(4)}
    assert all(a.start_s == clean.timestamp_s and a.ongoing for a in alarms)
    assert unit.status().alarms == StatusAlarm.BIAS | StatusAlarm.PHOTOCURRENT

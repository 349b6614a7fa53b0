"""The simulated link for LT3: Alice's three states, Z-biased, decoys; its eavesdropper models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim_backend.link import simulate
from sim_backend.params import LinkParams, ParameterError
from sim_backend.physics import source, theory


def test_x_basis_always_sends_d_and_z_sends_h_or_v():
    table = source.prepared_stokes("lt3")
    for b in range(16):
        basis, value = (b >> 1) & 1, b & 1
        want = source.STOKES_D if basis else (source.STOKES_V if value else source.STOKES_H)
        assert np.array_equal(table[b], want)


def test_lt3_accepts_only_models_that_attack_three_states():
    LinkParams.preset("gys", protocol="lt3", eve="usd-multiphoton", eve_fraction=1.0)
    with pytest.raises(ParameterError, match="LT3"):
        LinkParams.preset("gys", protocol="lt3", eve="helstrom", eve_fraction=1.0)


def test_measured_gains_and_key_row_qber_match_the_expectation():
    params = LinkParams.preset("gys", protocol="lt3", distance_km=5.0, p_basis_x=0.3,
                               dead_time_ns=0.0)
    n = 10_000_000
    res = simulate(params, n, seed=41)
    exp = theory.expected_link(params)
    for k, s in enumerate(res.per_intensity):
        if s.pulses < 1e5:
            continue
        # binomial sigma of a gain over s.pulses pulses; 5 sigma
        g = exp.gains[k]
        assert abs(s.gain - g) < 5 * math.sqrt(g * (1 - g) / s.pulses) + 1e-7
    # key rows: Z state and Z detector; QBER binomial over the sifted rows, 5 sigma
    q = exp.qber
    assert abs(res.qber - q) < 5 * math.sqrt(q * (1 - q) / res.sifted_bits)
    # sifted (key-row) fraction of detections: Alice Z (0.7) and Bob Z (1/2)
    frac = res.sifted_bits / res.detections
    assert abs(frac - 0.35) < 5 * math.sqrt(0.35 * 0.65 / res.detections)

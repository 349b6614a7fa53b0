"""The rotation algebra the simulated polarization controllers rely on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim_backend.instruments.polarization_oz import V_PI_MV, epc_rotation
from sim_backend.instruments.polarization_rotations import (angles_from_stokes, rotation_about,
                                                            rotation_taking, stokes_from_angles)

unit = st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)).filter(
    lambda v: np.linalg.norm(v) > 0.1)


def is_rotation(m: np.ndarray) -> bool:
    return np.allclose(m @ m.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(m), 1.0)


@given(unit, unit)
def test_rotation_taking_maps_src_to_dst(src, dst):
    r = rotation_taking(src, dst)
    assert is_rotation(r)
    u, v = np.array(src) / np.linalg.norm(src), np.array(dst) / np.linalg.norm(dst)
    assert np.allclose(r @ u, v, atol=1e-9)


def test_rotation_taking_antiparallel():
    r = rotation_taking([1, 0, 0], [-1, 0, 0])
    assert is_rotation(r) and np.allclose(r @ [1, 0, 0], [-1, 0, 0])


@given(st.floats(0, 359.9), st.floats(-89.9, 89.9))
def test_angles_round_trip(theta, phi):
    t2, p2 = angles_from_stokes(stokes_from_angles(theta, phi))
    assert p2 == pytest.approx(phi, abs=1e-9)
    assert min(abs(t2 - theta), 360 - abs(t2 - theta)) == pytest.approx(0, abs=1e-7)


def test_quarter_turn_about_s3_takes_h_to_d():
    assert np.allclose(rotation_about([0, 0, 1], np.pi / 2) @ [1, 0, 0], [0, 1, 0])


@given(st.lists(st.integers(-5000, 5000), min_size=4, max_size=4))
def test_epc_rotation_is_a_rotation(voltages):
    assert is_rotation(epc_rotation(voltages))


def test_half_wave_on_an_s1_squeezer_flips_d_and_keeps_h():
    r = epc_rotation([int(V_PI_MV), 0, 0, 0])
    assert np.allclose(r @ [1, 0, 0], [1, 0, 0])
    assert np.allclose(r @ [0, 1, 0], [0, -1, 0], atol=1e-12)

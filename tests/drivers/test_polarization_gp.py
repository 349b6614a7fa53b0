"""GP/Luna SCPI polarization controller: byte-exact protocol."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import DeviceProtocolError, DeviceReportedError, SettingOutOfRange
from drivers.polarization.gp_scpi import GpPolarizationController
from drivers.polarization.stokes import StokesVector
from tests.drivers.expected import expected_protocol

NO_ERROR = (b"SYST:ERR?\r\n", b'0,"No error"\n')


def test_set_sop_sends_the_vector_then_checks_the_queue():
    with expected_protocol(GpPolarizationController, [
        (b":CONT:SOP 0.0000,1.0000,0.0000\r\n", None), NO_ERROR,
        (b":CONT:SOP 0.6000,0.0000,-0.8000\r\n", None), NO_ERROR,
    ]) as pc:
        pc.set_sop(StokesVector(0.0, 1.0, 0.0))
        pc.set_sop((0.6, 0.0, -0.8))
        assert pc.last_settings == {"target": ((0.6, 0.0, -0.8),)}


def test_set_angles_shares_the_target_memory_with_sop():
    with expected_protocol(GpPolarizationController, [
        (b":CONT:SOP 1.0000,0.0000,0.0000\r\n", None), NO_ERROR,
        (b":CONT:ANGL 90.00,-45.00\r\n", None), NO_ERROR,
        (b":CONT:ANGL 90.00,-45.00\r\n", None),      # re-apply sends only the latest target
    ]) as pc:
        pc.set_sop((1.0, 0.0, 0.0))
        pc.set_angles(90.0, -45.0)
        pc.reapply_settings()


def test_device_refusal_surfaces_as_reported_error():
    with expected_protocol(GpPolarizationController, [
        (b":CONT:SOP 1.0000,0.0000,0.0000\r\n", None),
        (b"SYST:ERR?\r\n", b'-222,"Data out of range"\n'), NO_ERROR,
    ]) as pc:
        with pytest.raises(DeviceReportedError, match="-222 Data out of range") as info:
            pc.set_sop((1.0, 0.0, 0.0))
        assert info.value.code == -222


@pytest.mark.parametrize("sop,pattern", [
    ((1.2, 0.0, 0.0), r"\[-1, 1\]"), ((0.5, 0.5, 0.0), r"\|s\| = 0.707"),
    ((1.0, 0.0), "3 components"), ((math.nan, 1.0, 0.0), r"\[-1, 1\]"),
])
def test_bad_sop_is_refused_before_sending(sop, pattern):
    with expected_protocol(GpPolarizationController, []) as pc:
        with pytest.raises(SettingOutOfRange, match=pattern):
            pc.set_sop(sop)


@pytest.mark.parametrize("theta,phi,pattern", [
    (360.0, 0.0, r"theta 360.0 deg outside \[0.0, 360.0\)"),
    (-0.1, 0.0, "theta"), (10.0, 90.5, r"phi 90.5 deg outside \[-90.0, 90.0\]"),
])
def test_bad_angles_are_refused_before_sending(theta, phi, pattern):
    with expected_protocol(GpPolarizationController, []) as pc:
        with pytest.raises(SettingOutOfRange, match=pattern):
            pc.set_angles(theta, phi)


def test_measure_and_status():
    with expected_protocol(GpPolarizationController, [
        (b":MEAS:SOP?\r\n", b"0.00000,1.00000,0.00000\n"),
        (b":CONT:SOP?\r\n", b"1.00000,0.00000,0.00000\n"),
        (b":MEAS:SOP?\r\n", b"0.00000,1.00000,0.00000\n"),
    ]) as pc:
        assert pc.measure_sop() == StokesVector(0.0, 1.0, 0.0)
        status = pc.status()
        assert status.error_deg == pytest.approx(90.0)


def test_half_a_vector_is_a_protocol_error():
    with expected_protocol(GpPolarizationController, [(b":MEAS:SOP?\r\n", b"0.1,0.2\n")]) as pc:
        with pytest.raises(DeviceProtocolError, match="MEAS:SOP"):
            pc.measure_sop()


@given(st.floats(0.0, 359.99), st.floats(-90.0, 90.0))
def test_stokes_angles_round_trip(theta, phi):
    s = StokesVector.from_angles(theta, phi)
    assert s.norm == pytest.approx(1.0)
    back = StokesVector.from_angles(*s.angles_deg())
    assert s.angle_to_deg(back) == pytest.approx(0.0, abs=1e-4)

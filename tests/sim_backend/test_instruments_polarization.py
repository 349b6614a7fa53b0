"""Polarization drivers against their simulated twins over real byte paths; the settings act on
LinkControls.controller_rotation."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import registry
from drivers.errors import DeviceReportedError
from drivers.polarization.gp_scpi import GpPolarizationController
from drivers.polarization.oz_epc import OzEpc
from drivers.polarization.stokes import StokesVector
from drivers.transport import SerialTransport, TcpTransport, VisaTransport
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_oz import OzEpcSim, epc_rotation
from sim_backend.instruments.polarization_rotations import rotation_about

T = 0.2
H = np.array([1.0, 0.0, 0.0])


def drifted_fibre(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rotation_about(rng.normal(size=3), rng.uniform(0.5, 3.0))


@pytest.fixture(params=["tcp", "visa", "pty"])
def gp(request):
    """The GP driver on each byte path: raw TCP, pyvisa-py SOCKET resource, pty serial port."""
    controls = LinkControls()
    controls.fibre_rotation = drifted_fibre(1)
    sim = GpPolarizationSim(controls)
    server = PtyServer(sim) if request.param == "pty" else TcpServer(sim)
    url = server.visa_resource if request.param == "visa" else server.url
    driver = registry.create("gp-polarization", url, name="pc-bob", timeout_s=T)
    expected = {"tcp": TcpTransport, "visa": VisaTransport, "pty": SerialTransport}
    assert isinstance(driver.transport, expected[request.param])
    yield driver, sim, controls
    driver.close()
    server.close()


def test_identify(gp):
    driver, _, _ = gp
    assert driver.identify().manufacturer == "General Photonics"


def test_locking_to_h_compensates_the_fibre_for_h(gp):
    driver, _, controls = gp
    before = driver.measure_sop()
    assert before.angle_to_deg(StokesVector(1, 0, 0)) > 5.0      # the fibre has rotated H away
    driver.set_sop((1.0, 0.0, 0.0))
    assert np.allclose(controls.net_rotation() @ H, H, atol=1e-9)
    assert driver.measure_sop().angle_to_deg(StokesVector(1, 0, 0)) < 0.01


def test_angles_target_and_drift_shows_in_the_status(gp):
    driver, _, controls = gp
    driver.set_angles(90.0, 0.0)                                   # D
    status = driver.status()
    assert status.target.angle_to_deg(StokesVector(0, 1, 0)) < 0.01
    assert status.error_deg < 0.01
    with controls.lock:                                            # the fibre drifts on
        controls.fibre_rotation = rotation_about([0, 0, 1], 0.2) @ controls.fibre_rotation
    drifted = driver.status()
    assert drifted.error_deg > 1.0
    driver.set_angles(90.0, 0.0)                                   # the loop re-issues it
    assert driver.status().error_deg < 0.01


def test_sim_error_queue_reaches_the_driver(gp):
    driver, _, controls = gp
    before = controls.controller_rotation.copy()
    driver.write(":CONT:SOP 2,0,0")               # bypasses validation: the device refuses it
    driver.write(":CONT:BOGUS")
    with pytest.raises(DeviceReportedError, match="-222 Data out of range; -113 Undefined"):
        driver.check_errors()
    assert np.array_equal(controls.controller_rotation, before)
    driver.check_errors()                         # queue is empty again


@pytest.fixture
def epc():
    controls = LinkControls()
    with PtyServer(OzEpcSim(controls)) as server:
        driver = registry.create("oz-epc", server.url, name="epc", timeout_s=T)
        assert isinstance(driver, OzEpc)
        yield driver, controls
        driver.close()


def test_epc_voltages_set_the_controller_rotation(epc):
    driver, controls = epc
    driver.set_voltages([2000, -700, 1300, 0])
    assert driver.voltages_mv() == (2000, -700, 1300, 0)
    assert np.allclose(controls.controller_rotation, epc_rotation([2000, -700, 1300, 0]))
    # a half-wave on the S1 squeezer alone keeps H and flips D
    driver.set_voltages([2000, 0, 0, 0])
    assert np.allclose(controls.controller_rotation @ [0, 1, 0], [0, -1, 0], atol=1e-12)


def test_epc_over_tcp_bridge():
    controls = LinkControls()
    with TcpServer(OzEpcSim(controls)) as server:
        with OzEpc.from_url(server.url, timeout_s=T) as driver:
            driver.set_voltage(2, 1000)      # quarter wave about S2: H -> -S3 or +S3
            assert abs(abs((controls.controller_rotation @ H)[2]) - 1.0) < 1e-9


def test_gp_driver_class_is_what_the_registry_builds():
    assert registry.driver_class("gp-polarization") is GpPolarizationController

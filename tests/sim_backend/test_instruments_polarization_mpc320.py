"""MPC320 driver against its simulated twin over a pty and TCP; paddles act on the rotation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from drivers import registry
from drivers.polarization.thorlabs_mpc320 import ThorlabsMpc320
from drivers.transport import SerialTransport
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_mpc320 import Mpc320Sim, paddle_rotation

T = 0.2
H, D = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])


@pytest.fixture(params=["pty", "tcp"])
def mpc(request):
    controls = LinkControls()
    sim = Mpc320Sim(controls)
    server = PtyServer(sim) if request.param == "pty" else TcpServer(sim)
    driver = registry.create("thorlabs-mpc320", server.url, name="mpc", timeout_s=T)
    yield driver, sim, server, controls
    driver.close()
    server.close()


def test_model_defaults_reach_the_serial_port(mpc):
    driver, _, _, _ = mpc
    if isinstance(driver.transport, SerialTransport):
        assert driver.transport._port.baudrate == 115200 and driver.transport._port.rtscts


def test_identify_and_home(mpc):
    driver, sim, _, _ = mpc
    info = driver.identify()
    assert info.model == "MPC320" and info.serial_number == Mpc320Sim.SERIAL_NUMBER
    driver.home(1)
    assert driver.paddle_status(1).homed and not driver.paddle_status(2).homed


def test_paddles_set_the_controller_rotation(mpc):
    driver, sim, _, controls = mpc
    driver.set_paddles([0.0, 45.0, 0.0])
    # the lambda/2 paddle at 45 deg (axis at 90 deg on the sphere, = S2) takes H to -H; the
    # lambda/4 paddles at 0 deg (axis S1) leave H alone, so H -> -H overall (45 deg is 362.6
    # encoder counts: the rounding leaves < 0.01 of error)
    assert np.allclose(controls.controller_rotation @ H, -H, atol=0.01)
    driver.set_paddles([45.0, 0.0, 0.0])
    # lambda/4 at axis S2 turns H a quarter turn to +-S3; lambda/2 about S1 flips S3; the last
    # lambda/4 about S1 turns S3 back into the S2 direction: H ends on the D/A axis
    assert abs(abs((controls.controller_rotation @ H)[1]) - 1.0) < 0.01
    assert np.allclose(controls.controller_rotation, paddle_rotation(sim.angles_deg()))
    status = driver.paddle_status(1)
    assert status.position_deg == pytest.approx(45.0, abs=170 / 1370)


def test_disabled_paddle_does_not_move_and_the_driver_times_out(mpc, monkeypatch):
    driver, sim, _, _ = mpc
    monkeypatch.setattr(ThorlabsMpc320, "MOVE_TIMEOUT_S", 0.2)
    driver.enable_paddle(1, False)
    with pytest.raises(Exception, match="no 0x0464 reply"):
        driver.move_to(1, 45.0)
    assert sim.positions[0] == 0
    driver.enable_paddle(1, True)
    assert driver.move_to(1, 45.0).position_deg == pytest.approx(45.0, abs=0.2)


def test_power_cycle_reapplies_paddles(mpc):
    driver, sim, server, _ = mpc
    driver.RECONNECT_FIRST_DELAY_S, driver.RECONNECT_ATTEMPTS = 0.02, 8
    driver.set_paddles([30.0, 60.0, 90.0])
    server.unplug()
    threading.Timer(0.1, server.replug).start()         # the twin comes back at position 0
    assert driver.paddle_status(3).position_deg == pytest.approx(90.0, abs=0.2)
    assert sim.angles_deg() == pytest.approx([30.0, 60.0, 90.0], abs=0.2)

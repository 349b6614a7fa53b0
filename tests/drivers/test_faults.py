"""Fault injection over real byte paths: the device stops answering, answers garbage, answers
slowly, closes the connection mid-reply, goes away and comes back. The driver raises the typed
error, recovers, re-applies its last settings, and never returns a half-parsed or stale value."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from drivers.errors import DeviceDisconnected, DeviceProtocolError, DeviceTimeout
from drivers.polarization.gp_scpi import GpPolarizationController
from drivers.polarization.stokes import StokesVector
from drivers.switch.agiltron import AgiltronSwitch
from drivers.switch.dicon_mems import DiconMems
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_rotations import rotation_about
from sim_backend.instruments.switch_agiltron import AgiltronSwitchSim
from sim_backend.instruments.switch_dicon import DiconMemsSim
from tests.drivers.faults import FaultProxy

T = 0.2


def fast_reconnect(driver, attempts: int = 8):
    """Backoff 0.02, 0.04, 0.08, then 0.1 s: ~0.6 s of patience over 8 attempts."""
    driver.RECONNECT_ATTEMPTS = attempts
    driver.RECONNECT_FIRST_DELAY_S = 0.02
    driver.RECONNECT_MAX_DELAY_S = 0.1
    return driver


@pytest.fixture
def gp_tcp():
    controls = LinkControls()
    sim = GpPolarizationSim(controls)
    with TcpServer(sim) as server:
        driver = fast_reconnect(GpPolarizationController.from_url(server.url, name="pc",
                                                                  timeout_s=T))
        yield driver, sim, server, controls
        driver.close()


def rotate_fibre(controls: LinkControls, angle: float) -> None:
    with controls.lock:
        controls.fibre_rotation = rotation_about([0, 0, 1], angle) @ controls.fibre_rotation


def test_silent_device_times_out_then_answers_again(gp_tcp):
    driver, sim, _, _ = gp_tcp
    sim.faults.silent = True
    with pytest.raises(DeviceTimeout, match=r"pc \(command ':MEAS:SOP\?'\)"):
        driver.measure_sop()
    sim.faults.clear()
    assert driver.measure_sop() == StokesVector(1.0, 0.0, 0.0)


def test_garbage_is_a_protocol_error_never_a_value(gp_tcp):
    driver, sim, _, _ = gp_tcp
    sim.faults.garbage = True
    with pytest.raises(DeviceProtocolError, match="MEAS:SOP"):
        driver.measure_sop()
    with pytest.raises(DeviceProtocolError):
        driver.identify()
    sim.faults.clear()
    assert driver.measure_sop() == StokesVector(1.0, 0.0, 0.0)


def test_slow_reply_is_a_timeout_and_its_late_answer_is_not_taken_for_the_next(gp_tcp):
    driver, sim, _, controls = gp_tcp
    # The next call waits for quiet for up to half its own timeout (it is firm), so an answer
    # late by up to half a timeout is dropped; this one is late by a fifth.
    sim.faults.delay_s = 1.2 * T
    with pytest.raises(DeviceTimeout):
        driver.measure_sop()                    # its answer (H) arrives after the timeout
    sim.faults.clear()
    rotate_fibre(controls, np.pi / 2)           # now the true state is D, not H
    assert driver.measure_sop().angle_to_deg(StokesVector(0, 1, 0)) < 0.01


def test_slow_but_within_timeout_is_fine(gp_tcp):
    driver, sim, _, _ = gp_tcp
    sim.faults.delay_s = 0.3 * T
    assert driver.measure_sop() == StokesVector(1.0, 0.0, 0.0)


def test_connection_closed_mid_reply_reconnects_and_retries(gp_tcp):
    driver, sim, _, controls = gp_tcp
    driver.set_angles(90.0, 0.0)
    sim.faults.cut_next_replies = 1             # half a line, then the socket closes
    measured = driver.measure_sop()             # reconnect + re-apply + retry, inside the call
    assert measured.angle_to_deg(StokesVector(0, 1, 0)) < 0.01


def test_connection_always_cut_mid_reply_gives_one_clear_error(gp_tcp):
    driver, sim, _, _ = gp_tcp
    sim.faults.close_mid_reply = True
    with pytest.raises(DeviceDisconnected):
        driver.measure_sop()
    sim.faults.clear()
    assert driver.measure_sop() == StokesVector(1.0, 0.0, 0.0)   # and recovers afterwards


def test_unplug_replug_reapplies_the_last_target(gp_tcp):
    driver, _, server, controls = gp_tcp
    controls.fibre_rotation = rotation_about([1, 1, 0], 1.0)
    driver.set_angles(90.0, 0.0)
    assert np.allclose(controls.net_rotation() @ [1, 0, 0], [0, 1, 0], atol=1e-9)
    server.unplug()                             # power cycle: the sim forgets its rotation
    threading.Timer(0.1, server.replug).start()
    measured = driver.measure_sop()             # waits with backoff, then re-applies
    assert measured.angle_to_deg(StokesVector(0, 1, 0)) < 0.01
    assert np.allclose(controls.net_rotation() @ [1, 0, 0], [0, 1, 0], atol=1e-9)


def test_device_that_stays_away_gives_one_clear_error(gp_tcp):
    driver, _, server, _ = gp_tcp
    fast_reconnect(driver, attempts=4)
    server.unplug()
    started = time.monotonic()
    with pytest.raises(DeviceDisconnected,
                       match=r"pc: device at socket://127.0.0.1:\d+ did not come back after "
                             r"4 reconnect attempts"):
        driver.measure_sop()
    # backoff 0.02 + 0.04 + 0.08 between four attempts: bounded, not a hang
    assert time.monotonic() - started < 2.0


@pytest.fixture(params=["pty", "tcp"])
def dicon(request):
    controls = LinkControls()
    sim = DiconMemsSim(controls)
    server = PtyServer(sim) if request.param == "pty" else TcpServer(sim)
    driver = fast_reconnect(DiconMems.from_url(server.url, name="sw", timeout_s=T))
    yield driver, sim, server, controls
    driver.close()
    server.close()


def test_switch_comes_back_on_its_port_after_unplug(dicon):
    driver, _, server, controls = dicon
    driver.select_port(5)
    server.unplug()
    assert controls.switch_port == 5
    threading.Timer(0.1, server.replug).start()   # power-on puts the mirror back on port 1
    assert driver.port() == 5                     # re-applied before the query ran
    assert controls.switch_port == 5


def test_switch_garbage_then_recovery(dicon):
    driver, sim, _, _ = dicon
    driver.select_port(2)
    sim.faults.garbage = True
    with pytest.raises(DeviceProtocolError):
        driver.port()
    sim.faults.clear()
    assert driver.port() == 2


def test_agiltron_garbled_echo_and_silence():
    controls = LinkControls()
    sim = AgiltronSwitchSim(controls)
    with PtyServer(sim) as server, AgiltronSwitch.from_url(server.url, timeout_s=T) as sw:
        sim.faults.garbage = True
        with pytest.raises(DeviceProtocolError, match="echo"):
            sw.select_port(3)
        assert sw.last_settings == {}
        sim.faults.clear()
        sim.faults.silent = True
        with pytest.raises(DeviceTimeout):
            sw.port()
        sim.faults.clear()
        sw.select_port(4)
        assert sw.port() == 4


def test_fault_proxy_in_front_of_a_device():
    controls = LinkControls()
    with TcpServer(DiconMemsSim(controls)) as device, FaultProxy(device.url) as proxy:
        sw = fast_reconnect(DiconMems.from_url(proxy.url, name="sw", timeout_s=T))
        try:
            sw.select_port(3)
            assert controls.switch_port == 3 and proxy.chunks_from_device > 0
            proxy.faults.silent = True
            with pytest.raises(DeviceTimeout):
                sw.port()
            proxy.faults.clear()
            proxy.faults.garbage = True
            with pytest.raises(DeviceProtocolError):
                sw.port()
            proxy.faults.clear()
            proxy.unplug()
            threading.Timer(0.1, proxy.replug).start()
            assert sw.port() == 3
        finally:
            sw.close()


def test_a_closed_driver_stays_closed(gp_tcp):
    driver, _, server, _ = gp_tcp
    driver.close()
    with pytest.raises(DeviceDisconnected, match="driver was closed"):
        driver.measure_sop()
    deadline = time.monotonic() + 2.0          # the server notices the hang-up asynchronously
    while server.connection_count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connection_count == 0        # and nothing reconnected behind our back

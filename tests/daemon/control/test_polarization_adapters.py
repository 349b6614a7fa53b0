"""The polarization adapters drive the simulated controllers over their real byte path (TCP)."""

import numpy as np
import pytest

from daemon.control.adapters import GpAdapter, OzAdapter
from daemon.control.common import QberWindow
from daemon.control.polarization import SetSop, SetVoltages, angle_deg, twist_dither_for
from drivers import registry
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_oz import OzEpcSim
from sim_backend.physics.channel import rotation_about

H = np.array([1.0, 0.0, 0.0])


def test_gp_adapter_reissues_the_target_after_drift():
    controls = LinkControls()
    controls.fibre_rotation = rotation_about("s3", 0.5)
    with TcpServer(GpPolarizationSim(controls)) as server:
        driver = registry.create("gp-polarization", server.url, timeout_s=2.0)
        try:
            adapter = GpAdapter("pol", driver)
            assert adapter.tick(0.0) == SetSop((1.0, 0.0, 0.0))
            assert angle_deg(controls.net_rotation() @ H, H) < 0.1
            controls.fibre_rotation = rotation_about("s2", 0.2) @ controls.fibre_rotation
            assert adapter.tick(1.0) is not None              # 11 deg off: re-issued
            assert angle_deg(controls.net_rotation() @ H, H) < 0.1
            assert adapter.tick(2.0) is None                  # locked: nothing to do
            status = adapter.status()
            assert status["state"] == "locked" and status["reissues"] == 2 and status["healthy"]
        finally:
            driver.close()


def test_oz_adapter_reads_the_voltages_then_applies_the_dither():
    controls = LinkControls()
    epc = OzEpcSim(controls)
    epc.handle_line("V2,1000")
    epc.handle_line("V4,-1000")
    with TcpServer(epc) as server:
        driver = registry.create("oz-epc", server.url, timeout_s=2.0)
        try:
            adapter = OzAdapter("pol", driver)
            act = adapter.tick(QberWindow(0.0, 1.0, 10_000, 330), now_s=1.2)
            assert act == SetVoltages((50, 1000, 0, -1000))
            assert tuple(epc.voltages_mv) == act.voltages_mv
            # A window begun before the setting took effect (1.2 s) is not charged to it.
            assert adapter.tick(QberWindow(1.0, 2.0, 10_000, 900), now_s=2.2) is None
            act = adapter.tick(QberWindow(1.2, 2.2, 10_000, 340), now_s=2.3)
            assert act == SetVoltages((-50, 1000, 0, -1000))
            assert tuple(epc.voltages_mv) == act.voltages_mv
        finally:
            driver.close()


def test_gp_adapter_with_two_references_undoes_the_whole_fibre_rotation():
    """H then D locked in turn over TCP: the net rotation is the identity, twist included."""
    controls = LinkControls()
    controls.fibre_rotation = rotation_about("s1", 0.7) @ rotation_about("s3", 0.5)
    refs = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]

    def select(k):
        controls.reference_sop = refs[k]

    with TcpServer(GpPolarizationSim(controls)) as server:
        driver = registry.create("gp-polarization", server.url, timeout_s=2.0)
        try:
            adapter = GpAdapter("pol", driver, select_reference=select)
            assert adapter.tick(0.0) == SetSop((1.0, 0.0, 0.0), next_reference=1)
            # H locked, but the twist of 0.7 rad about H is still there: D is off.
            assert angle_deg(controls.net_rotation() @ refs[1], refs[1]) > 30
            assert adapter.tick(1.0) == SetSop((0.0, 1.0, 0.0), next_reference=0)
            assert np.allclose(controls.net_rotation(), np.eye(3), atol=1e-6)
            assert adapter.status()["references"] == 2
        finally:
            driver.close()


def test_gp_adapter_refuses_two_references_without_a_selector():
    from daemon.control.common import ControlConfigError
    from daemon.control.polarization import GpConfig, GpLoop
    with pytest.raises(ControlConfigError, match="no way to select"):
        GpAdapter("pol", driver=None, loop=GpLoop(GpConfig()))


def test_gp_adapter_with_one_reference_twists_the_simulated_controller_about_h():
    """A node's GP loop: the first fresh block with X-basis bits asks for +dither (sized from
    that block's X-basis statistics); the excursion's three locks, sent over TCP, leave the controller rotated about H by exactly
    that much (H itself still locked), and a block begun before it is not charged to it."""
    from sim_backend.instruments.polarization_rotations import rotation_about as about
    controls = LinkControls()
    now = [5.0]
    with TcpServer(GpPolarizationSim(controls)) as server:
        driver = registry.create("gp-polarization", server.url, timeout_s=2.0)
        try:
            adapter = GpAdapter("pol", driver, clock=lambda: now[0])
            assert adapter.loop.config.twists          # the default without a selector
            block = QberWindow(0.0, 4.0, 8000, 200, 4000, 40, 4000, 160)
            action = adapter.tick(now[0], block)
            cfg = adapter.loop.config
            d = twist_dither_for(cfg, block.qber_x, block.sifted_x)
            assert cfg.twist_dither_min_rad < d < cfg.twist_dither_rad   # 4 000 bits: between
            assert action.twist_rad == pytest.approx(d) and len(action.via) == 2
            # The driver sends 4 decimals: each waypoint is off by < 1e-4 rad, so is the twist.
            assert np.allclose(controls.controller_rotation, about(H, d), atol=3e-4)
            assert adapter.state.twist_pending_since_s == 5.0
            assert adapter.tick(6.0, QberWindow(4.0, 6.0, 8000, 200, 4000, 40, 4000, 160)) \
                is None                                  # collected partly before the twist
            assert adapter.status()["twist_rad"] == pytest.approx(d)
        finally:
            driver.close()

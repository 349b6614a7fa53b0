"""Switch drivers against their simulated twins; the selected port acts on LinkControls."""

from __future__ import annotations

import pytest

from drivers import registry
from drivers.errors import DeviceTimeout
from drivers.switch.agiltron import AgiltronSwitch
from drivers.switch.dicon_mems import DiconMems
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.switch_agiltron import AgiltronSwitchSim
from sim_backend.instruments.switch_dicon import DiconMemsSim

T = 0.2

MODELS = {"dicon-mems": DiconMemsSim, "agiltron-switch": AgiltronSwitchSim}


@pytest.fixture(params=[(m, path) for m in MODELS for path in ("pty", "tcp")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def switch(request):
    model, path = request.param
    controls = LinkControls(link_port=2)
    sim = MODELS[model](controls, n_ports=4)
    server = PtyServer(sim) if path == "pty" else TcpServer(sim)
    driver = registry.create(model, server.url, name="sw", timeout_s=T, n_ports=4)
    yield driver, sim, controls
    driver.close()
    server.close()


def test_select_port_routes_the_link(switch):
    driver, _, controls = switch
    assert driver.port() == 1 and not controls.channel_open()
    driver.select_port(2)
    assert controls.switch_port == 2 and controls.channel_open()
    assert driver.port() == 2
    driver.select_port(4)
    assert driver.status().port == 4 and controls.switch_port == 4


def test_driver_and_sim_agree_on_the_port_count(switch):
    driver, _, _ = switch
    assert driver.n_ports == 4


def test_agiltron_frames_on_the_wire():
    controls = LinkControls()
    sim = AgiltronSwitchSim(controls)
    with PtyServer(sim) as server, AgiltronSwitch.from_url(server.url, timeout_s=T) as sw:
        sw.select_port(3)
        assert sw.port() == 3
    assert sim.frames == [b"\x01\x12\x00\x03", b"\x01\x11\x00\x00"]


def test_dicon_sim_rejects_out_of_range_and_driver_reports_it():
    controls = LinkControls()
    with TcpServer(DiconMemsSim(controls, n_ports=4)) as server, \
            DiconMems.from_url(server.url, timeout_s=T, n_ports=8) as sw:   # misconfigured
        with pytest.raises(Exception, match="reports port 1 after selecting 6"):
            sw.select_port(6)
        assert controls.switch_port == 1


def test_agiltron_sim_swallows_invalid_channel():
    controls = LinkControls()
    with TcpServer(AgiltronSwitchSim(controls, n_ports=4)) as server, \
            AgiltronSwitch.from_url(server.url, timeout_s=T, n_ports=8) as sw:
        with pytest.raises(DeviceTimeout):
            sw.select_port(6)
        assert controls.switch_port == 1


def test_concurrent_selects_never_interleave():
    """Two threads switching the same device: each select's read-back sees its own port."""
    import threading

    controls = LinkControls()
    errors = []
    with TcpServer(DiconMemsSim(controls)) as server, \
            DiconMems.from_url(server.url, timeout_s=1.0) as sw:
        def worker(port):
            try:
                for _ in range(20):
                    sw.select_port(port)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(p,)) for p in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10.0)
    assert errors == []

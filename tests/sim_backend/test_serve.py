"""The simulated node pair: every endpoint opens with its registered driver over its real byte
path, and a setting made through a driver changes what Bob's board streams."""

import dataclasses
import json

import numpy as np
import pytest

from drivers import registry
from sim_backend import serve
from sim_backend.params import LinkParams

DETECTOR_CHANNELS = 4   # channels 0..3 are detectors, 7 is sync


@pytest.fixture(scope="module")
def pair():
    params = LinkParams.preset("gys", distance_km=5.0, dead_time_ns=10.0)
    with serve.SimulatedPair(params, seed=7, realtime=False) as p:
        yield p


def _detector_clicks(board, n_batches=4):
    board.start_acquisition()
    batches = [board.read_events(timeout_s=10.0) for _ in range(n_batches)]
    board.stop_acquisition()
    board.queued_batches()
    slots = sum(b.t_end_ps - b.t_start_ps for b in batches)
    clicks = sum(int(np.count_nonzero(b.channels < DETECTOR_CHANNELS)) for b in batches)
    return clicks, slots


def test_every_endpoint_opens_with_its_driver(pair):
    seen = set()
    for ep in pair.endpoints():
        device = registry.create(ep.driver, ep.url, timeout_s=2.0)
        try:
            # Boards and the APT controller identify themselves; the others report a status.
            query = getattr(device, "status", None) or device.identify
            # a parsed record, not raw text: the exchange went through the driver's parser
            assert dataclasses.is_dataclass(query()), ep
        finally:
            device.close()
        seen.add(ep.driver)
    # Every built-in driver has a simulated device in the pair (tests may register others).
    builtin = {name for name in registry.available()
               if registry.driver_class(name).__module__.startswith("drivers.")}
    assert seen == builtin


def test_switch_on_another_port_stops_the_clicks(pair):
    urls = {(ep.node, ep.device): ep.url for ep in pair.endpoints()}
    board = registry.create("qkd-board", urls["bob", "board"], timeout_s=5.0)
    switch = registry.create("dicon-mems", urls["bob", "switch"], timeout_s=2.0)
    try:
        switch.select_port(1)
        on_clicks, on_window_ps = _detector_clicks(board)
        switch.select_port(2)
        off_clicks, off_window_ps = _detector_clicks(board)
    finally:
        switch.select_port(1)
        switch.close()
        board.close()
    slot_ps = 1e12 / pair.params.clock_hz
    on_rate = on_clicks / (on_window_ps / slot_ps)
    off_rate = off_clicks / (off_window_ps / slot_ps)
    # Through the link the rate is ~eta*mu (~1e-2 at 5 km); off the link only dark counts
    # (Y0 = 1.7e-6 per slot) remain: a factor > 1000 apart, far outside any Poisson spread.
    assert on_rate > 100 * pair.params.dark_count_probability
    assert off_rate < 10 * pair.params.dark_count_probability


def test_serve_cli_prints_endpoints_and_stops(capsys):
    assert serve.main(["--distance-km", "10", "--duration-s", "0.2", "--json", "--seed", "1",
                       "--base-port", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {ep["driver"] for ep in out["endpoints"]} >= {"qkd-board", "id120", "dicon-mems"}
    assert out["params"]["distance_km"] == 10.0


def _free_port_block(n: int) -> int:
    """A base port with n free ports after it (other sessions on this machine use 7101..)."""
    import random
    import socket
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for k in range(n):
                socks.append(socket.create_server(("127.0.0.1", base + k)))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.skip("no block of free ports found")


def test_serve_puts_tcp_devices_on_fixed_ports_from_the_base(capsys):
    """The README example (detector on 7103) depends on this layout: base, base+1, ..."""
    assert serve.DEFAULT_BASE_PORT == 7101
    assert serve.DEVICE_PORT_OFFSETS["bob", "detector"] == 2          # -> 7103 by default
    base = _free_port_block(len(serve.DEVICE_PORT_OFFSETS))
    assert serve.main(["--duration-s", "0.2", "--json", "--seed", "1",
                       "--base-port", str(base)]) == 0
    urls = {(ep["node"], ep["device"]): ep["url"]
            for ep in json.loads(capsys.readouterr().out)["endpoints"]}
    assert urls["bob", "detector"] == f"TCPIP::127.0.0.1::{base + 2}::SOCKET"
    assert urls["alice", "board"] == f"socket://127.0.0.1:{base}"
    for (node, device), offset in serve.DEVICE_PORT_OFFSETS.items():
        assert urls[node, device].replace("::SOCKET", "").endswith(str(base + offset))


def test_serve_says_which_ports_are_taken(capsys):
    import socket
    base = _free_port_block(len(serve.DEVICE_PORT_OFFSETS))
    with socket.create_server(("127.0.0.1", base + 2)):
        assert serve.main(["--duration-s", "0.1", "--base-port", str(base)]) == 1
    err = capsys.readouterr().err
    assert "in use" in err and "--base-port" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--distance-km", "-1"], "distance_km"),
    (["--protocol", "e91"], "protocol"),
    (["--duration-s", "0"], "duration_s"),
    (["--eve", "intercept-resend", "--eve-fraction", "1.5"], "eve_fraction"),
    (["--eve-fraction", "0.5"], "needs an eavesdropper"),
    (["--seed", "1e30"], "seed"),
    (["--seed=-1"], "seed"),
    (["--base-port", "80"], "base_port"),
    (["--base-port", "inf"], "base_port"),
])
def test_serve_cli_rejects_bad_values(capsys, argv, needle):
    assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err

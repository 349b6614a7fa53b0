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
    assert serve.main(["--distance-km", "10", "--duration-s", "0.2", "--json", "--seed", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {ep["driver"] for ep in out["endpoints"]} >= {"qkd-board", "id120", "dicon-mems"}
    assert out["params"]["distance_km"] == 10.0


@pytest.mark.parametrize("argv, needle", [
    (["--distance-km", "-1"], "distance_km"),
    (["--protocol", "e91"], "protocol"),
    (["--duration-s", "0"], "duration_s"),
    (["--eve", "intercept-resend", "--eve-fraction", "1.5"], "eve_fraction"),
])
def test_serve_cli_rejects_bad_values(capsys, argv, needle):
    assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err

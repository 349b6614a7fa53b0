"""``qkd-node sim serve``: the simulated hardware of a node pair, on real byte paths.

One ``LinkSimulator`` and one ``LinkControls`` are shared by every device, so what a driver sets
on one instrument shows up in what the boards stream. Each device is served the way its real
counterpart is reached: the boards on TCP (pyserial ``socket://``), the SCPI detector and the SCPI
polarization controller on TCP (VISA ``TCPIP::…::SOCKET``), the serial-style OZ Optics and Thorlabs
MPC320 controllers and the DiCon switch on ptys, the Agiltron switch on TCP. ``endpoints()`` lists them as
driver-name + URL pairs, the same shape as a node's config, so a node can be pointed at them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

from firmware_protocol import Role
from sim_backend.board import SimBoard
from sim_backend.cli import UsageError, _Parser, _number, add_link_arguments, \
    link_params_from_args
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_mpc320 import Mpc320Sim
from sim_backend.instruments.polarization_oz import OzEpcSim
from sim_backend.instruments.spd import SpdInstrument
from sim_backend.instruments.switch_agiltron import AgiltronSwitchSim
from sim_backend.instruments.switch_dicon import DiconMemsSim
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams, ParameterError


@dataclass(frozen=True)
class Endpoint:
    node: str          # "alice" or "bob"
    device: str        # role of the device in the node's config
    driver: str        # registered driver name (drivers.registry)
    url: str


class SimulatedPair:
    """Every simulated device of an Alice/Bob pair, started on construction; ``close()`` stops all."""

    def __init__(self, params: LinkParams, *, seed: int | None = None, realtime: bool = True):
        self.params = params
        self.controls = LinkControls()
        with self.controls.lock:   # detectors power up with the link's dead time
            for det in self.controls.detectors:
                det.dead_time_ns = params.dead_time_ns
        self.link = LinkSimulator(params, self.controls, seed=seed)
        self._servers: list = []
        self._endpoints: list[Endpoint] = []
        try:
            self.alice_board = self._add(SimBoard(Role.ALICE, self.link, self.controls),
                                         "alice", "board", "qkd-board")
            # Alice's polarization modulator is driven through her board's connection.
            self._endpoints.append(Endpoint("alice", "modulator", "board-modulator",
                                            self.alice_board.url))
            self.bob_board = self._add(SimBoard(Role.BOB, self.link, self.controls,
                                                realtime=realtime),
                                       "bob", "board", "qkd-board")
            self.detector = self._add(TcpServer(SpdInstrument(self.controls)), "bob",
                                      "detector", "id120", visa=True)
            self.polarization = self._add(TcpServer(GpPolarizationSim(self.controls)), "bob",
                                          "polarization", "gp-polarization", visa=True)
            self.polarization_epc = self._add(PtyServer(OzEpcSim(self.controls), "ttySIM-EPC"),
                                              "bob", "polarization-epc", "oz-epc")
            self.polarization_mpc320 = self._add(
                PtyServer(Mpc320Sim(self.controls), "ttySIM-MPC320"), "bob", "polarization-mpc320",
                "thorlabs-mpc320")
            self.switch = self._add(PtyServer(DiconMemsSim(self.controls), "ttySIM-SWITCH"),
                                    "bob", "switch", "dicon-mems")
            self.switch_agiltron = self._add(TcpServer(AgiltronSwitchSim(self.controls)),
                                             "bob", "switch-agiltron", "agiltron-switch")
        except BaseException:
            self.close()
            raise

    def _add(self, server, node: str, device: str, driver: str, *, visa: bool = False):
        self._servers.append(server)
        url = server.visa_resource if visa else server.url
        self._endpoints.append(Endpoint(node, device, driver, url))
        return server

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def config_toml(self, node: str) -> str:
        """The ``[devices.*]`` section of ``node``'s config for these endpoints."""
        lines = []
        for ep in self._endpoints:
            if ep.node == node:
                lines += [f"[devices.{ep.device}]", f'driver = "{ep.driver}"', f'url = "{ep.url}"',
                          ""]
        return "\n".join(lines)

    def close(self) -> None:
        for server in reversed(self._servers):
            server.close()
        self._servers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qkd-node sim serve",
                     description="Serve simulated hardware for an Alice/Bob node pair")
    add_link_arguments(parser)
    parser.add_argument("--fast", action="store_true",
                        help="stream Bob's events as fast as they can be simulated instead of "
                             "at the simulated clock rate")
    parser.add_argument("--duration-s", type=_number("duration_s", float), default=None,
                        help="stop after this many seconds (default: until Ctrl-C / SIGTERM)")
    parser.add_argument("--json", action="store_true",
                        help="print the endpoints as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        params = link_params_from_args(args)
        if args.duration_s is not None and not args.duration_s > 0:
            raise UsageError(f"duration_s = {args.duration_s} must be > 0")
    except (UsageError, ParameterError) as exc:
        print(f"qkd-node sim serve: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    seed = args.seed if args.seed is not None else secrets.randbits(63)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with SimulatedPair(params, seed=seed, realtime=not args.fast) as pair:
            if args.json:
                print(json.dumps({"seed": seed, "params": params.to_dict(),
                                  "endpoints": [ep.__dict__ for ep in pair.endpoints()]}),
                      flush=True)
            else:
                print(f"simulated {params.protocol.upper()} link, {params.distance_km:g} km, "
                      f"seed {seed}; devices:")
                for ep in pair.endpoints():
                    print(f"  {ep.node:<6} {ep.device:<20} {ep.driver:<16} {ep.url}")
                print("\n# Alice's node config:\n" + pair.config_toml("alice"))
                print("# Bob's node config:\n" + pair.config_toml("bob"))
                print("serving; Ctrl-C to stop", flush=True)
            stop.wait(args.duration_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

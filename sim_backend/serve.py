"""``qkd-node sim serve``: the simulated hardware of a node pair, on real byte paths.

One ``LinkSimulator`` and one ``LinkControls`` are shared by every device, so what a driver sets
on one instrument shows up in what the boards stream. Each device is served the way its real
counterpart is reached: the boards on TCP (pyserial ``socket://``), the SCPI detector and the SCPI
polarization controller on TCP (VISA ``TCPIP::…::SOCKET``), the serial-style OZ Optics and Thorlabs
MPC320 controllers and the DiCon switch on ptys, the Agiltron switch on TCP. ``endpoints()`` lists them as
driver-name + URL pairs, the same shape as a node's config, so a node can be pointed at them.

``sim serve`` puts the TCP devices on fixed ports from ``--base-port`` (default 7101, so the
README's and systemd/README's example URLs work as written): see ``DEVICE_PORT_OFFSETS``.
``--base-port 0`` picks free ports instead (printed, like the pty paths, which are always new).
"""

from __future__ import annotations

import argparse
import errno
import json
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

from firmware_protocol import Role
from sim_backend.board import SimBoard
from sim_backend.cli import (UsageError, _Parser, _number, add_link_arguments, check_seed,
                             link_params_from_args)
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


DEFAULT_BASE_PORT = 7101
DEVICE_PORT_OFFSETS = {("alice", "board"): 0, ("bob", "board"): 1, ("bob", "detector"): 2,
                       ("bob", "polarization"): 3, ("bob", "switch-agiltron"): 4}
"""TCP port of each device = base port + offset: 7101 Alice's board, 7102 Bob's board, 7103 the
detector (VISA ``TCPIP::127.0.0.1::7103::SOCKET``), 7104 the GP polarization controller, 7105
the Agiltron switch."""


@dataclass(frozen=True)
class Endpoint:
    node: str          # "alice" or "bob"
    device: str        # role of the device in the node's config
    driver: str        # registered driver name (drivers.registry)
    url: str


class SimulatedPair:
    """Every simulated device of an Alice/Bob pair, started on construction; ``close()`` stops all."""

    def __init__(self, params: LinkParams, *, seed: int | None = None, realtime: bool = True,
                 base_port: int = 0):
        self.params = params
        self.base_port = base_port
        self.controls = LinkControls()
        with self.controls.lock:   # detectors power up with the link's dead time
            for det in self.controls.detectors:
                det.dead_time_ns = params.dead_time_ns
        self.link = LinkSimulator(params, self.controls, seed=seed)
        self._servers: list = []
        self._endpoints: list[Endpoint] = []
        try:
            self.alice_board = self._add(SimBoard(Role.ALICE, self.link, self.controls,
                                                  port=self._port("alice", "board")),
                                         "alice", "board", "qkd-board")
            # Alice's polarization modulator is driven through her board's connection.
            self._endpoints.append(Endpoint("alice", "modulator", "board-modulator",
                                            self.alice_board.url))
            self.bob_board = self._add(SimBoard(Role.BOB, self.link, self.controls,
                                                realtime=realtime, port=self._port("bob", "board")),
                                       "bob", "board", "qkd-board")
            self.detector = self._add(TcpServer(SpdInstrument(self.controls),
                                                port=self._port("bob", "detector")), "bob",
                                      "detector", "id120", visa=True)
            self.polarization = self._add(TcpServer(GpPolarizationSim(self.controls),
                                                    port=self._port("bob", "polarization")),
                                          "bob", "polarization", "gp-polarization", visa=True)
            self.polarization_epc = self._add(PtyServer(OzEpcSim(self.controls), "ttySIM-EPC"),
                                              "bob", "polarization-epc", "oz-epc")
            self.polarization_mpc320 = self._add(
                PtyServer(Mpc320Sim(self.controls), "ttySIM-MPC320"), "bob", "polarization-mpc320",
                "thorlabs-mpc320")
            self.switch = self._add(PtyServer(DiconMemsSim(self.controls), "ttySIM-SWITCH"),
                                    "bob", "switch", "dicon-mems")
            self.switch_agiltron = self._add(
                TcpServer(AgiltronSwitchSim(self.controls),
                          port=self._port("bob", "switch-agiltron")),
                "bob", "switch-agiltron", "agiltron-switch")
        except BaseException:
            self.close()
            raise

    def _port(self, node: str, device: str) -> int:
        return self.base_port + DEVICE_PORT_OFFSETS[node, device] if self.base_port else 0

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
                        metavar="S", help="stop after this many seconds, > 0 (default: until "
                                          "Ctrl-C / SIGTERM)")
    parser.add_argument("--base-port", type=_number("base_port", int), default=DEFAULT_BASE_PORT,
                        metavar="PORT",
                        help=f"TCP port of Alice's board; the other TCP devices take the next "
                             f"{len(DEVICE_PORT_OFFSETS) - 1} ports; 1024..65530, or 0 for free "
                             f"ports (default {DEFAULT_BASE_PORT}: 7103 is the detector)")
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
        if args.seed is not None:
            check_seed(args.seed)
        last_port = args.base_port + max(DEVICE_PORT_OFFSETS.values())
        if args.base_port != 0 and not (1024 <= args.base_port and last_port <= 65535):
            raise UsageError(f"base_port = {args.base_port} is outside the accepted range "
                             f"[1024, {65535 - max(DEVICE_PORT_OFFSETS.values())}] (or 0)")
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
        try:
            pair = SimulatedPair(params, seed=seed, realtime=not args.fast,
                                 base_port=args.base_port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            print(f"qkd-node sim serve: error: a port in {args.base_port}.."
                  f"{args.base_port + max(DEVICE_PORT_OFFSETS.values())} is in use (another "
                  f"'sim serve'?); pass --base-port N, or 0 for free ports", file=sys.stderr)
            return 1
        with pair:
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

"""``qkd-node``: the operator's command line.

Subcommands that own their flags (all of them) get the rest of the command line as it is,
so their options are parsed, validated and documented in one place.
"""

from __future__ import annotations

import argparse
import sys


def _run_sim(argv: list[str]) -> int:
    # The launcher may start the simulator (docs/architecture.md); the node itself never imports it.
    from sim_backend.cli import main as sim_main
    return sim_main(argv)


def _run_demo(argv: list[str]) -> int:
    from daemon.demo import main as demo_main
    return demo_main(argv)


def _run_keygen(argv: list[str]) -> int:
    from daemon.curve_keys import main as keygen_main
    return keygen_main(argv)


def _run_node(argv: list[str]) -> int:
    from daemon.runtime.node import main as node_main
    return node_main(argv)


def _run_status(argv: list[str]) -> int:
    from daemon.runtime.status import main as status_main
    return status_main(argv)


def _run_demo_nodes(argv: list[str]) -> int:
    from daemon.launch import main as launch_main
    return launch_main(argv)


COMMANDS = {
    "keygen": (_run_keygen, "write a CurveZMQ keypair for the peer channel (secret file 0600)"),
    "run": (_run_node, "run one node: 'qkd-node run --config /etc/qkd-node/node.toml'"),
    "status": (_run_status, "ask a running node: links, QBER, secret rate, store, alarms"),
    "sim": (_run_sim, "simulated hardware: 'sim run' (no sockets) or 'sim serve' (devices)"),
    "demo": (_run_demo, "two nodes on simulated hardware, from device URLs to identical keys"),
    "demo-nodes": (_run_demo_nodes, "two 'qkd-node run' processes on simulated hardware"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkd-node", description="QKD node software")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_handler, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]][0](argv[1:])
    parser = build_parser()
    parser.parse_args(argv)   # --help, or a usage error naming the unknown command
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())

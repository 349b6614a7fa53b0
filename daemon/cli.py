"""``qkd-node``: the operator's command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkd-node", description="QKD node software")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = sub.add_parser("sim", help="simulated hardware (no devices needed)")
    sim.set_defaults(handler=_run_sim)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", help="run the simulated two-node demo")
    demo.set_defaults(handler=_run_demo)
    demo.add_argument("demo_args", nargs=argparse.REMAINDER)
    return parser


def _run_sim(args: argparse.Namespace) -> int:
    # The launcher may start the simulator (design.md); the node itself never imports it.
    from sim_backend.cli import main as sim_main
    return sim_main(args.sim_args)


def _run_demo(args: argparse.Namespace) -> int:
    from daemon.demo import main as demo_main
    return demo_main(args.demo_args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

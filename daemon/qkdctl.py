"""``qkdctl``: the client and administrator's command line.

It starts with device administration (which drivers exist, what a device says it is); key
requests against a node's key service join it with the daemon.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import sys

from drivers import registry
from drivers.errors import DeviceError, InvalidDeviceUrl

MAX_TIMEOUT_S = 3600.0


def _cmd_drivers(args: argparse.Namespace) -> int:
    names = registry.available()
    if args.json:
        print(json.dumps({"drivers": names}))
    else:
        for name in names:
            print(name)
    return 0


def _as_jsonable(value):
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _as_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        cls = registry.driver_class(args.driver)
    except registry.UnknownDriver as exc:
        print(f"qkdctl: {exc}", file=sys.stderr)
        return 2
    try:
        device = cls.from_url(args.url, timeout_s=args.timeout_s)
    except InvalidDeviceUrl as exc:          # the user's input, not the device: usage error
        print(f"qkdctl: {exc}", file=sys.stderr)
        return 2
    except (DeviceError, ValueError, OSError) as exc:
        print(f"qkdctl: cannot open {args.url!r} with driver {args.driver!r}: {exc}",
              file=sys.stderr)
        return 1
    report = {"driver": args.driver, "url": args.url}
    try:
        # Not every model can identify itself (a MEMS switch has no *IDN?); all report status.
        for operation in ("identify", "status"):
            if callable(getattr(device, operation, None)):
                report[operation] = _as_jsonable(getattr(device, operation)())
    except DeviceError as exc:
        print(f"qkdctl: {exc}", file=sys.stderr)
        return 1
    finally:
        device.close()
    print(json.dumps(report))
    return 0


def _timeout_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(f"{text!r} is outside the accepted range "
                                         f"(0, {MAX_TIMEOUT_S:g}] s")
    return value


class _Parser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit status 2 (argparse adds a usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qkdctl", description="QKD node client and admin tool")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("drivers", help="list the registered device drivers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_drivers)
    p = sub.add_parser("status", help="open a device by driver name and URL, print its "
                                      "identity and status")
    p.add_argument("--driver", required=True, help="registered driver name (see 'qkdctl drivers')")
    p.add_argument("--url", required=True,
                   help="device URL: socket://host:port, a VISA resource "
                        "(TCPIP::host::port::SOCKET, ASRL/dev/ttyUSB0::INSTR …), a serial device "
                        "path or a pyserial URL")
    p.add_argument("--timeout-s", type=_timeout_s, default=2.0, metavar="SECONDS",
                   help=f"most each device call may take, reconnects and retries included; "
                        f"seconds in (0, {MAX_TIMEOUT_S:g}] (default 2)")
    p.set_defaults(handler=_cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

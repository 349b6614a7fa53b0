"""``qkdctl``: the client and administrator's command line.

Device administration (``drivers``, ``status --driver --url``), key requests against a node's
key service over CurveZMQ (``status --slave``, ``enc-keys``, ``dec-keys``, ``open-connect``,
``get-key``, ``close``) and the node's admin view of the key service over its admin socket
(``clients``, ``reservations``, ``reload-clients``).

Output is a table for people or one JSON object with ``--json``. Key material is written only
when asked: ``--out FILE`` (a new file, mode 0600) or ``--show-keys`` (stdout). Exit status:
0 success, 1 the service or device refused (an error status, or an ETSI 004 status other than
0), 2 usage or local file error, 3 no answer (timeout, no node at the admin socket).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import json
import math
import os
import sys

from drivers import registry
from drivers.errors import DeviceError, InvalidDeviceUrl

MAX_TIMEOUT_S = 3600.0
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3
DEFAULT_ADMIN_SOCKET = "/run/qkd-node/admin.sock"


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
    if args.driver is None and args.url is None:
        if args.slave is None:
            print("qkdctl: status needs --driver and --url (a device) or --slave (the key "
                  "service)", file=sys.stderr)
            return EXIT_USAGE
        return _ks_status(args)
    if args.driver is None or args.url is None:
        print("qkdctl: device status needs both --driver and --url", file=sys.stderr)
        return EXIT_USAGE
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


def _count(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside [{low}, {high}]")
        return value
    return parse


def _uuid(text: str) -> str:
    import uuid
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


class _Fail(Exception):
    """A one-line failure with its exit status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _client(args: argparse.Namespace):
    from daemon.curve_keys import KeyFileError, load_keypair, load_public_key
    from daemon.keyservice.client import KeyClient

    missing = [flag for flag, v in (("--endpoint", args.endpoint),
                                    ("--server-key", args.server_key),
                                    ("--client-key", args.client_key)) if not v]
    if missing:
        raise _Fail(EXIT_USAGE, f"the key service needs {', '.join(missing)} (or the "
                                f"QKD_KS_* environment variables)")
    try:
        server = load_public_key(args.server_key)
        pair = load_keypair(args.client_key)
    except KeyFileError as exc:
        raise _Fail(EXIT_USAGE, str(exc)) from None
    return KeyClient(args.endpoint, server_public_key=server, public_key=pair.public,
                     secret_key=pair.secret, timeout_s=args.timeout_s, retries=args.retries)


def _ks_call(args: argparse.Namespace, fn):
    """Run ``fn(client)``; service errors and silence become ``_Fail``."""
    from daemon.keyservice.client import KeyServiceError, KeyServiceTimeout

    if args.out and os.path.exists(args.out):
        raise _Fail(EXIT_USAGE, f"--out {args.out} exists; refusing to overwrite key material")
    client = _client(args)
    try:
        return fn(client)
    except KeyServiceError as exc:
        detail = f" ({json.dumps(exc.details)[:200]})" if exc.details else ""
        raise _Fail(EXIT_REFUSED, f"{args.endpoint} answered {exc.status}: {exc.message}"
                                  f"{detail}") from None
    except KeyServiceTimeout as exc:
        raise _Fail(EXIT_NO_ANSWER, f"{exc} (is the node up, and are --server-key and "
                                    f"--client-key the right keys?)") from None
    finally:
        client.close()


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _emit_keys(args: argparse.Namespace, keys, extra: dict | None = None) -> None:
    """Print key IDs (and keys only with --show-keys); write them with --out."""
    records = [{"key_ID": str(k.key_id), "size": 8 * len(k.key)} for k in keys]
    try:
        if args.out:
            payload = json.dumps({"keys": [{"key_ID": str(k.key_id),
                                            "key": base64.b64encode(k.key).decode()}
                                           for k in keys]}).encode()
            try:
                fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise _Fail(EXIT_USAGE, f"cannot create --out {args.out}: "
                                        f"{exc.strerror}") from None
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
        if args.show_keys:
            for r, k in zip(records, keys):
                r["key"] = base64.b64encode(k.key).decode()
        if args.json:
            print(json.dumps({**(extra or {}), "keys": records,
                              **({"written_to": args.out} if args.out else {})}))
        else:
            for name, value in (extra or {}).items():
                print(f"{name}: {value}")
            print(_table(records, ["key_ID", "size", *(["key"] if args.show_keys else [])]))
            if args.out:
                print(f"keys written to {args.out}")
            elif not args.show_keys:
                print("(keys not shown: --out FILE or --show-keys)", file=sys.stderr)
    finally:
        for k in keys:
            k.wipe()


def _guarded(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _Fail as exc:
            print(f"qkdctl: {exc}", file=sys.stderr)
            return exc.code
    return run


@_guarded
def _ks_status(args: argparse.Namespace) -> int:
    args.out = None
    body = _ks_call(args, lambda c: c.status(args.slave))
    if args.json:
        print(json.dumps(body))
    else:
        print(_table([{"field": k, "value": v} for k, v in body.items()], ["field", "value"]))
    return EXIT_OK


@_guarded
def _cmd_enc_keys(args: argparse.Namespace) -> int:
    keys = _ks_call(args, lambda c: c.enc_keys(args.slave, number=args.number, size=args.size))
    _emit_keys(args, keys)
    return EXIT_OK


@_guarded
def _cmd_dec_keys(args: argparse.Namespace) -> int:
    keys = _ks_call(args, lambda c: c.dec_keys(args.master, args.key_ids))
    _emit_keys(args, keys)
    return EXIT_OK


@_guarded
def _cmd_open_connect(args: argparse.Namespace) -> int:
    args.out = None
    qos = {"key_chunk_size": args.chunk_bytes, "timeout": args.stream_timeout_ms,
           "TTL": args.ttl_s, "priority": args.priority}
    body = _ks_call(args, lambda c: c.open_connect(args.source, args.destination, qos,
                                                   key_stream_id=args.key_stream_id))
    if args.json:
        print(json.dumps(body))
    else:
        print(_table([{"status": body.get("status"), "key_stream_id": body.get("key_stream_id"),
                       "message": body.get("message", "")}],
                     ["status", "key_stream_id", "message"]))
    return EXIT_OK if body.get("status") == 0 else EXIT_REFUSED


_ETSI004 = {0: "successful", 1: "peer not connected", 2: "insufficient key",
            3: "peer application not connected", 4: "no QKD connection",
            5: "key_stream_id in use", 6: "timeout", 7: "QoS not met", 8: "metadata too small"}


@_guarded
def _cmd_get_key(args: argparse.Namespace) -> int:
    got = _ks_call(args, lambda c: c.get_stream_key(args.key_stream_id, args.index))
    if got.key is None:
        text = _ETSI004.get(got.status, "unknown")
        if args.json:
            print(json.dumps({"status": got.status, "index": got.index, "meaning": text}))
        else:
            print(f"index {got.index}: status {got.status} ({text})")
        return EXIT_REFUSED
    _emit_keys(args, [got.key], {"status": got.status, "index": got.index})
    return EXIT_OK


@_guarded
def _cmd_close(args: argparse.Namespace) -> int:
    args.out = None
    body = _ks_call(args, lambda c: c.close_stream(args.key_stream_id))
    print(json.dumps(body) if args.json else f"status {body.get('status')} "
          f"({_ETSI004.get(body.get('status'), 'unknown')})")
    return EXIT_OK if body.get("status") == 0 else EXIT_REFUSED


def _admin(args: argparse.Namespace, request: dict) -> dict:
    from daemon.runtime.admin import AdminSocketError, request as admin_request

    try:
        reply = admin_request(args.admin_socket, request)
    except AdminSocketError as exc:
        raise _Fail(EXIT_NO_ANSWER, str(exc)) from None
    if not reply.get("ok"):
        raise _Fail(EXIT_REFUSED, f"the node at {args.admin_socket} refused: "
                                  f"{reply.get('error', 'no reason given')}")
    return reply


@_guarded
def _cmd_admin_view(args: argparse.Namespace) -> int:
    view = _admin(args, {"op": "keyservice"}).get("keyservice")
    if not isinstance(view, dict):
        raise _Fail(EXIT_REFUSED, f"the node at {args.admin_socket} runs no key service")
    if args.view == "clients":
        if args.json:
            print(json.dumps({"clients": view.get("clients", []),
                              "rejected_client_keys": view.get("rejected_client_keys")}))
        else:
            print(_table(view.get("clients", []), ["sae_id", "fingerprint"]))
        return EXIT_OK
    if args.json:
        print(json.dumps({k: view.get(k) for k in ("reservations", "pool", "streams",
                                                     "unacknowledged_voids")}))
    else:
        print(_table(view.get("reservations", []), ["master_SAE_ID", "slave_SAE_ID", "keys"]))
        pool = view.get("pool", {})
        print(f"pool: {pool.get('issuable')} keys of {pool.get('key_size')} bits to issue "
              f"({pool.get('leased_remaining')} leased), store holds {pool.get('store_keys')} "
              f"keys; {len(view.get('streams', []))} streams open; "
              f"{view.get('unacknowledged_voids')} voided keys not yet confirmed by the peer")
    return EXIT_OK


@_guarded
def _cmd_reload_clients(args: argparse.Namespace) -> int:
    reply = _admin(args, {"op": "keyservice_reload"})
    reply.pop("ok", None)
    print(json.dumps(reply) if args.json else f"allow-list reloaded: {reply}")
    return EXIT_OK


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

    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("key service connection")
    g.add_argument("--endpoint", default=os.environ.get("QKD_KS_ENDPOINT"),
                   help="the node's key service, e.g. tcp://127.0.0.1:7200 "
                        "(default: $QKD_KS_ENDPOINT)")
    g.add_argument("--server-key", default=os.environ.get("QKD_KS_SERVER_KEY"), metavar="FILE",
                   help="the node's public key certificate (default: $QKD_KS_SERVER_KEY)")
    g.add_argument("--client-key", default=os.environ.get("QKD_KS_CLIENT_KEY"), metavar="FILE",
                   help="this client's secret key certificate, mode 0600 "
                        "(default: $QKD_KS_CLIENT_KEY)")
    g.add_argument("--retries", type=_count(1, 10), default=3,
                   help="attempts per request, same request ID each time (1..10, default 3)")
    g.add_argument("--json", action="store_true", help="one JSON object on stdout")
    keys_out = argparse.ArgumentParser(add_help=False)
    g = keys_out.add_argument_group("key material (written only when asked)")
    g.add_argument("--out", metavar="FILE",
                   help="write the keys as JSON to FILE (created, mode 0600, never overwritten)")
    g.add_argument("--show-keys", action="store_true", help="print the keys (base64) on stdout")
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--admin-socket", default=DEFAULT_ADMIN_SOCKET, metavar="PATH",
                       help=f"the node's admin socket (default {DEFAULT_ADMIN_SOCKET})")
    admin.add_argument("--json", action="store_true", help="one JSON object on stdout")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument("--timeout-s", type=_timeout_s, default=2.0, metavar="SECONDS",
                         help=f"per attempt; seconds in (0, {MAX_TIMEOUT_S:g}] (default 2)")

    p = sub.add_parser("status", parents=[conn, timeout],
                       help="a device's identity and status (--driver, --url), or the key "
                            "service's ETSI 014 status for a slave SAE (--slave)")
    p.add_argument("--driver", help="registered driver name (see 'qkdctl drivers')")
    p.add_argument("--url",
                   help="device URL: socket://host:port, a VISA resource "
                        "(TCPIP::host::port::SOCKET, ASRL/dev/ttyUSB0::INSTR …), a serial device "
                        "path or a pyserial URL")
    p.add_argument("--slave", help="key service: the slave SAE ID at the peer node")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("enc-keys", parents=[conn, timeout, keys_out],
                       help="ETSI 014 get key: new keys for a slave SAE at the peer node")
    p.add_argument("--slave", required=True, help="the slave SAE ID")
    p.add_argument("--number", type=_count(1, 1 << 20), default=1, help="keys (default 1)")
    p.add_argument("--size", type=_count(8, 1 << 20), help="bits per key (default: the node's)")
    p.set_defaults(handler=_cmd_enc_keys)

    p = sub.add_parser("dec-keys", parents=[conn, timeout, keys_out],
                       help="ETSI 014 get key with key IDs: fetch keys a master SAE received")
    p.add_argument("--master", required=True, help="the master SAE ID")
    p.add_argument("--key-id", required=True, action="append", type=_uuid, dest="key_ids",
                   metavar="UUID", help="a key ID (repeat for several)")
    p.set_defaults(handler=_cmd_dec_keys)

    p = sub.add_parser("open-connect", parents=[conn, timeout],
                       help="ETSI 004 OPEN_CONNECT: open a key stream")
    p.add_argument("--source", required=True)
    p.add_argument("--destination", required=True)
    p.add_argument("--key-stream-id", help="join the stream the other end opened")
    p.add_argument("--chunk-bytes", type=_count(1, 1 << 17), required=True,
                   help="QoS key_chunk_size: bytes per key")
    p.add_argument("--stream-timeout-ms", type=_count(0, 3_600_000), default=0,
                   help="QoS timeout: how long get-key may wait for key (0: 1000 ms)")
    p.add_argument("--ttl-s", type=_count(0, 31_536_000), default=0, help="QoS TTL")
    p.add_argument("--priority", type=_count(0, 255), default=0, help="QoS priority")
    p.set_defaults(handler=_cmd_open_connect)

    p = sub.add_parser("get-key", parents=[conn, timeout, keys_out],
                       help="ETSI 004 GET_KEY: the key of one index of a stream")
    p.add_argument("--key-stream-id", required=True)
    p.add_argument("--index", type=_count(0, 1 << 53), required=True)
    p.set_defaults(handler=_cmd_get_key)

    p = sub.add_parser("close", parents=[conn, timeout], help="ETSI 004 CLOSE: end a stream")
    p.add_argument("--key-stream-id", required=True)
    p.set_defaults(handler=_cmd_close)

    p = sub.add_parser("clients", parents=[admin],
                       help="admin: the key service's allow-list (SAE IDs, key fingerprints)")
    p.set_defaults(handler=_cmd_admin_view, view="clients")
    p = sub.add_parser("reservations", parents=[admin],
                       help="admin: keys reserved here for slave SAEs, pool fill, streams")
    p.set_defaults(handler=_cmd_admin_view, view="reservations")
    p = sub.add_parser("reload-clients", parents=[admin],
                       help="admin: re-read the client allow-list from the node's config")
    p.set_defaults(handler=_cmd_reload_clients)
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

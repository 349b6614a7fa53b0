"""``qkd-node status``: ask a running node over its admin socket; a table or ``--json``."""

from __future__ import annotations

import argparse
import json
import sys

from daemon import config as cfg
from daemon.runtime.admin import AdminSocketError, request


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkd-node status",
                                     description="the state of a running node")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the node's node.toml (its admin socket is used)")
    where.add_argument("--socket", help="the node's admin socket")
    parser.add_argument("--json", action="store_true", help="print the status as one JSON object")
    return parser


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _rate(x) -> str:
    if not x:
        return "0"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def render(status: dict) -> str:
    lines = [f"node {status['node']}  pid {status['pid']}  up {status['uptime_s']:.0f} s"]
    head = ("LINK", "ROLE", "STATE", "BLOCKS ok/aborted", "QBER", "SECRET bit/s", "KEYS",
            "STORE", "AUTH bits left")
    rows = []
    for ln in status["links"]:
        auth = "-" if ln["auth_bits_left"] is None else str(ln["auth_bits_left"])
        rows.append((ln["link"], ln["role"], ln["state"],
                     f"{ln['blocks_ok']}/{ln['blocks_aborted']}", _pct(ln["qber"]),
                     _rate(ln["secret_bits_per_s"]), str(ln["keys_stored"]),
                     _pct(ln["store_fill"]), auth))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for r in (head, *rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for ln in status["links"]:
        if ln["abort_reasons"]:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(ln["abort_reasons"].items()))
            lines.append(f"  {ln['link']}: aborted blocks by reason: {reasons}")
        for name, text in sorted(ln["alarms"].items()):
            lines.append(f"  {ln['link']}: ALARM {name}: {text}")
        if ln.get("note"):
            lines.append(f"  {ln['link']}: note: {ln['note']}")
        lines.extend(_loop_lines(ln))
    ks = status.get("keyservice")
    if ks is not None:
        lines.append(_keyservice_line(ks))
    return "\n".join(lines)


def _loop_lines(ln: dict) -> list[str]:
    """One line per control loop of the link (Bob's): its state and its last action."""
    out = []
    for name, loop in sorted((ln.get("control") or {}).get("loops", {}).items()):
        state = loop.get("state", "?") + ("" if loop.get("healthy", True) else ", UNHEALTHY")
        last = f"; last action: {loop['last_action']}" if loop.get("last_action") else ""
        out.append(f"  {ln['link']}: loop {name} ({loop.get('kind', '?')}): {state}{last}")
    return out


def _keyservice_line(ks: dict) -> str:
    if ks.get("state") != "serving":
        return f"key service {ks.get('endpoint')}: {ks.get('state')}"
    line = (f"key service {ks['endpoint']} ({ks['kme_id']}, link {ks['link']}): "
            f"{ks['clients']} client(s), {ks['keys_issuable']} keys to issue, "
            f"{ks['keys_reserved_for_peer']} reserved for the peer's SAEs; "
            f"{ks['requests']} requests ({ks['errors']} errors), {ks['keys_delivered']} keys "
            f"delivered")
    if ks.get("rejected_client_keys"):
        line += f"; {ks['rejected_client_keys']} unknown client key(s) refused"
    if ks.get("unacknowledged_voids"):
        line += f"; {ks['unacknowledged_voids']} voided key(s) not yet confirmed by the peer"
    return line


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.config is not None:
        try:
            path = cfg.load(args.config).admin_socket
        except cfg.ConfigError as exc:
            print(f"qkd-node status: error: {exc}", file=sys.stderr)
            return 2
    else:
        path = args.socket
    try:
        reply = request(path, {"op": "status"})
    except AdminSocketError as exc:
        print(f"qkd-node status: error: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"qkd-node status: error: the node says: {reply.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(reply["status"]) if args.json else render(reply["status"]))
    return 0

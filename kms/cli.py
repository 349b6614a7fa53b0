"""``qkd-kms``: run a site, administer it, play a vehicle terminal, or run the demo.

Admin commands open the site's store directly (SQLite in WAL mode admits them beside the
running server) and take effect at once: the server reads the store on every request and
every handshake, so a terminal revoked here is refused from its next message. Every listing
takes ``--json``. Errors print one line and exit 2; nothing prints key material.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from kms import config as cfgmod
from kms.errors import KmsError
from kms.notify import sd_notify


def _site(args):
    from kms.platform import KeyCloudPlatform
    from kms.server import KeyManagementServer
    from kms.store import Store
    cfg = cfgmod.load(args.config)
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kms = KeyManagementServer(Store(cfg.db_path), cfg.policy, None, site=cfg.name,
                              pool_targets=cfg.pool_targets)
    return cfg, kms, KeyCloudPlatform(kms)


def _out(args, obj, text_lines) -> None:
    if args.json:
        print(json.dumps(obj, indent=1, sort_keys=True))
    else:
        for line in text_lines:
            print(line)


def cmd_run(args) -> int:
    from kms.site import Site
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    site = Site.from_config(cfgmod.load(args.config)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("qkd.kms").info("%s: api %s, depot %s", site.name, site.road.endpoint,
                                      site.depot.endpoint)
    sd_notify("READY=1")
    stop.wait()
    sd_notify("STOPPING=1")
    site.stop()
    return 0


def cmd_keygen(args) -> int:
    from kms.site import SERVER_KEY_FILE, keypair_file, sae_credentials
    from kms.keysource import sae_id
    cfg = cfgmod.load(args.config)
    pub, _ = keypair_file(cfg.state_dir / SERVER_KEY_FILE)
    creds = sae_credentials(cfg.state_dir, cfg.policy.service_levels)
    site_sae = cfg.node.site_sae if cfg.node else cfg.name
    allow = {sae_id(site_sae, s): c.public_key.decode() for s, c in sorted(creds.items())}
    _out(args, {"server_public_key": pub.decode(), "node_allow_list": allow},
         [f"server public key (terminals and applications pin this): {pub.decode()}",
          "node key-service allow-list (public key = SAE ID), one client per service:",
          *[f'  "{k}" = "{s}"' for s, k in allow.items()]])
    return 0


def cmd_levels(args) -> int:
    cfg = cfgmod.load(args.config)
    levels = [lv.as_dict() for lv in sorted(cfg.policy.levels.values(), key=lambda x: x.rank)]
    _out(args, levels, [f"{lv['name']:<13} rank {lv['rank']}  {','.join(lv['algorithms']):<12} "
                        f"{lv['key_size_bits']:>5} bit  age<={lv['max_key_age_s']:g}s  "
                        f"rotate {lv['rotation_interval_s']:g}s  classical "
                        f"{'yes' if lv['allow_classical'] else 'no'}  roles "
                        f"{','.join(lv['roles'])}" for lv in levels])
    return 0


def cmd_services(args) -> int:
    cfg = cfgmod.load(args.config)
    rows = [{"service": s, "level": lv} for s, lv in sorted(cfg.policy.service_levels.items())]
    _out(args, rows, [f"{r['service']:<14} {r['level']}" for r in rows])
    return 0


def cmd_pools(args) -> int:
    _, kms, _ = _site(args)
    rows = kms.status()
    _out(args, rows, [f"{r['service']:<14} {r['level']:<13} quantum {r['quantum_keys']:>6}  "
                      f"classical {r['classical_keys']:>5}  drawn/h {r['draws_last_hour']:>5}"
                      f"  target {r['target']}" for r in rows])
    return 0


def cmd_report(args) -> int:
    _, kms, _ = _site(args)
    rows = kms.replacement_report()
    _out(args, rows, [f"{r['service']:<14} classical share: pool "
                      f"{100 * r['classical_share_of_pool']:5.1f} %, draws (24 h) "
                      f"{100 * r['classical_share_of_draws_24h']:5.1f} %  ({r['classical_keys']}"
                      f" classical, {r['quantum_keys']} quantum, {r['classical_retired']} "
                      "retired)" for r in rows])
    return 0


def cmd_legacy_import(args) -> int:
    """File format: one key per line, 'UUID HEX-OR-BASE64' (# comments allowed)."""
    _, kms, _ = _site(args)
    keys = []
    for n, line in enumerate(Path(args.file).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KmsError(f"{args.file}:{n}: expected 'KEY-UUID KEY' (hex or base64)")
        try:
            raw = bytes.fromhex(parts[1])
        except ValueError:
            try:
                raw = base64.b64decode(parts[1], validate=True)
            except ValueError:
                raise KmsError(f"{args.file}:{n}: key is neither hex nor base64") from None
        keys.append((parts[0], raw))
    n = kms.import_legacy(args.service, keys, args.origin)
    _out(args, {"imported": n, "service": args.service}, [f"imported {n} classical keys "
                                                          f"into {args.service}"])
    return 0


def cmd_terminals(args) -> int:
    _, _, platform = _site(args)
    if args.action == "list":
        rows = platform.list_terminals(args.limit, args.offset)
        _out(args, rows, [f"{r['terminal_id']:<16} {r['vehicle']:<20} "
                          f"{'REVOKED' if r['revoked'] else 'active ':<8} left "
                          f"{r['keys_left']:>5} used {r['keys_used']:>6}" for r in rows])
    elif args.action == "status":
        st = platform.terminal_status(_need_id(args))
        _out(args, st, [f"{k}: {v}" for k, v in st.items()])
    elif args.action == "revoke":
        n = platform.revoke(_need_id(args), args.reason)
        _out(args, {"terminal_id": args.id, "revoked": True, "mirror_keys_erased": n},
             [f"terminal {args.id} revoked; {n} mirror keys erased"])
    elif args.action == "register":
        if not args.vehicle or not args.public_key:
            raise KmsError("terminals register needs --vehicle and --public-key")
        platform.register(_need_id(args), args.vehicle, args.public_key)
        _out(args, {"terminal_id": args.id, "registered": True},
             [f"terminal {args.id} registered"])
    return 0


def _need_id(args) -> str:
    if not args.id:
        raise KmsError(f"terminals {args.action} needs a terminal ID")
    return args.id


def cmd_audit(args) -> int:
    _, kms, _ = _site(args)
    rows = kms.audit_log(args.limit)
    _out(args, rows, [f"{r['ts']:.3f} {r['actor']:<14} {r['action']:<14} {r['subject']:<14} "
                      f"{'granted' if r['granted'] else 'REFUSED'}  {r['reason']}"
                      for r in rows])
    return 0


def cmd_terminal(args) -> int:
    """Play a vehicle: the terminal SDK against a running platform."""
    from kms.terminal import Terminal, TerminalVault
    vault = TerminalVault(args.state, args.id)
    if args.action == "pubkey":
        print(vault.public_key.decode())
        return 0
    if args.action == "left":
        _out(args, vault.records_left(), [f"{s}: {n}" for s, n in
                                          sorted(vault.records_left().items())])
        return 0
    if not (args.platform_key and args.depot and args.road):
        raise KmsError("terminal charge/send/login need --platform-key, --depot and --road")
    t = Terminal(vault, args.platform_key.encode(), depot=args.depot, road=args.road)
    try:
        if args.action == "charge":
            n = t.charge()
            _out(args, {"charged": n, "left": t.records_left()}, [f"charged {n} keys"])
        elif args.action == "send":
            if not args.service or args.text is None:
                raise KmsError("terminal send needs --service and --text")
            r = t.send_record(args.service, args.text.encode())
            _out(args, r, [f"record accepted under key {r['key_ID']}"])
        elif args.action == "login":
            r = t.login()
            _out(args, r, [f"logged in: {r['terminal_id']} ({r['vehicle']})"])
    finally:
        t.close()
    return 0


def cmd_demo(args) -> int:
    from kms.demo import run_demo
    return run_demo(vehicles=args.vehicles, records=args.records, json_out=args.json,
                    nodes_file=args.nodes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qkd-kms", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help_, config=True):
        sp = sub.add_parser(name, help=help_)
        if config:
            sp.add_argument("--config", required=True, help="site.toml")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(fn=fn)
        return sp

    add("run", cmd_run, "run the site's KMS and key cloud platform")
    add("keygen", cmd_keygen, "make the site's keypairs; print the node allow-list")
    add("levels", cmd_levels, "security levels and their policies")
    add("services", cmd_services, "business services and their levels")
    add("pools", cmd_pools, "keys per service pool")
    add("report", cmd_report, "share of each service still on classical keys")
    sp = add("audit", cmd_audit, "latest allocation decisions and why")
    sp.add_argument("--limit", type=int, default=30)
    sp = add("legacy-import", cmd_legacy_import, "import classical keys into a service pool")
    sp.add_argument("--service", required=True)
    sp.add_argument("--origin", required=True, help="where the keys come from (recorded)")
    sp.add_argument("file", help="lines of 'KEY-UUID KEY' (hex or base64)")
    sp = add("terminals", cmd_terminals, "list, status, register or revoke vehicle terminals")
    sp.add_argument("action", choices=("list", "status", "revoke", "register"))
    sp.add_argument("id", nargs="?")
    sp.add_argument("--reason", default="revoked by admin")
    sp.add_argument("--vehicle")
    sp.add_argument("--public-key", metavar="Z85",
                    help="the terminal's CURVE public key; write --public-key=KEY, since a Z85 "
                         "key may begin with '-'")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--offset", type=int, default=0)
    sp = add("terminal", cmd_terminal, "play a vehicle terminal against a platform",
             config=False)
    sp.add_argument("action", choices=("pubkey", "charge", "send", "login", "left"))
    sp.add_argument("--state", required=True, help="the terminal's state directory")
    sp.add_argument("--id", required=True, help="terminal ID")
    sp.add_argument("--platform-key", metavar="Z85",
                    help="the platform's public key (Z85; write --platform-key=KEY, since a "
                         "Z85 key may begin with '-')")
    sp.add_argument("--depot", help="depot endpoint, e.g. tcp://127.0.0.1:7301")
    sp.add_argument("--road", help="API endpoint, e.g. tcp://127.0.0.1:7300")
    sp.add_argument("--service")
    sp.add_argument("--text")
    sp = add("demo", cmd_demo, "two sites, three vehicles, one revoked mid-run", config=False)
    sp.add_argument("--vehicles", type=int, default=3)
    sp.add_argument("--records", type=int, default=4)
    sp.add_argument("--nodes", default=None, metavar="FILE",
                    help="two running nodes' key services to use (endpoints, server keys, "
                         "each service's SAE keypair; see docs/kms.md); default: two "
                         "stand-in key services")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KmsError as exc:
        print(f"qkd-kms {args.cmd}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"qkd-kms {args.cmd}: {exc.strerror or exc} ({exc.filename or ''})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

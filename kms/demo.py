"""``qkd-kms demo``: two sites, three vehicles charged at the depot, one revoked mid-run.

By default it runs without a node daemon: ``sim_nodes.StandInNodes`` stands up two key services
(the node's own server code over CurveZMQ on loopback) that hand out matching keys. With
``nodes_file`` (``qkd-kms demo --nodes FILE``, see ``demo_nodes``) the two sites use two running
nodes' key services instead, reached through the key-service client only; ``qkd-node
demo-nodes`` runs it that way against its two real nodes. Everything after that goes through
the same sockets and files a deployment uses: site A's KMS and key
cloud platform with their SQLite store, site B's KMS, vehicle terminals with their sealed
vaults, each talking to the platform over pinned CurveZMQ links.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import tempfile
from pathlib import Path

import zmq

from kms.api import Api
from kms.config import build_policy
from kms.crypto import AES_GCM, OTP, open_sealed, seal
from kms.demo_nodes import load_nodes
from kms.errors import KmsError
from kms.platform import KeyCloudPlatform
from kms.policy import SERVICES
from kms.rpc import RpcClient
from kms.server import KeyManagementServer
from kms.sim_nodes import StandInNodes
from kms.site import Site
from kms.store import Store
from kms.terminal import Terminal, TerminalVault

PLAN = {"position": 8, "cargo": 4, "waybills": 4, "identity": 2, "password-auth": 3}
POOL_SPARE = 2          # keys per service pool beyond what the vehicles' charges take
NODE_TIMEOUT_S = 5.0    # per attempt at a real node (a loaded machine fsyncs slowly)


def pool_targets(vehicles: int) -> dict[str, int]:
    """Site A's pool sizes: the charges of ``vehicles`` terminals, the application's waybill
    key and a small spare, so that a real node's store is not drained for keys never used (a
    critical-level key is 8192 bits, 32 of the node's stored keys)."""
    return {s: vehicles * PLAN.get(s, 0) + POOL_SPARE + (s == "waybills") for s in SERVICES}


def _nodes(nodes_file: str | None):
    """Both sites' nodes: the running ones ``nodes_file`` names, or two stand-ins."""
    if nodes_file is None:
        return StandInNodes(SERVICES, link_bytes=1 << 21)
    return contextlib.nullcontext(load_nodes(nodes_file, SERVICES))


class _Printer:
    def __init__(self, json_out: bool):
        self.json_out = json_out
        self.events: list[dict] = []

    def __call__(self, step: str, text: str, **fields) -> None:
        self.events.append({"step": step, **fields})
        if self.json_out:
            print(json.dumps({"step": step, **fields}), flush=True)
        else:
            print(f"[{step}] {text}", flush=True)


def run_demo(vehicles: int = 3, records: int = 4, json_out: bool = False,
             workdir: str | None = None, nodes_file: str | None = None) -> int:
    say = _Printer(json_out)
    nodes = _nodes(nodes_file)      # a bad file fails here, before anything starts
    with tempfile.TemporaryDirectory(prefix="qkd-kms-demo-") as tmp, nodes as (node_a, node_b):
        root = Path(workdir or tmp)
        kind = "stand-in" if nodes_file is None else "running nodes'"
        say("nodes", f"two {kind} key services: A {node_a.endpoint}, B {node_b.endpoint}",
            a=node_a.endpoint, b=node_b.endpoint, real=nodes_file is not None)
        timeouts = {} if nodes_file is None else {"timeout_s": NODE_TIMEOUT_S, "retries": 3}
        app_a, app_b = zmq.curve_keypair(), zmq.curve_keypair()
        users = {"dispatch-a": ["dispatcher"], "dispatch-b": ["dispatcher"],
                 "hr-a": ["hr"], "hr-b": ["hr"]}
        policy = build_policy(users=users)
        kms_a = KeyManagementServer(Store(root / "site-a.db"), policy,
                                    node_a.source(**timeouts), site="A",
                                    pool_targets=pool_targets(vehicles))
        kms_b = KeyManagementServer(Store(root / "site-b.db"), policy,
                                    node_b.source(**timeouts), site="B")
        plat = KeyCloudPlatform(kms_a)
        site_a = Site(kms_a, plat, Api(kms_a, plat, {app_a[0].decode(): "dispatch-a"}, PLAN),
                      server_keys=zmq.curve_keypair(), api_endpoint="tcp://127.0.0.1:*",
                      depot_endpoint="tcp://127.0.0.1:*", name="site-a").start(refill=False)
        plat_b = KeyCloudPlatform(kms_b)
        site_b = Site(kms_b, plat_b, Api(kms_b, plat_b, {app_b[0].decode(): "dispatch-b"}, {}),
                      server_keys=zmq.curve_keypair(), api_endpoint="tcp://127.0.0.1:*",
                      depot_endpoint="tcp://127.0.0.1:*", name="site-b").start(refill=False)
        terminals: dict[str, Terminal] = {}
        revoked = "TRK-002" if vehicles >= 2 else None
        try:
            added = site_a.tick()
            say("refill", "site A pools filled from node A (enc_keys): "
                + ", ".join(f"{s}={n}" for s, n in sorted(added.items())), added=added)

            # -- an application at A encrypts a waybill, one at B decrypts it ---------------
            ca = RpcClient(site_a.road.endpoint, server_public_key=site_a.public_key,
                           public_key=app_a[0], secret_key=app_a[1])
            cb = RpcClient(site_b.road.endpoint, server_public_key=site_b.public_key,
                           public_key=app_b[0], secret_key=app_b[1])
            waybill = b'{"waybill": "WB-2026-0042", "from": "Rotterdam", "to": "Lyon"}'
            got = ca.call("allocate", {"service": "waybills", "algorithm": AES_GCM,
                                       "record_bytes": len(waybill)})
            key_a = bytearray(base64.b64decode(got["key"]))
            sealed = seal(AES_GCM, key_a, waybill, got["key_ID"].encode())
            key_a[:] = bytes(len(key_a))
            say("allocate", f"site A app drew waybills key {got['key_ID'][:8]}…: "
                f"{got['decision']['reason']}", key_id=got["key_ID"], decision=got["decision"])
            back = cb.call("retrieve", {"service": "waybills", "key_ID": got["key_ID"],
                                        "algorithm": AES_GCM})
            key_b = bytearray(base64.b64decode(back["key"]))
            plain = open_sealed(AES_GCM, key_b, sealed, got["key_ID"].encode())
            key_b[:] = bytes(len(key_b))
            say("retrieve", "site B app fetched the same key from node B (dec_keys) and "
                f"decrypted: {plain.decode()}", ok=plain == waybill)
            try:
                cb.call("retrieve", {"service": "cargo", "key_ID": got["key_ID"],
                                     "algorithm": AES_GCM})
            except KmsError as exc:
                say("isolation", f"the same key ID asked for under 'cargo' at B: refused "
                    f"({exc.message})", refused=True)
            ca.close()
            cb.close()

            # -- vehicles: register, charge at the depot, drive -----------------------------
            received: list[tuple[str, str, int]] = []
            site_a.api.on_record = lambda tid, svc, p: received.append((tid, svc, len(p)))
            for i in range(1, vehicles + 1):
                tid = f"TRK-{i:03d}"
                vault = TerminalVault(root / "terminals" / tid, tid)
                plat.register(tid, f"truck {i} (NL-{40 + i}-QK)", vault.public_key.decode())
                t = Terminal(vault, site_a.public_key, depot=site_a.depot.endpoint,
                             road=site_a.road.endpoint, timeout_s=2.0, retries=2)
                n = t.charge()
                terminals[tid] = t
                say("charge", f"{tid} docked and charged {n} keys over the depot link; "
                    f"covers {t.records_left()}", terminal=tid, keys=n)
            for tid, t in terminals.items():
                login = t.login()
                say("login", f"{tid} logged in with its next login key ({login['vehicle']})",
                    terminal=tid, ok=True)
            for r in range(records):
                if r == records // 2 and revoked:
                    n = plat.revoke(revoked, "reported stolen at a rest area")
                    say("revoke", f"{revoked} revoked mid-run: {n} mirror keys erased",
                        terminal=revoked, erased=n)
                for tid, t in terminals.items():
                    service = ("position", "cargo", "waybills", "identity")[r % 4]
                    payload = secrets.token_bytes(200) if service == "identity" else \
                        json.dumps({"terminal": tid, "seq": r, "service": service}).encode()
                    try:
                        t.send_record(service, payload)
                        alg = OTP if service == "identity" else AES_GCM
                        say("record", f"{tid} sent its {service} record ({alg}); platform "
                            "decrypted it and erased the key", terminal=tid, service=service,
                            accepted=True)
                    except KmsError as exc:
                        say("record", f"{tid} {service} record refused: {exc.message}",
                            terminal=tid, service=service, accepted=False)
            for tid, t in terminals.items():
                try:
                    t.login()
                    say("login", f"{tid} logged in again", terminal=tid, ok=True)
                except KmsError as exc:
                    say("login", f"{tid} login refused: {exc.message}", terminal=tid, ok=False)
            for tid, t in terminals.items():
                st = plat.terminal_status(tid)
                say("status", f"{tid}: {'REVOKED' if st['revoked'] else 'active'}, "
                    f"terminal says {t.records_left()} left, platform mirror "
                    f"{st['keys_left']}", terminal=tid, revoked=st["revoked"],
                    mirror=st["keys_left"])
            report = kms_a.replacement_report()
            say("report", "classical share per service at A: " + ", ".join(
                f"{r['service']} {100 * r['classical_share_of_pool']:.0f} %" for r in report),
                report=report)
            say("done", f"{len(received)} records decrypted at the platform", records=len(received))
        finally:
            for t in terminals.values():
                t.close()
                t.vault.close()
            site_a.stop()
            site_b.stop()
    return 0 if outcome_ok(say.events, revoked) else 1


def outcome_ok(events: list[dict], revoked: str | None) -> bool:
    """What the demo shows, checked: the waybill decrypted at B and refused under another
    service; every record of a vehicle not revoked accepted; after the revocation the revoked
    vehicle's records and login refused."""
    def of(step):
        return [e for e in events if e["step"] == step]
    records = of("record")
    cut = next((events.index(e) for e in of("revoke")), len(events))
    return bool(
        [e.get("ok") for e in of("retrieve")] == [True]
        and [e.get("refused") for e in of("isolation")] == [True]
        and records and all(e["accepted"] == (e["terminal"] != revoked
                                              or events.index(e) < cut) for e in records)
        and all(e["ok"] == (e["terminal"] != revoked) for e in of("login")[len(of("charge")):])
        and of("done") and of("done")[0]["records"] == sum(e["accepted"] for e in records))

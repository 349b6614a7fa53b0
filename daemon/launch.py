"""``qkd-node demo-nodes``: two real node processes on simulated hardware, then an attack.

What an operator would do by hand, in order: start the simulated hardware (``qkd-node sim
serve``), write each node's keypair, the shared authentication bootstrap and a config from the
device URLs the simulator publishes, start two ``qkd-node run`` processes and watch them over
their admin sockets. A second run puts an intercept-resend attacker on every pulse: blocks
abort and nothing is stored. Each run stops after ``--seconds`` or once both stores hold
``--keys`` keys, or on Ctrl-C/SIGTERM; every child process is ended before the launcher exits.

Before stopping a run the launcher holds the link (no new blocks), waits until no block is in
flight at either end, and compares the two stores through the admin sockets: key counts, a
SHA-256 of the key IDs and an HMAC of the keys under a fresh random nonce — equal digests mean
the same IDs with the same bits, and no key leaves a node.

Each node also runs its key service (``[keyservice]``), with one client keypair per site: the
dispatcher at Alice's node (site A), the recipient at Bob's (site B). After the honest run's
comparison the launcher plays issue 10's freight exchange (``daemon.keyservice.freight``, the
code of ``examples/freight_records.py``): the dispatcher encrypts a freight record with keys
node A delivers (enc_keys), once with a one-time pad and once with AES-256-GCM; the recipient
fetches the same keys by ID from node B (dec_keys) and decrypts; a second fetch of one of those
IDs is refused. Only key IDs and outcomes are printed, never a key.

Then the freight KMS demo (``qkd-kms demo --nodes FILE``, issue 11) runs against the same two
nodes: each of its business services is an SAE of its own at each node (``kms-a.<service>`` at
Alice's, ``kms-b.<service>`` at Bob's), whose keypairs and allow-list entries the launcher
writes into both node configs before starting them (``add_kms_clients``). The KMS demo runs as
a child process (the daemon never imports ``kms/``) and its lines are shown as they come.

The only module besides ``demo.py`` that starts the simulator (as a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from daemon.peer.auth_keys import write_bootstrap
from daemon.runtime.admin import AdminSocketError, request

RUNS = ("honest", "intercept-resend")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 30.0
AUTH_BOOTSTRAP_BYTES = 1 << 20    # 64 Ki messages each way before the first refill
LINK_ID = "alice-bob"
SITES = {"alice": ("dispatcher", "KME-alice"), "bob": ("recipient", "KME-bob")}   # SAE, KME
KEYSERVICE_TIMEOUT_S = 5.0    # per attempt of a demo client (a loaded machine fsyncs slowly)
ATTACK_ABORTS_ENOUGH = 2      # the attack run may stop once Bob has aborted this many blocks
DEFAULT_SECONDS = 90.0        # without --seconds/--keys: each run stops after this long ...
DEFAULT_KEYS = 1000            # ... or (honest run) once both stores hold this many keys
KMS_SERVICES = ("waybills", "identity", "cargo", "position", "password-auth", "certificates",
                "mobile-app")
"""The freight KMS's business services (``kms.policy.SERVICES``; a test keeps the two equal):
each is one SAE per site at the node."""
KMS_SITES = {"alice": "kms-a", "bob": "kms-b"}      # node -> the KMS site's SAE prefix
KMS_STORED_KEYS = 1400
"""Keys both stores must hold before the honest run stops when the KMS demo follows. Alice may
issue half of them (the store gives even indices to one end, odd to the other); the KMS demo
takes ~330 (its pools: 8 critical-level keys of 8192 bits = 256 stored keys, ~70 of 256 bits),
the node reserves up to ``reserve_ahead`` more per (master, slave) pair (7 pairs x 16) and the
freight exchange a few: ~460 of Alice's ~700."""
KMS_DEMO_TIMEOUT_S = 90.0


class LaunchError(RuntimeError):
    """A child did not start or died; one line naming it (its log file has the rest)."""


def node_run_command(run: str) -> list[str]:
    """How a node is started: ``qkd-node run`` in this interpreter (``--config`` follows)."""
    return [sys.executable, "-m", "daemon.cli", "run"]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_log_line(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""


@dataclass
class RunResult:
    run: str
    seconds: float = 0.0
    stopped_by: str = ""
    nodes: dict = field(default_factory=dict)
    stores: dict = field(default_factory=dict)
    freight: dict | None = None
    kms: dict | None = None

    def summary(self) -> dict:
        bob = self.nodes.get("bob", {})
        return {"run": self.run, "seconds": round(self.seconds, 2), "stopped_by": self.stopped_by,
                "blocks_ok": bob.get("blocks_ok", 0), "blocks_aborted": bob.get("blocks_aborted", 0),
                "abort_reasons": bob.get("abort_reasons", {}),
                "keys": {n: s.get("keys_stored", 0) for n, s in self.nodes.items()},
                "secret_bits_per_s": bob.get("secret_bits_per_s", 0.0), "qber": bob.get("qber"),
                "alarms": {n: s.get("alarms", {}) for n, s in self.nodes.items()},
                **self.stores, **({"freight": self.freight} if self.freight is not None else {}),
                **({"kms": self.kms} if self.kms is not None else {})}


# -- files a run needs --------------------------------------------------------------------------

def write_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """A CurveZMQ keypair in ZeroMQ's certificate files, the secret one private (0600)."""
    from daemon.curve_keys import generate_keypair
    public, secret = generate_keypair(directory, name)
    return Path(public), Path(secret)


def write_private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _q(value: str) -> str:
    return json.dumps(str(value))       # a JSON string is a valid TOML basic string


DEMO_POLICY = {"eps_sec": 1e-10, "eps_cor": 1e-15, "qber_tol": 0.06, "qber_threshold": 0.11,
               "blocks_in_flight": 2, "block_timeout_s": 300}


SIM_LT3_CALIBRATION = {"bloch_vectors": [[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]],
                       "bob_z_probability": 0.5, "max_multi_click_fraction": 0.15}
"""What a calibration run of the simulated LT3 link finds, and only of it: the simulator
prepares exact H, V, D (a real modulator's states are characterised instead), its receiver
splits 50/50 onto matched detectors, and at eta mu ~ 0.2 (the ``snspd`` preset) the squashed
multi-click fraction is ~5 %, so 15 % is its ceiling."""

PROTOCOL_DEFAULTS = {"bb84-decoy": {"sim": (), "distance_km": 10.0, "pulses": 2e9},
                     "lt3": {"sim": ("--protocol", "lt3", "--preset", "snspd"),
                             "distance_km": 2.0, "pulses": 3e8}}
"""What each demo protocol runs on: LT3's bound needs ~3e8-pulse blocks even on a short link
with 60 % detectors (``postprocessing/finite_key_lt.py``), so its demo uses that link."""


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return json.dumps(v)        # an array of numbers reads the same in TOML
    return _q(v) if isinstance(v, (str, Path)) else repr(v)


def node_config(*, node: str, run_dir: Path, endpoint: str, peer: str,
                devices: list[dict], block_pulses: int, keys: dict[str, tuple[Path, Path]],
                auth_file: Path, protocol: str = "bb84-decoy", policy: dict | None = None,
                calibration: dict | None = None, log_level: str = "info",
                keyservice: dict | None = None) -> str:
    """One node's config: Alice binds ``endpoint``, Bob connects to it. ``keyservice``: the
    ``[keyservice]`` table's values (``keyservice_table`` of what ``write_keyservice_files``
    wrote for the node), or none."""
    state = run_dir / node
    lines = ["# written by qkd-node demo-nodes", "[node]", f"id = {_q(node)}",
             f"state_dir = {_q(state)}", f"admin_socket = {_q(state / 'admin.sock')}",
             f"log_level = {_q(log_level)}", "", "[keystore]",
             f"path = {_q(state / 'keys.sqlite')}",
             "capacity_bits = 10_000_000_000", "key_size_bits = 256", "",
             "[[link]]", 'id = "alice-bob"', f"role = {_q(node)}", f"protocol = {_q(protocol)}",
             "", "[link.peer]", f"endpoint = {_q(endpoint)}",
             f"bind = {'true' if node == 'alice' else 'false'}",
             f"public_key_file = {_q(keys[peer][0])}", f"auth_bootstrap_file = {_q(auth_file)}",
             "", "[link.keys]", f"public_key_file = {_q(keys[node][0])}",
             f"secret_key_file = {_q(keys[node][1])}", ""]
    for dev in devices:
        lines += [f"[link.devices.{dev['device']}]", f"driver = {_q(dev['driver'])}",
                  f"url = {_q(dev['url'])}", ""]
    lines += ["[link.policy]", f"block_pulses = {int(block_pulses)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in {**DEMO_POLICY, **(policy or {})}.items()]
    if calibration:
        lines += ["", "[link.calibration]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in calibration.items()]
    if keyservice:
        clients = keyservice.get("clients", [])
        lines += ["", "[keyservice]"]
        lines += [f"{k} = {_toml_value(v) if not isinstance(v, list) else _toml_list(v)}"
                  for k, v in keyservice.items() if k != "clients"]
        for sae, public_key_file in clients:
            lines += ["", "[[keyservice.clients]]", f"sae_id = {_q(sae)}",
                      f"public_key_file = {_q(public_key_file)}"]
    return "\n".join(lines) + "\n"


def _toml_list(values: list) -> str:
    return "[" + ", ".join(_toml_value(v) for v in values) + "]"


def write_keyservice_files(run_dir: Path) -> dict[str, dict]:
    """Per node: the key service's keypair, its one client's keypair (the site's SAE) and the
    ``[keyservice]`` values naming them, on a free loopback port. Each node's service serves
    its own site's SAE and knows the other site's SAE as the peer's."""
    (run_dir / "clients").mkdir(exist_ok=True)
    out = {}
    for node, peer in (("alice", "bob"), ("bob", "alice")):
        sae, kme = SITES[node]
        public, secret = write_keypair(run_dir, f"{node}-keyservice")
        client_public, client_secret = write_keypair(run_dir / "clients", sae)
        out[node] = {
            "endpoint": f"tcp://127.0.0.1:{free_tcp_port()}", "link": LINK_ID,
            "kme_id": kme, "peer_kme_id": SITES[peer][1], "secret_key_file": secret,
            "remote_saes": [SITES[peer][0]], "reserve_ahead": 16, "lease_batch": 256,
            "clients": [(sae, client_public)],
            # for the launcher, not the config: where its clients find their keys
            "_server_public_key_file": public, "_client_secret_key_file": client_secret}
    return out


def keyservice_table(ks: dict) -> dict:
    """The config's values only (the launcher's own notes start with ``_``)."""
    return {k: v for k, v in ks.items() if not k.startswith("_")}


# -- the freight KMS's SAEs (qkd-kms demo --nodes) ---------------------------------------------

def add_kms_clients(run_dir: Path, services: dict[str, dict]) -> Path:
    """Give each node one client per KMS business service (``<site SAE>.<service>``, its own
    keypair), tell it the other site's KMS SAEs, and write the ``qkd-kms demo --nodes`` file
    naming the endpoints, server keys and these keypairs. Changes ``services`` in place, so
    call it before the node configs are written."""
    directory = run_dir / "kms-saes"
    directory.mkdir(exist_ok=True)
    lines = ["# written by qkd-node demo-nodes: the KMS demo's two sites at these nodes"]
    for node, table in (("alice", "site_a"), ("bob", "site_b")):
        peer = "bob" if node == "alice" else "alice"
        ks, sae = services[node], KMS_SITES[node]
        ks["remote_saes"] = [*ks["remote_saes"],
                             *(f"{KMS_SITES[peer]}.{s}" for s in KMS_SERVICES)]
        secrets_by_service = {}
        for service in KMS_SERVICES:
            public, secret = write_keypair(directory, f"{sae}.{service}")
            ks["clients"] = [*ks["clients"], (f"{sae}.{service}", public)]
            secrets_by_service[service] = secret
        lines += ["", f"[{table}]", f"endpoint = {_q(ks['endpoint'])}",
                  f"server_public_key_file = {_q(ks['_server_public_key_file'])}",
                  f"sae = {_q(sae)}", "", f"[{table}.clients]"]
        lines += [f"{_q(s)} = {_q(p)}" for s, p in secrets_by_service.items()]
    path = run_dir / "kms-nodes.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- children ------------------------------------------------------------------------------------

def _popen(argv: list[str], log_path: Path | None, **kw) -> subprocess.Popen:
    # A new session: Ctrl-C reaches the launcher only, which ends the children in order.
    out = open(log_path, "ab") if log_path is not None else subprocess.PIPE
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out if log_path is not None else subprocess.PIPE,
                                start_new_session=True, **kw)
    finally:
        if log_path is not None:
            out.close()


def end_children(children: list[Child]) -> None:
    """SIGTERM every child still running (nodes before the simulator), then SIGKILL stragglers."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
        for stream in (child.proc.stdout, child.proc.stderr):
            if stream is not None:
                stream.close()


def _read_first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].decode() if result and isinstance(result[0], bytes) else \
        (result[0] if result else "")


class Launcher:
    def __init__(self, args, node_command: Callable[[str], list[str]], out, progress,
                 keyservice: bool = True):
        self.args = args
        self.node_command = node_command
        self.keyservice = keyservice     # False: nodes without a key service, no freight
        self.out = out                   # where the summary goes
        self.progress = progress         # where live progress goes
        self.stop = threading.Event()
        self.stop_reason = ""

    def say(self, msg: str) -> None:
        print(msg, file=self.progress, flush=True)

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def start_sim(self, run: str, run_dir: Path, seed: int) -> tuple[Child, list[dict]]:
        argv = [sys.executable, "-m", "daemon.cli", "sim", "serve", "--json", "--base-port", "0", "--seed",
                str(seed), *PROTOCOL_DEFAULTS[self.args.protocol]["sim"],
                "--distance-km", f"{self.args.distance_km:g}"]
        if run == "intercept-resend":
            argv += ["--eve", "intercept-resend", "--eve-fraction", "1.0"]
        if not self.args.realtime:
            argv.append("--fast")
        log = run_dir / "sim.log"
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=open(log, "ab"), start_new_session=True)
        child = Child("sim serve", proc, log)
        line = _read_first_line(proc, START_TIMEOUT_S)
        try:
            endpoints = json.loads(line)["endpoints"]
        except (ValueError, KeyError, TypeError):
            end_children([child])
            raise LaunchError(f"sim serve did not publish its devices "
                              f"({child.last_log_line() or 'no output'}; log {log})") from None
        return child, endpoints

    def one_run(self, run: str, run_dir: Path, seed: int) -> RunResult:
        if run_dir.exists():          # a previous demo's run in --state-dir: start afresh
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        result = RunResult(run)
        children: list[Child] = []
        sim = None
        t0 = time.monotonic()
        try:
            sim, endpoints = self.start_sim(run, run_dir, seed)
            keys = {n: write_keypair(run_dir, n) for n in ("alice", "bob")}
            auth = run_dir / "alice-bob.auth"
            write_bootstrap(auth, AUTH_BOOTSTRAP_BYTES)
            endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
            services = write_keyservice_files(run_dir) if self.keyservice else {}
            kms_nodes = add_kms_clients(run_dir, services) if run == "honest" and services \
                else None
            sockets = {}
            for node, peer in (("alice", "bob"), ("bob", "alice")):
                (run_dir / node).mkdir(exist_ok=True)
                config = run_dir / f"{node}.toml"
                config.write_text(node_config(
                    node=node, run_dir=run_dir, endpoint=endpoint, peer=peer,
                    devices=[e for e in endpoints if e["node"] == node],
                    block_pulses=self.args.pulses, keys=keys, auth_file=auth,
                    protocol=self.args.protocol,
                    calibration=SIM_LT3_CALIBRATION if self.args.protocol == "lt3" else None,
                    keyservice=keyservice_table(services[node]) if services else None))
                log = run_dir / f"{node}.log"
                proc = _popen([*self.node_command(run), "--config", str(config)], log)
                children.append(Child(f"{node}'s node", proc, log))
                sockets[node] = run_dir / node / "admin.sock"
            self.say(f"  sim serve pid {sim.proc.pid}, nodes pid "
                     f"{', '.join(str(c.proc.pid) for c in children)}; configs and logs in "
                     f"{run_dir}")
            self._wait_for_nodes(children, sockets)
            self._watch(run, children, sockets, result, t0)
            result.stores = self._compare_stores(sockets)
            self._final_status(sockets, result)
            if run == "honest" and services:
                result.freight = self._freight(services, result)
            if kms_nodes is not None and not self.stop.is_set():
                result.kms = self._kms_demo(kms_nodes, result)
        finally:
            result.seconds = time.monotonic() - t0
            end_children(children)             # the nodes first: they still talk to the sim
            if sim is not None:
                end_children([sim])
        return result

    def _wait_for_nodes(self, children: list[Child], sockets: dict) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = dict(sockets)
        while pending:
            for child in children:
                if not child.alive():
                    raise LaunchError(f"{child.name} exited with {child.proc.returncode}: "
                                      f"{child.last_log_line()}")
            for node, path in list(pending.items()):
                try:
                    request(path, {"op": "status"}, timeout_s=1.0)
                    del pending[node]
                except AdminSocketError:
                    pass
            if self.stop.wait(0.1):
                return
            if time.monotonic() > deadline:
                raise LaunchError(f"nodes did not answer within {START_TIMEOUT_S:g} s: "
                                  f"{', '.join(pending)}")

    def _watch(self, run: str, children, sockets, result: RunResult, t0: float) -> None:
        args = self.args
        next_line = 0.0
        while True:
            for child in children:
                if not child.alive():
                    raise LaunchError(f"{child.name} exited with {child.proc.returncode}: "
                                      f"{child.last_log_line()}")
            for node, path in sockets.items():
                try:
                    (link,) = request(path, {"op": "status"}, timeout_s=2.0)["status"]["links"]
                    result.nodes[node] = link
                except (AdminSocketError, KeyError, ValueError):
                    pass
            elapsed = time.monotonic() - t0
            a, b = result.nodes.get("alice", {}), result.nodes.get("bob", {})
            keys = min(a.get("keys_stored", 0), b.get("keys_stored", 0))
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + args.progress_interval_s
                self.say(_progress_line(elapsed, a, b))
            if self.stop.is_set():
                result.stopped_by = self.stop_reason
                return
            if args.seconds is not None and elapsed >= args.seconds:
                result.stopped_by = "seconds"
                return
            if run == "honest" and args.keys is not None and keys >= self.honest_keys():
                result.stopped_by = "keys"
                return
            if run != "honest" and b.get("blocks_aborted", 0) >= ATTACK_ABORTS_ENOUGH:
                result.stopped_by = "aborts"
                return
            self.stop.wait(0.25)

    @staticmethod
    def _final_status(sockets: dict, result: RunResult) -> None:
        for node, path in sockets.items():
            try:
                (result.nodes[node],) = request(path, {"op": "status"}, 5.0)["status"]["links"]
            except (AdminSocketError, KeyError, ValueError):
                pass

    def _freight(self, services: dict, result: RunResult) -> dict:
        """Issue 10's exchange between the two nodes' key services (see the module docstring)."""
        if not result.stores.get("stores_identical") or not result.stores["stored_keys"]["alice"]:
            return {"done": False, "why": "no keys stored at both ends"}
        from daemon.curve_keys import load_keypair, load_public_key
        from daemon.keyservice.client import KeyClient, KeyServiceError, KeyServiceTimeout
        from daemon.keyservice.freight import send_and_receive

        clients = {}
        try:
            for node, ks in services.items():
                mine = load_keypair(ks["_client_secret_key_file"])
                clients[node] = KeyClient(
                    ks["endpoint"], server_public_key=load_public_key(
                        ks["_server_public_key_file"]), public_key=mine.public,
                    secret_key=mine.secret, timeout_s=KEYSERVICE_TIMEOUT_S, retries=3)
            sender, recipient = SITES["alice"][0], SITES["bob"][0]
            out = send_and_receive(clients["alice"], clients["bob"], sender=sender,
                                   recipient=recipient)
            try:        # the same key ID once more at B: delivered keys are erased there
                clients["bob"].dec_keys(sender, [out["aes_256_gcm"]["key_ID"]])
                out["second_fetch"] = "DELIVERED AGAIN"
            except KeyServiceError as exc:
                out["second_fetch"] = f"refused ({exc.status}: {exc.message})"
            out["done"] = True
            return out
        except (KeyServiceError, KeyServiceTimeout, OSError, ValueError) as exc:
            return {"done": False, "why": f"{type(exc).__name__}: {exc}"}
        finally:
            for c in clients.values():
                c.close()

    def honest_keys(self) -> int:
        """The honest run's key target: ``--keys``, raised to what the KMS demo needs."""
        return max(self.args.keys, KMS_STORED_KEYS) if self.keyservice else self.args.keys

    def _kms_demo(self, nodes_file: Path, result: RunResult) -> dict:
        """``qkd-kms demo --nodes`` against the two nodes; its lines (no keys) are kept for the
        run's report, shown after the freight exchange's."""
        if not result.stores.get("stores_identical"):
            return {"done": False, "why": "the stores differ or were not compared"}
        stored = result.stores["stored_keys"]["alice"]
        if stored < KMS_STORED_KEYS:        # stopped early (--seconds, Ctrl-C): not a failure
            return {"done": False, "skipped": True,
                    "why": f"skipped: {stored} keys stored, it needs {KMS_STORED_KEYS} "
                           "(a longer --seconds)"}
        self.say("  running the freight KMS demo against the two nodes (its lines follow the "
                 "freight exchange's) ...")
        try:
            run = subprocess.run([sys.executable, "-m", "kms.cli", "demo", "--nodes",
                                  str(nodes_file)], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=KMS_DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"done": False, "why": f"qkd-kms demo did not finish within "
                                          f"{KMS_DEMO_TIMEOUT_S:g} s"}
        lines = run.stdout.splitlines()
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or lines or ["no output"])[-1]
            return {"done": False, "why": f"qkd-kms demo exited with {run.returncode}: {last}",
                    "lines": lines}
        return {"done": True, "lines": lines}

    def _drain(self, sockets: dict) -> None:
        """Hold the link and wait until no block is in flight at either end."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        try:
            for path in sockets.values():
                request(path, {"op": "hold", "held": True}, timeout_s=5.0)
            while time.monotonic() < deadline:
                busy = [request(p, {"op": "status"}, 5.0)["status"]["links"][0]["in_flight"]
                        for p in sockets.values()]
                if not any(busy):
                    return
                time.sleep(0.1)
        except (AdminSocketError, KeyError, IndexError, ValueError):
            return             # the comparison reports what it can

    def _compare_stores(self, sockets: dict) -> dict:
        self._drain(sockets)
        nonce = secrets.token_bytes(32)
        digests = {}
        try:
            for node, path in sockets.items():
                reply = request(path, {"op": "digest", "nonce": nonce.hex()}, timeout_s=10.0)
                (digests[node],) = reply["links"]
        except (AdminSocketError, KeyError, ValueError) as exc:
            return {"stores_compared": False, "stores_identical": False,
                    "compare_error": str(exc)}
        a, b = digests["alice"], digests["bob"]
        same = all(a[k] == b[k] for k in ("n_keys", "n_bits", "ids_sha256", "bits_hmac_sha256"))
        return {"stores_compared": True, "stores_identical": same,
                "stored_keys": {"alice": a["n_keys"], "bob": b["n_keys"]}}


def _progress_line(elapsed: float, a: dict, b: dict) -> str:
    qber = b.get("qber")
    alarms = sorted({*a.get("alarms", {}), *b.get("alarms", {})})
    return (f"  {elapsed:6.1f} s  {b.get('state', 'starting'):<22} blocks ok "
            f"{b.get('blocks_ok', 0)} aborted {b.get('blocks_aborted', 0)}  keys alice "
            f"{a.get('keys_stored', 0)} bob {b.get('keys_stored', 0)}  secret "
            f"{b.get('secret_bits_per_s', 0.0) / 1e3:.3g} kbit/s  QBER "
            f"{'-' if qber is None else f'{qber:.2%}'}  alarms {', '.join(alarms) or '-'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qkd-node demo-nodes",
                                description="two qkd-node processes on simulated hardware")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"stop each run after this long (default {DEFAULT_SECONDS:g} when "
                        f"neither --seconds nor --keys is given)")
    p.add_argument("--keys", type=int, default=None,
                   help=f"stop the honest run once both stores hold this many keys (default "
                        f"{DEFAULT_KEYS} when neither --seconds nor --keys is given; at least "
                        f"{KMS_STORED_KEYS}, what the freight KMS demo after it needs)")
    p.add_argument("--state-dir", default=None,
                   help="keep configs, keys, logs and stores here, in one subdirectory per "
                        "run that a later demo replaces (default: a temporary directory, "
                        "removed at the end)")
    p.add_argument("--json", action="store_true",
                   help="progress on stderr; one JSON summary object per run on stdout")
    p.add_argument("--protocol", choices=tuple(PROTOCOL_DEFAULTS), default="bb84-decoy",
                   help="decoy BB84 (default) or LT3 on a short link with 60 %% detectors "
                        "(the simulator's 'snspd' preset)")
    p.add_argument("--distance-km", type=float, default=None,
                   help="default 10 (bb84-decoy) or 2 (lt3)")
    p.add_argument("--pulses", type=float, default=None,
                   help="pulses per block (default 2e9 for bb84-decoy, 3e8 for lt3)")
    p.add_argument("--realtime", action="store_true",
                   help="simulate at the clock rate instead of as fast as possible")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--progress-interval-s", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def _usage_error(msg: str) -> int:
    print(f"qkd-node demo-nodes: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None,
         node_command: Callable[[str], list[str]] = node_run_command,
         keyservice: bool = True) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.seconds is not None and not args.seconds > 0:
        return _usage_error(f"seconds = {args.seconds:g} must be > 0")
    if args.keys is not None and args.keys < 1:
        return _usage_error(f"keys = {args.keys} must be >= 1")
    for name in ("pulses", "distance_km"):
        if getattr(args, name) is None:
            setattr(args, name, PROTOCOL_DEFAULTS[args.protocol][name])
    if not 1e6 <= args.pulses <= 1e12:
        return _usage_error(f"pulses = {args.pulses:g} is outside [1e6, 1e12]")
    if not 0 < args.distance_km <= 500:
        return _usage_error(f"distance_km = {args.distance_km:g} is outside (0, 500]")
    if args.seconds is None and args.keys is None:
        args.seconds, args.keys = DEFAULT_SECONDS, DEFAULT_KEYS
    out = sys.stdout
    launcher = Launcher(args, node_command, out, sys.stderr if args.json else sys.stdout,
                        keyservice=keyservice)
    previous = {sig: signal.signal(sig, lambda s, _f: launcher.request_stop(
        signal.Signals(s).name)) for sig in (signal.SIGINT, signal.SIGTERM)}
    keep = args.state_dir is not None
    root = Path(args.state_dir) if keep else Path(tempfile.mkdtemp(prefix="qkd-demo-"))
    seed = args.seed if args.seed is not None else secrets.randbits(62)
    results: list[RunResult] = []
    try:
        for i, run in enumerate(RUNS):
            if launcher.stop.is_set():
                break
            title = ("two nodes, honest link" if run == "honest"
                     else "intercept-resend on every pulse: nothing may be stored")
            launcher.say(f"== run {i + 1}: {title} ({args.distance_km:g} km, "
                         f"{'LT3' if args.protocol == 'lt3' else 'decoy BB84'})")
            results.append(launcher.one_run(run, root / run, seed + i))
            launcher.say(_verdict(results[-1]))
            if results[-1].freight is not None:
                launcher.say(_freight_lines(results[-1].freight))
            if results[-1].kms is not None:
                launcher.say(_kms_lines(results[-1].kms))
    except LaunchError as exc:
        print(f"qkd-node demo-nodes: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        for r in results:
            print(json.dumps(r.summary()), file=out, flush=True)
    ok = all(_passed(r) for r in results)
    return 0 if ok else 1


def _passed(r: RunResult) -> bool:
    s = r.summary()
    if r.run == "honest":
        return bool(s.get("stores_compared") and s["stores_identical"]
                    and s["stored_keys"]["alice"] > 0) and _freight_ok(r.freight) \
            and _kms_ok(r.kms)
    return s.get("stores_compared", False) and s["stored_keys"] == {"alice": 0, "bob": 0}


def _kms_lines(kms: dict) -> str:
    head = ("  freight KMS (qkd-kms demo --nodes) with the two nodes' key services as its sites' "
            "nodes:")
    lines = [head, *("    " + line for line in kms.get("lines", []))]
    if not kms.get("done"):
        lines.append(f"  freight KMS demo not done: {kms['why']}")
    return "\n".join(lines)


def _kms_ok(kms: dict | None) -> bool:
    return kms is None or bool(kms.get("done") or kms.get("skipped"))


def _freight_ok(freight: dict | None) -> bool:
    if freight is None:          # nodes without a key service (the launcher's tests)
        return True
    return bool(freight.get("done") and freight["otp"]["decrypted_equal"]
                and freight["aes_256_gcm"]["decrypted_equal"]
                and freight["second_fetch"].startswith("refused"))


def _freight_lines(f: dict) -> str:
    if not f.get("done"):
        return f"  freight exchange not done: {f.get('why')}"
    ok = {True: "decrypted, equal to the record", False: "DECRYPTION DIFFERS"}
    otp, gcm = f["otp"], f["aes_256_gcm"]
    ids = ", ".join(k[:8] + "…" for k in otp["key_IDs"])
    return "\n".join([
        f"  freight record ({f['record_bytes']} bytes) from the dispatcher at node A to the "
        f"recipient at node B:",
        f"    one-time pad: {len(otp['key_IDs'])} keys from node A (enc_keys) [{ids}]; "
        f"fetched by ID at node B (dec_keys): {ok[otp['decrypted_equal']]}",
        f"    AES-256-GCM:  key {gcm['key_ID'][:8]}… from node A; fetched at node B: "
        f"{ok[gcm['decrypted_equal']]}",
        f"    the same key ID asked for again at node B: {f['second_fetch']}"])


def _verdict(r: RunResult) -> str:
    s = r.summary()
    if not s.get("stores_compared"):
        return f"  stores not compared: {s.get('compare_error', 'no answer')}"
    stored = s["stored_keys"]
    if r.run == "honest":
        same = "yes" if s["stores_identical"] else "NO"
        return (f"  stopped by {s['stopped_by']} after {s['seconds']:.1f} s: {stored['alice']} "
                f"keys at Alice, {stored['bob']} at Bob; same key IDs with the same bits: {same}")
    return (f"  stopped by {s['stopped_by']} after {s['seconds']:.1f} s: {s['blocks_aborted']} "
            f"block(s) aborted ({', '.join(s['abort_reasons']) or '-'}); keys stored: "
            f"{stored['alice']} at Alice, {stored['bob']} at Bob")

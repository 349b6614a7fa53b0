"""Two real node processes on loopback for the end-to-end tests (tests only).

``NodePair`` writes what an operator would (CurveZMQ keypairs, the shared authentication
bootstrap, one config per node), starts ``qkd-node sim serve`` unless the nodes use fake
devices, starts Alice's and Bob's processes, and answers questions about them through their
admin sockets (status, hold, store digests) or, once they are stopped, by opening their stores
read-only. With ``relay=True`` Bob reaches Alice through a ``CurveRelay`` (an attacker inside
CurveZMQ); with ``delay_s`` through a ``PeerProxy`` delay line (that much each way, below
CurveZMQ). With ``keyservice=True`` each node also runs its key service, configured as the demo
does (``launch.write_keyservice_files``: the dispatcher's SAE at Alice's node, the recipient's
at Bob's); ``client(node)`` connects that node's SAE to it. With ``kms=True`` as well, both
key services also allow the freight KMS's per-service SAEs (``launch.add_kms_clients``) and
``kms_nodes`` is the ``qkd-kms demo --nodes`` file naming them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon import launch
from daemon.curve_keys import load_keypair
from daemon.keystore.store import KeyStore
from daemon.peer.auth_keys import write_bootstrap
from daemon.runtime.admin import AdminSocketError, request
from tests.daemon.curve_relay import CurveRelay
from tests.daemon.peer_proxy import PeerProxy

LINK = "alice-bob"
NODES = ("alice", "bob")
REAL_NODE = [sys.executable, "-m", "daemon.cli", "run"]
FAST_NODE = [sys.executable, "-m", "tests.daemon.fast_node"]
FAKE_DEVICES = {"alice": [{"device": "board", "driver": "qkd-board",
                           "url": "socket://127.0.0.1:9"}],
                "bob": [{"device": "board", "driver": "qkd-board",
                         "url": "socket://127.0.0.1:9"}]}


class NodePair:
    def __init__(self, directory: Path, *, fast: bool = False, relay: bool = False,
                 protocol: str = "bb84-decoy", block_pulses: float = 2e9,
                 sim_args: tuple = (), policy: dict | None = None,
                 calibration: dict | None = None, seed: int | None = None,
                 delay_s: float | None = None, keyservice: bool = False, kms: bool = False,
                 auth_bytes: int = 1 << 20, sim_fast: bool = True):
        self.dir = Path(directory)
        self.fast = fast
        self.command = FAST_NODE if fast else REAL_NODE
        self.procs: dict[str, subprocess.Popen] = {}
        self.sim: subprocess.Popen | None = None
        self.relay: CurveRelay | None = None
        self.proxy: PeerProxy | None = None
        self.sockets = {n: self.dir / n / "admin.sock" for n in NODES}
        self.configs = {n: self.dir / f"{n}.toml" for n in NODES}
        self.logs = {n: self.dir / f"{n}.log" for n in NODES}
        self.stores = {n: self.dir / n / "keys.sqlite" for n in NODES}
        self.services: dict[str, dict] = {}
        self.kms_nodes: Path | None = None
        seed = secrets.randbits(60) if seed is None else seed
        try:
            devices = FAKE_DEVICES if fast else self._start_sim(
                seed, (("--fast",) if sim_fast else ()) + tuple(sim_args))
            keys = {n: launch.write_keypair(self.dir, n) for n in NODES}
            auth = self.dir / "alice-bob.auth"
            write_bootstrap(auth, auth_bytes)
            if keyservice:
                self.services = launch.write_keyservice_files(self.dir)
                if kms:
                    self.kms_nodes = launch.add_kms_clients(self.dir, self.services)
            alice_endpoint = f"tcp://127.0.0.1:{launch.free_tcp_port()}"
            bob_endpoint = alice_endpoint
            if relay:
                pair = {n: load_keypair(keys[n][1]) for n in NODES}
                self.relay = CurveRelay(alice_endpoint, (pair["alice"].public,
                                                         pair["alice"].secret),
                                        (pair["bob"].public, pair["bob"].secret))
                bob_endpoint = self.relay.endpoint
            elif delay_s is not None:
                self.proxy = PeerProxy(int(alice_endpoint.rsplit(":", 1)[1]))
                self.proxy.delay_s = delay_s
                bob_endpoint = self.proxy.endpoint
            for node, peer, endpoint in (("alice", "bob", alice_endpoint),
                                         ("bob", "alice", bob_endpoint)):
                (self.dir / node).mkdir(exist_ok=True)
                self.configs[node].write_text(launch.node_config(
                    node=node, run_dir=self.dir, endpoint=endpoint, peer=peer,
                    devices=[d for d in devices if d.get("node", node) == node]
                    if not fast else FAKE_DEVICES[node],
                    block_pulses=int(block_pulses), keys=keys, auth_file=auth,
                    protocol=protocol, policy=policy, calibration=calibration,
                    keyservice=launch.keyservice_table(self.services[node])
                    if keyservice else None))
        except BaseException:
            self.close()
            raise

    def _start_sim(self, seed: int, sim_args: tuple) -> list[dict]:
        argv = [sys.executable, "-m", "daemon.cli", "sim", "serve", "--json", "--base-port",
                "0", "--seed", str(seed), *sim_args]
        self.sim = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=open(self.dir / "sim.log", "ab"),
                                    start_new_session=True)
        line = self.sim.stdout.readline()
        return json.loads(line)["endpoints"]

    # -- processes ------------------------------------------------------------------------------

    def start(self, *nodes: str, env: dict | None = None, wait: bool = True) -> None:
        """Start nodes; ``env`` adds environment variables (the fast node's test hooks);
        ``wait``: until they answer on their admin sockets."""
        for node in nodes or NODES:
            with open(self.logs[node], "ab") as log:
                self.procs[node] = subprocess.Popen(
                    [*self.command, "--config", str(self.configs[node])],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    env=None if env is None else {**os.environ, **env})
        if wait:
            self.wait(lambda: all(self.answers(n) for n in (nodes or NODES)), 60,
                      "nodes answering on their admin sockets")

    def kill(self, node: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(node)
        proc.send_signal(sig)
        return proc.wait(20)

    def alive(self, node: str) -> bool:
        return node in self.procs and self.procs[node].poll() is None

    def close(self) -> None:
        for node in list(self.procs):
            if self.procs[node].poll() is None:
                self.kill(node, signal.SIGTERM)
        if self.sim is not None:
            self.sim.terminate()
            self.sim.wait(10)
            self.sim.stdout.close()
        if self.relay is not None:
            self.relay.close()
        if self.proxy is not None:
            self.proxy.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- questions ----------------------------------------------------------------------------

    def pid(self, node: str) -> int:
        return self.procs[node].pid

    def answers(self, node: str) -> bool:
        try:
            request(self.sockets[node], {"op": "status"}, timeout_s=1.0)
            return True
        except AdminSocketError:
            if node in self.procs and self.procs[node].poll() is not None:
                raise AssertionError(f"{node}'s node exited with {self.procs[node].returncode}:"
                                     f" {self.log_tail(node)}")
            return False

    def client(self, node: str, secret_key_file: Path | None = None, **kw):
        """A blocking key-service client at ``node``: as that node's SAE, or with the keypair
        in ``secret_key_file``."""
        from daemon.curve_keys import load_public_key
        from daemon.keyservice.client import KeyClient
        ks = self.services[node]
        mine = load_keypair(secret_key_file or ks["_client_secret_key_file"])
        return KeyClient(ks["endpoint"],
                         server_public_key=load_public_key(ks["_server_public_key_file"]),
                         public_key=mine.public, secret_key=mine.secret,
                         **{"timeout_s": 5.0, "retries": 2, **kw})

    def node_status(self, node: str) -> dict:
        """The whole status reply (links and, with one, the key service)."""
        return request(self.sockets[node], {"op": "status"}, timeout_s=10.0)["status"]

    def status(self, node: str) -> dict:
        (link,) = request(self.sockets[node], {"op": "status"}, timeout_s=10.0)["status"]["links"]
        return link

    def log_tail(self, node: str, n: int = 5) -> str:
        lines = self.logs[node].read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])

    def wait(self, cond, timeout_s: float, what: str, detail=None) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                extra = f" ({detail()})" if detail is not None else ""
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}"
                                     f"{extra}; "
                                     f"alice: {self.log_tail('alice')}; "
                                     f"bob: {self.log_tail('bob')}")
            time.sleep(0.1)

    def hold(self, held: bool = True) -> None:
        for node in NODES:
            request(self.sockets[node], {"op": "hold", "held": held}, timeout_s=10.0)

    def drain(self, timeout_s: float = 60.0) -> None:
        """Hold the link and wait until neither end has a block unsettled."""
        self.hold(True)
        self.wait(lambda: all(self.status(n)["in_flight"] == 0 for n in NODES), timeout_s,
                  "both ends drained", detail=lambda: {n: self.status(n)["in_flight_parts"]
                                                       for n in NODES})

    def digests(self) -> dict[str, dict]:
        nonce = secrets.token_bytes(32)
        return {n: request(self.sockets[n], {"op": "digest", "nonce": nonce.hex()},
                           timeout_s=30.0)["links"][0] for n in NODES}

    def integrity(self, node: str) -> str:
        """``PRAGMA integrity_check`` of a node's store, read-only beside the running node."""
        store = KeyStore(self.stores[node], readonly=True)
        try:
            return store.integrity_check()
        finally:
            store.close()

    def offline_digests(self) -> dict[str, tuple]:
        """Both stores opened read-only (the nodes stopped): integrity, blocks in doubt and
        the committed keys' digest under one nonce."""
        nonce = secrets.token_bytes(32)
        out = {}
        for n in NODES:
            store = KeyStore(self.stores[n], readonly=True)
            try:
                out[n] = (store.integrity_check(), store.in_doubt(LINK),
                          store.committed_digest(LINK, nonce))
            finally:
                store.close()
        return out

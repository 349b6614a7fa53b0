"""kill -9 of either node while keys are being delivered, repeatedly, with two runner processes
and two real stores: no key is delivered twice at either end, and every key the master got is
fetched by the slave with the same bytes — except keys in the one window the design cannot
cover (node B erased them durably and died before its reply left; the slave's retry then finds
them erased at both ends, which the test checks too)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq

from daemon.keyservice.client import KeyClient, KeyServiceError, KeyServiceTimeout
from daemon.keystore.store import KeyStore

KEY_BITS = 256
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, tmp: Path, name: str, cfg: dict):
        self.name, self.path = name, tmp / f"{name}.json"
        self.path.write_text(json.dumps(cfg))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.daemon.keyservice.node_proc",
                                      str(self.path)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"node {self.name} did not start"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.mark.slow
def test_kill_9_of_either_node_during_delivery_never_delivers_a_key_twice(tmp_path):
    rng = random.Random(20261203)          # test schedule only (when to kill whom)
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    keys = [(uuid.uuid4(), os.urandom(KEY_BITS // 8)) for _ in range(2000)]
    for path, coordinator in ((a_db, True), (b_db, False)):
        with KeyStore(path) as store:
            store.prepare("L", 1, keys, coordinator=coordinator)
            store.commit("L", 1)
    server = {n: zmq.curve_keypair() for n in "AB"}
    client = {s: zmq.curve_keypair() for s in "XY"}
    ports = {n: _free_port() for n in ("A", "B", "peer")}
    common = {"key_bits": KEY_BITS, "ahead": 8}
    nodes = {
        "A": Node(tmp_path, "A", {**common, "store": str(a_db), "kme_id": "KME-A",
                                  "peer_kme_id": "KME-B", "remote": ["Y"],
                                  "endpoint": f"tcp://127.0.0.1:{ports['A']}",
                                  "peer": {"bind": f"tcp://127.0.0.1:{ports['peer']}"},
                                  "public": server["A"][0].decode(),
                                  "secret": server["A"][1].decode(),
                                  "clients": {client["X"][0].decode(): "X"}}),
        "B": Node(tmp_path, "B", {**common, "store": str(b_db), "kme_id": "KME-B",
                                  "peer_kme_id": "KME-A", "remote": ["X"],
                                  "endpoint": f"tcp://127.0.0.1:{ports['B']}",
                                  "peer": {"connect": f"tcp://127.0.0.1:{ports['peer']}"},
                                  "public": server["B"][0].decode(),
                                  "secret": server["B"][1].decode(),
                                  "clients": {client["Y"][0].decode(): "Y"}}),
    }
    got_x: list[tuple[uuid.UUID, bytes]] = []
    got_y: list[tuple[uuid.UUID, bytes]] = []
    pending: list[uuid.UUID] = []           # given to X, not yet fetched by Y
    in_doubt_b: set[uuid.UUID] = set()      # asked at B by a request that got no reply
    b_kills = []                            # times B was killed
    stop = threading.Event()

    def clients():
        cx = KeyClient(f"tcp://127.0.0.1:{ports['A']}", server_public_key=server["A"][0],
                       public_key=client["X"][0], secret_key=client["X"][1], timeout_s=0.4,
                       retries=2)
        cy = KeyClient(f"tcp://127.0.0.1:{ports['B']}", server_public_key=server["B"][0],
                       public_key=client["Y"][0], secret_key=client["Y"][1], timeout_s=0.4,
                       retries=2)
        while not stop.is_set():
            try:
                for k in cx.enc_keys("Y", number=2):
                    got_x.append((k.key_id, bytes(k.key)))
                    pending.append(k.key_id)
            except (KeyServiceError, KeyServiceTimeout):
                pass                         # nothing delivered to X
            batch = pending[:16]
            if not batch:
                continue
            rid, asked_at = uuid.uuid4().bytes, time.monotonic()
            while not stop.is_set():      # the same request ID until answered (Lazy Pirate)
                try:
                    fetched = cy.dec_keys("X", batch, request_id=rid)
                except KeyServiceTimeout:
                    continue
                except KeyServiceError as err:
                    if err.status == 400 and any(t >= asked_at for t in b_kills):
                        in_doubt_b.update(batch)    # B died after erasing, before replying
                        del pending[:len(batch)]
                    break                           # anything else: the final fetch decides
                got_y.extend((k.key_id, bytes(k.key)) for k in fetched)
                del pending[:len(batch)]
                break
        cx.close()
        cy.close()

    for n in nodes.values():
        n.start()
    worker = threading.Thread(target=clients, daemon=True)
    worker.start()
    try:
        for round_ in range(4):
            time.sleep(rng.uniform(0.3, 0.8))
            victim = nodes["AB"[round_ % 2]]
            victim.kill()
            if victim.name == "B":
                b_kills.append(time.monotonic())
            time.sleep(rng.uniform(0.05, 0.3))
            victim.start()
        time.sleep(1.0)
        stop.set()
        worker.join(30)
        assert not worker.is_alive()
        # the slave fetches every key the master got and it has not fetched yet
        cy = KeyClient(f"tcp://127.0.0.1:{ports['B']}", server_public_key=server["B"][0],
                       public_key=client["Y"][0], secret_key=client["Y"][1], timeout_s=2.0,
                       retries=3)
        for i in range(0, len(pending), 64):
            got_y.extend((k.key_id, bytes(k.key)) for k in cy.dec_keys("X", pending[i:i + 64]))
        lost_answers = []
        for kid in sorted(in_doubt_b):
            try:
                got_y.extend((k.key_id, bytes(k.key)) for k in cy.dec_keys("X", [kid]))
            except KeyServiceError as err:
                lost_answers.append(err.status)
        cy.close()
    finally:
        stop.set()
        for n in nodes.values():
            n.stop()

    ids_x = [k for k, _ in got_x]
    ids_y = [k for k, _ in got_y]
    assert len(got_x) > 50, "too few deliveries to mean anything"
    assert len(ids_x) == len(set(ids_x)), "a key was delivered twice to the master"
    assert len(ids_y) == len(set(ids_y)), "a key was delivered twice to the slave"
    x = dict(got_x)
    assert all(x.get(k) == b for k, b in got_y), "the slave got bytes the master did not"
    unfetched = set(ids_x) - set(ids_y)
    assert unfetched <= in_doubt_b               # only the window explained above
    assert all(s == 400 for s in lost_answers)
    with KeyStore(a_db) as a_store, KeyStore(b_db) as b_store:
        a_store.void_open_leases()
        for kid in unfetched | set(ids_x):       # delivered keys are gone from both files
            assert kid not in a_store.key_states("L") and kid not in b_store.key_states("L")
        assert a_store.integrity_check() == "ok" and b_store.integrity_check() == "ok"

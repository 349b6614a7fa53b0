"""kill -9 of the platform process while terminals charge and while they send records.

The platform runs as ``qkd-kms run`` in a child process against two stand-in key services in
this process. After every kill it is restarted on the same store, and the invariants are
checked on the files themselves: no key ID is both in the pool and in a mirror or in two
mirrors, every key a terminal holds is in its mirror (the platform never forgot a key it gave
out), and every record is accepted at most once — its replay is refused.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kms.errors import AlreadyUsed, NoKeyAvailable
from kms.platform import KeyCloudPlatform
from kms.rpc import RpcTimeout
from kms.server import KeyManagementServer
from kms.site import SERVER_KEY_FILE, keypair_file
from kms.config import build_policy
from kms.store import Store
from kms.terminal import Terminal, TerminalVault

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlatformProcess:
    def __init__(self, tmp: Path, node):
        self.state = tmp / "state"
        (self.state / "sae").mkdir(parents=True)
        for service, cred in node.credentials.items():
            (self.state / "sae" / f"{service}.key").write_bytes(
                cred.public_key + b"\n" + cred.secret_key)
        self.api = f"tcp://127.0.0.1:{free_port()}"
        self.depot = f"tcp://127.0.0.1:{free_port()}"
        self.config = tmp / "site.toml"
        self.config.write_text(f"""
[site]
name = "crash-site"
state_dir = "{self.state}"
api_endpoint = "{self.api}"
depot_endpoint = "{self.depot}"
refill_interval_s = 0.2

[node]
endpoint = "{node.endpoint}"
server_public_key = "{node.public_key.decode()}"
site_sae = "{node.site_sae}"
peer_sae = "{node.peer_sae}"

[pools]
position = 1000
password-auth = 50

[charge]
position = 5
""")
        self.public_key = keypair_file(self.state / SERVER_KEY_FILE)[0]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kms.cli", "run", "--config",
                                      str(self.config)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (self.state / "kms.db").exists() and self.pool("position") >= 100 \
                    and self._answers():
                return
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        raise AssertionError("platform did not come up with keys in 30 s")

    def _answers(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", int(self.api.rsplit(":", 1)[1]))) == 0

    def pool(self, service: str) -> int:
        store = Store(self.state / "kms.db")
        try:
            return store.query("SELECT COUNT(*) FROM pool_keys WHERE service=?", (service,))[0][0]
        finally:
            store.close()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)



@pytest.fixture
def platform(nodes, tmp_path):
    p = PlatformProcess(tmp_path, nodes[0])
    p.start()
    yield p
    p.stop()


def offline(p: PlatformProcess):
    kms = KeyManagementServer(Store(p.state / "kms.db"), build_policy(), None)
    return kms, KeyCloudPlatform(kms)


def terminals(p: PlatformProcess, tmp_path: Path, n: int) -> list[Terminal]:
    kms, plat = offline(p)
    out = []
    for i in range(n):
        tid = f"V{i}"
        vault = TerminalVault(tmp_path / "t" / tid, tid)
        plat.register(tid, f"van {i}", vault.public_key.decode())
        out.append(Terminal(vault, p.public_key, depot=p.depot, road=p.api, timeout_s=2.0,
                            retries=1))
    kms.store.close()
    return out


def check_no_key_twice(p: PlatformProcess, ts: list[Terminal]) -> None:
    kms, _ = offline(p)
    q = kms.store.query
    pool = {r[0] for r in q("SELECT key_id FROM pool_keys")}
    mirror = q("SELECT terminal_id, key_id FROM mirror")
    used = {r[0] for r in q("SELECT key_id FROM used_ids")}
    mirror_ids = [k for _, k in mirror]
    assert len(mirror_ids) == len(set(mirror_ids)), "a key charged to two terminals"
    assert not pool & set(mirror_ids), "a charged key still in the pool"
    assert not used & set(mirror_ids), "a used key still in a mirror"
    for t in ts:
        held = {r[0] for r in t.vault.db.execute("SELECT key_id FROM keys")}
        mine = {k for tid, k in mirror if tid == t.id}
        assert held <= mine, f"terminal {t.id} holds keys the platform forgot"
    kms.store.close()


@pytest.mark.slow
def test_kill9_during_charging_never_gives_a_key_twice(platform, tmp_path):
    ts = terminals(platform, tmp_path, 3)
    n_cut = 0
    for cycle in range(3):
        interrupted: list[tuple[Terminal, str]] = []
        errors: list[Exception] = []
        stop = threading.Event()

        def charge_loop(t: Terminal, tag: str):
            i = 0
            while not stop.is_set():
                cid = f"{tag}-{t.id}-{i}"
                try:
                    t.charge(charge_id=cid)
                except RpcTimeout:
                    interrupted.append((t, cid))
                    return
                except NoKeyAvailable:       # a clean refusal: the pool waits for its refill
                    time.sleep(0.05)
                    continue
                except Exception as exc:     # anything else fails the test below
                    errors.append(exc)
                    return
                i += 1

        threads = [threading.Thread(target=charge_loop, args=(t, f"c{cycle}")) for t in ts]
        for th in threads:
            th.start()
        time.sleep(0.4 + 0.15 * cycle)
        platform.kill9()
        stop.set()
        for th in threads:
            th.join(10)
        assert not errors
        check_no_key_twice(platform, ts)
        platform.start()
        # a charge cut by the kill is retried with its ID: the same batch or a new one, once
        n_cut += len(interrupted)
        for t, cid in interrupted:
            t.depot.close()
            t.charge(charge_id=cid)
        check_no_key_twice(platform, ts)
    assert n_cut >= 1, "the kills never landed on a charge in flight"
    # every held key still works exactly once
    for t in ts:
        n = t.records_left().get("position", 0)
        assert n > 0
        for _ in range(n):
            assert t.send_record("position", b"after the crashes")["accepted"]
    check_no_key_twice(platform, ts)


@pytest.mark.slow
def test_kill9_during_use_accepts_each_record_once(platform, tmp_path):
    ts = terminals(platform, tmp_path, 2)
    for t in ts:
        t.charge({"position": 150})
    sent: list[tuple[Terminal, object]] = []
    n_cut = 0
    for cycle in range(3):
        cut: list[tuple[Terminal, object]] = []
        errors: list[Exception] = []
        stop = threading.Event()

        def use_loop(t: Terminal):
            while not stop.is_set() and t.records_left().get("position"):
                rec = t.seal("position", os.urandom(300))
                try:
                    t.send(rec)
                    sent.append((t, rec))
                except RpcTimeout:
                    cut.append((t, rec))
                    return
                except Exception as exc:     # anything else fails the test below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=use_loop, args=(t,)) for t in ts]
        start = len(sent)
        for th in threads:
            th.start()
        # kill once some records went through, while the rest are in use (a fixed sleep let
        # a fast machine spend the whole charge before the first kill)
        deadline = time.monotonic() + 30
        while len(sent) < start + 20 + 10 * cycle and time.monotonic() < deadline:
            time.sleep(0.001)
        platform.kill9()
        stop.set()
        for th in threads:
            th.join(10)
        assert not errors
        check_no_key_twice(platform, ts)
        platform.start()
        n_cut += len(cut)
        for t, rec in cut:        # the record whose reply was lost: sent again, accepted once
            t.road.close()
            assert t.send(rec)["accepted"]
            sent.append((t, rec))
        check_no_key_twice(platform, ts)
    assert len(sent) > 10 and n_cut >= 1
    kms, _ = offline(platform)
    accepted = kms.store.query("SELECT COUNT(*) FROM used_ids WHERE how='record'")[0][0]
    kms.store.close()
    assert accepted == len(sent)
    # every record ever sent, replayed: refused (or acknowledged as the same record), and
    # nothing more is accepted
    for t, rec in sent[:: max(1, len(sent) // 30)]:
        with pytest.raises(AlreadyUsed, match="replay refused") as err:
            t.road.call("record", rec.body())
        assert err.value.details.get("duplicate") is True
    kms, _ = offline(platform)
    assert kms.store.query("SELECT COUNT(*) FROM used_ids WHERE how='record'")[0][0] == accepted
    kms.store.close()


def test_run_notifies_systemd_and_stops_cleanly_on_sigterm(tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(sock_path)
        notify.settimeout(30)
        cfg = tmp_path / "site.toml"
        cfg.write_text(f'[site]\nname = "n"\nstate_dir = "{tmp_path / "state"}"\n'
                       f'api_endpoint = "tcp://127.0.0.1:{free_port()}"\n'
                       f'depot_endpoint = "tcp://127.0.0.1:{free_port()}"\n')
        proc = subprocess.Popen([sys.executable, "-m", "kms.cli", "run", "--config", str(cfg)],
                                cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": sock_path},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert notify.recv(64) == b"READY=1"
            proc.send_signal(signal.SIGTERM)
            assert notify.recv(64) == b"STOPPING=1"
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

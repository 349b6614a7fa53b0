"""Drive ``crash_worker`` children, kill them with SIGKILL at random moments, and check the
stores afterwards. Used by test_crash.py (a few dozen kills) and stress_crash.py (as many as
you like: ``python -m tests.daemon.keystore.stress_crash --kills 500``).
"""

from __future__ import annotations

import collections
import hashlib
import pathlib
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

from daemon.keystore import store as store_mod
from daemon.keystore.commit import LinkCommit
from daemon.keystore.store import KeyStore
from tests.daemon.keystore.crash_worker import KEY_BITS, LINK

ROOT = pathlib.Path(__file__).resolve().parents[3]
WORKER = "tests.daemon.keystore.crash_worker"


def spawn(args, **kw) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", WORKER, *map(str, args)], cwd=ROOT,
                         stderr=subprocess.PIPE, **kw)
    deadline = time.monotonic() + 60
    line = p.stderr.readline()
    if b"ready" not in line:
        p.kill()
        rest = p.stderr.read().decode(errors="replace")
        raise AssertionError(f"worker did not start: {line!r} {rest[-2000:]}")
    assert time.monotonic() < deadline
    return p


def kill9(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()


def read_log(path):
    """(key ID -> sha of its bits as first stored, [(ID, sha, role) delivered], voided IDs)."""
    stored, delivered, voided = {}, [], set()
    if not pathlib.Path(path).exists():
        return stored, delivered, voided
    for line in pathlib.Path(path).read_text().splitlines():
        f = line.split()
        if f[0] == "K":
            assert f[1] not in stored, f"key ID {f[1]} drawn twice"
            stored[f[1]] = f[2]
        elif f[0] == "D":
            delivered.append((f[1], f[2], f[3]))
        elif f[0] == "V":
            voided.add(f[1])
    return stored, delivered, voided


def live_keys(store: KeyStore) -> dict[str, tuple[str, str]]:
    """key ID -> (state, sha of bits), read straight from the file (a committed key inside an
    open lease's ranges is 'leased')."""
    rows = store._conn.execute(
        f"SELECT key_id, CASE WHEN {store_mod._READY} AND {store_mod._IN_OPEN_LEASE} "
        f"THEN 'leased' ELSE state END, bits FROM keys").fetchall()
    return {str(uuid.UUID(bytes=k)): (s, hashlib.sha256(b).hexdigest()[:16]) for k, s, b in rows}


# ---------------------------------------------------------------------------- one store
def check_single(db, log) -> dict:
    """After a kill: integrity, one bit string per ID, delivered keys never twice and no longer
    issuable, then recovery (void open leases, settle doubts) leaves nothing leased or in doubt."""
    stored, delivered, _ = read_log(log)
    with KeyStore(db) as s:
        assert s.integrity_check() == "ok"
        live = live_keys(s)
        for k, (_, h) in live.items():
            assert stored.get(k) == h, f"key {k} holds bits it was not stored with"
        ids = [k for k, _, _ in delivered]
        assert len(ids) == len(set(ids)), "a key was delivered twice"
        for k, h, _ in delivered:
            assert stored[k] == h, f"key {k} delivered with other bits"
            # a key taken from a lease stays in the file (state leased) until the lease is
            # settled, closed, or voided at restart; in no other state
            assert live.get(k, ("leased",))[0] == "leased", f"delivered key {k} still usable"
        s.void_open_leases()
        for block_id in s.in_doubt(LINK):
            s.discard(LINK, block_id)
        after = live_keys(s)
        assert not any(st in ("leased", "pending") for st, _ in after.values())
        assert not {k for k, _, _ in delivered} & after.keys(), "a delivered key survived"
        assert s.in_doubt(LINK) == [] and s.open_leases() == []
        assert s.fill().keys == len(after)
        return {"live": len(after), "delivered": len(ids)}


def run_single(tmp, kills: int, rng) -> dict:
    db, log = tmp / "single.db", tmp / "single.log"
    stats = {}
    for i in range(kills):
        p = spawn(["single", db, log, int(rng.integers(1 << 30))])
        time.sleep(float(rng.uniform(0.02, 0.4)))
        kill9(p)
        stats = check_single(db, log)
    return stats


# ---------------------------------------------------------------------------- two nodes
class Relay:
    """Carries frames between the two node processes; frames for a dead node are lost."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen | None] = {"A": None, "B": None}
        self.lock = threading.Lock()
        self.frames = collections.Counter()
        self.seed = 0

    def start(self, who):
        self.seed += 1
        p = spawn(["node", who, self.tmp / f"{who}.db", self.tmp / f"{who}.log", self.seed],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        with self.lock:
            self.procs[who] = p
        threading.Thread(target=self._pump, args=(who, p), daemon=True).start()

    def kill(self, who):
        with self.lock:
            p, self.procs[who] = self.procs[who], None
        kill9(p)

    def _pump(self, src, p):
        dst = "B" if src == "A" else "A"
        out = p.stdout
        try:
            while True:
                head = out.read(5)
                if len(head) < 5:
                    return
                body = out.read(struct.unpack("<BI", head)[1])
                with self.lock:
                    q = self.procs[dst]
                    if q is None:
                        self.frames["lost"] += 1
                        continue
                    try:
                        q.stdin.write(head + body)
                        q.stdin.flush()
                        self.frames["carried"] += 1
                    except (BrokenPipeError, ValueError, OSError):
                        self.frames["lost"] += 1
        except (ValueError, OSError):
            return


def settle(tmp) -> tuple[KeyStore, KeyStore]:
    """Both nodes restarted in this process: recover and exchange messages until no block is
    in doubt at either end (what two restarted daemons do over the peer channel)."""
    a, b = KeyStore(tmp / "A.db"), KeyStore(tmp / "B.db")
    for s in (a, b):
        s.void_open_leases()
    ends = {"A": LinkCommit(a, LINK, coordinator=True, key_size_bits=KEY_BITS),
            "B": LinkCommit(b, LINK, coordinator=False, key_size_bits=KEY_BITS)}
    net = [("B", msg) for msg in ends["A"].recover()] + [("A", msg) for msg in ends["B"].recover()]
    for _ in range(20):
        while net:
            dst, (t, p) = net.pop(0)
            src = dst
            net += [("B" if src == "A" else "A", msg) for msg in ends[dst].receive(t, p)]
        if not a.in_doubt(LINK) and not b.in_doubt(LINK):
            break
        for who in "AB":
            net += [("B" if who == "A" else "A", msg) for msg in ends[who].on_timer()]
    return a, b


def check_pair(tmp) -> dict:
    a, b = settle(tmp)
    try:
        for s in (a, b):
            assert s.integrity_check() == "ok"
            assert s.in_doubt(LINK) == [], "recovery did not converge"
        blocks = {}
        for name, s in (("A", a), ("B", b)):
            for block_id, state in s._conn.execute("SELECT block_id, state FROM blocks"):
                blocks.setdefault(block_id, {})[name] = state
        committed = 0
        for block_id, st in blocks.items():
            assert (st.get("A") == "committed") == (st.get("B") == "committed"), (block_id, st)
            committed += st.get("A") == "committed"
        la, lb = live_keys(a), live_keys(b)
        for k in la.keys() & lb.keys():
            assert la[k][1] == lb[k][1], f"key {k} has different bits at the two ends"
        _, da, _ = read_log(tmp / "A.log")
        _, db, _ = read_log(tmp / "B.log")
        masters = [(k, h) for k, h, r in da + db if r == "master"]
        slaves = [(k, h) for k, h, r in da + db if r == "slave"]
        assert len({k for k, _ in masters}) == len(masters), "a key issued twice to masters"
        assert len({k for k, _ in slaves}) == len(slaves), "a key delivered twice to slaves"
        master_bits = dict(masters)
        for k, h in slaves:
            assert master_bits.get(k) == h, f"slave got key {k} with other bits than its master"
        for k, _, r in da:
            assert k not in la, f"key {k} delivered at A is still stored there"
        for k, _, r in db:
            assert k not in lb, f"key {k} delivered at B is still stored there"
        return {"blocks": len(blocks), "committed": committed, "masters": len(masters),
                "slaves": len(slaves)}
    finally:
        a.close()
        b.close()


def run_pair(tmp, kills: int, rng) -> dict:
    relay = Relay(tmp)
    relay.start("A")
    relay.start("B")
    for i in range(kills):
        time.sleep(float(rng.uniform(0.05, 0.5)))
        who = "AB"[int(rng.integers(2))]
        relay.kill(who)
        time.sleep(float(rng.uniform(0.0, 0.2)))
        relay.start(who)
    time.sleep(0.3)
    relay.kill("A")
    relay.kill("B")
    stats = check_pair(tmp)
    stats.update(relay.frames)
    return stats

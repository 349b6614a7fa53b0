"""Key store figures: durable block commit, lease cost, deliver-once rate, on this disk.

- ``empty_durable_commit``: one fsync'd SQLite transaction with nothing in it (the floor every
  durable step pays here).
- ``block_prepare_commit``: a 1 Mbit block key cut into 256-bit keys (3906 keys): store
  ``prepare`` + ``commit`` at one end, and the whole two-step commit in process (both ends'
  prepare and commit, four durable transactions, plus the messages). Baseline in the same run:
  the same rows inserted into a bare SQLite table (no indexes, no audit) in one durable
  transaction.
- ``lease``: durable lease of 1024 keys (one transaction), per key.
The machine is shared, so wall times swing with other people's fsyncs; ``*_cpu_ms`` is this
process's CPU time for the same step.
- ``deliver_once``: keys handed out once and erased, 256-bit keys, requests of 1 and 32 keys,
  from leases (no fsync per request; one durable lease per 1024 keys) against the baseline of
  one durable transaction per key (``deliver`` of a reserved key), and the slave side's group
  commit (``deliver_many``: 32 requests, one fsync). ``leased_*`` includes each lease's durable
  grant and close; ``take_only_*`` is the in-memory hand-out between them.
- ``issue_path``: the store work behind ``enc_keys`` per key, as thread CPU time (less swayed by
  other people's load than wall time) and wall time: a lease grant of 8192 keys, the take in
  requests of 32, the close that erases them, and at the other node the reservations of those
  keys in RESERVEs of 1024, four per transaction (``reserve_many``). Baseline in the same run:
  erasing as many 256-bit rows from a bare table (rowid range, secure_delete, one durable
  transaction).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time

import numpy as np

from bench.common import emit, progress
from daemon.keystore import KeyStore, LinkCommit, new_key_ids

LINK = "bench"
BLOCK_BITS = 1_000_000
KEY_BITS = 256


def _fill(store, n_blocks, coordinator=True, first=0):
    for b in range(first, first + n_blocks):
        keys = [(k, os.urandom(KEY_BITS // 8)) for k in new_key_ids(BLOCK_BITS // KEY_BITS)]
        store.prepare(LINK, b, keys, coordinator=coordinator)
        store.commit(LINK, b)


def bench_empty_commit(tmp):
    conn = sqlite3.connect(os.path.join(tmp, "empty.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x)")
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    conn.close()
    emit("keystore", figure="empty_durable_commit", median_ms=1e3 * float(np.median(times)),
         p99_ms=1e3 * float(np.percentile(times, 99)))


def bench_block(tmp):
    rng = np.random.default_rng(1)
    store = KeyStore(os.path.join(tmp, "block.db"))
    one_end, two_ends, bare, one_end_cpu = [], [], [], []
    a = KeyStore(os.path.join(tmp, "a.db"))
    b = KeyStore(os.path.join(tmp, "b.db"))
    A = LinkCommit(a, LINK, coordinator=True, key_size_bits=KEY_BITS)
    B = LinkCommit(b, LINK, coordinator=False, key_size_bits=KEY_BITS)
    conn = sqlite3.connect(os.path.join(tmp, "bare.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE keys (key_id BLOB, block_id INTEGER, bits BLOB)")
    n = BLOCK_BITS // KEY_BITS
    for block_id in range(8):
        keys = [(k, os.urandom(KEY_BITS // 8)) for k in new_key_ids(n)]
        c0, t0 = time.process_time(), time.perf_counter()
        store.prepare(LINK, block_id, keys, coordinator=True)
        store.commit(LINK, block_id)
        one_end.append(time.perf_counter() - t0)
        one_end_cpu.append(time.process_time() - c0)

        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO keys VALUES (?, ?, ?)",
                         [(k.bytes, block_id, v) for k, v in keys])
        conn.execute("COMMIT")
        bare.append(time.perf_counter() - t0)

        bits = rng.integers(0, 2, BLOCK_BITS, dtype=np.uint8)
        B.expect(block_id)
        B.block_done(block_id, bits.copy())
        t0 = time.perf_counter()
        msgs = A.block_done(block_id, bits)
        for _ in range(3):
            replies = []
            for t, p in msgs:
                replies += B.receive(t, p)
            msgs = []
            for t, p in replies:
                msgs += A.receive(t, p)
        two_ends.append(time.perf_counter() - t0)
        assert a.block_state(LINK, block_id) == b.block_state(LINK, block_id) == "committed"
    for s in (store, a, b):
        s.close()
    conn.close()
    emit("keystore", figure="block_prepare_commit", block_bits=BLOCK_BITS, key_bits=KEY_BITS,
         keys=n, one_end_ms=1e3 * min(one_end), one_end_cpu_ms=1e3 * min(one_end_cpu), two_step_both_ends_ms=1e3 * min(two_ends),
         baseline_bare_insert_ms=1e3 * min(bare),
         ratio_one_end_to_baseline=min(one_end) / min(bare),
         one_end_keys_per_s=n / min(one_end))


def bench_lease_and_deliver(tmp):
    store = KeyStore(os.path.join(tmp, "lease.db"))
    _fill(store, 6, coordinator=True)              # 6 x 1953 keys this end issues
    lease_times, lease_cpu = [], []
    rates, take_time, taken = {}, {}, {}
    for per_request in (1, 32):
        delivered, t_total = 0, 0.0
        while delivered < 4096:
            c0, t0 = time.process_time(), time.perf_counter()
            lease = store.lease(LINK, 1024)
            lease_times.append(time.perf_counter() - t0)
            lease_cpu.append(time.process_time() - c0)
            t1 = time.perf_counter()
            while lease.remaining:
                for _, bits in lease.take(per_request, master_sae="m", slave_sae="s"):
                    bits[:] = bytes(len(bits))
            take_time[per_request] = take_time.get(per_request, 0.0) + time.perf_counter() - t1
            store.close_lease(lease)
            t_total += time.perf_counter() - t0
            delivered += len(lease.key_ids)
        rates[per_request] = delivered / t_total
        taken[per_request] = delivered / take_time[per_request]
    store.close()
    emit("keystore", figure="lease", keys_per_lease=1024,
         median_ms=1e3 * float(np.median(lease_times)),
         per_key_us=1e6 * float(np.median(lease_times)) / 1024,
         median_cpu_ms=1e3 * float(np.median(lease_cpu)))

    # baseline: one durable transaction per key (slave side, reserved keys, deliver one by one)
    store = KeyStore(os.path.join(tmp, "slave.db"))
    _fill(store, 2, coordinator=False)             # the coordinator (peer) issues even keys
    peer = [k for k, s in store.key_states(LINK).items() if s == "committed"]
    store.reserve(LINK, peer, slave_sae="Y", master_sae="X")
    reserved = [k for k, s in store.key_states(LINK).items() if s == "reserved"]
    per_key = reserved[:400]
    t0 = time.perf_counter()
    for k in per_key:
        for _, bits in store.deliver([k], sae_id="Y"):
            bits[:] = bytes(len(bits))
    baseline = len(per_key) / (time.perf_counter() - t0)
    group = reserved[400:400 + 32 * 40]
    t0 = time.perf_counter()
    for i in range(0, len(group), 32):
        for res in store.deliver_many([("Y", [k]) for k in group[i:i + 32]]):
            for _, bits in res:
                bits[:] = bytes(len(bits))
    grouped = len(group) / (time.perf_counter() - t0)
    store.close()
    emit("keystore", figure="deliver_once", key_bits=KEY_BITS,
         leased_keys_per_s_1_per_request=rates[1], leased_keys_per_s_32_per_request=rates[32],
         take_only_keys_per_s_1_per_request=taken[1],
         take_only_keys_per_s_32_per_request=taken[32],
         slave_group_commit_keys_per_s_32_requests=grouped,
         baseline_fsync_per_key_keys_per_s=baseline,
         speedup_leased_1_vs_baseline=rates[1] / baseline,
         speedup_leased_32_vs_baseline=rates[32] / baseline)


def _timed(acc: dict, name: str, fn):
    c0, t0 = time.thread_time(), time.perf_counter()
    out = fn()
    acc.setdefault(name, [0.0, 0.0])
    acc[name][0] += time.thread_time() - c0
    acc[name][1] += time.perf_counter() - t0
    return out


def bench_issue_path(tmp):
    issuer = KeyStore(os.path.join(tmp, "issuer.db"))
    holder = KeyStore(os.path.join(tmp, "holder.db"))
    for b in range(16):      # the same blocks at both ends: 16 x 1953 keys this end issues
        keys = [(k, os.urandom(KEY_BITS // 8)) for k in new_key_ids(BLOCK_BITS // KEY_BITS)]
        for store, coordinator in ((issuer, True), (holder, False)):
            store.prepare(LINK, b, keys, coordinator=coordinator)
            store.commit(LINK, b)
    acc: dict = {}
    n = 0
    for _ in range(3):
        lease = _timed(acc, "grant", lambda: issuer.lease(LINK, 8192))
        ids = []

        def take():
            while lease.remaining:
                for kid, bits in lease.take(32, master_sae="m", slave_sae="s"):
                    ids.append(kid)
                    bits[:] = bytes(len(bits))
        _timed(acc, "take", take)
        for i in range(0, len(ids), 4096):
            reqs = [(ids[j:j + 1024], "s", "m", 3600.0, ()) for j in range(i, i + 4096, 1024)]
            bad = _timed(acc, "reserve", lambda: holder.reserve_many(LINK, reqs))
            assert not any(bad), "the holder refused keys the issuer leased"
        _timed(acc, "close", lambda: issuer.close_lease(lease))
        n += len(ids)
    issuer.close()
    holder.close()
    conn = sqlite3.connect(os.path.join(tmp, "bare_delete.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, bits BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (bits) VALUES (?)",
                     [(os.urandom(KEY_BITS // 8),) for _ in range(n)])
    conn.execute("COMMIT")

    def bare():
        conn.execute("BEGIN")
        conn.execute("DELETE FROM t WHERE id BETWEEN 1 AND ?", (n,))
        conn.execute("COMMIT")
    _timed(acc, "bare", bare)
    conn.close()
    per = {k: (1e6 * c / n, 1e6 * w / n) for k, (c, w) in acc.items()}
    emit("keystore", figure="issue_path", keys=n, keys_per_lease=8192, per_request=32,
         **{f"{k}_cpu_us_per_key": round(v[0], 2) for k, v in per.items() if k != "bare"},
         **{f"{k}_wall_us_per_key": round(v[1], 2) for k, v in per.items() if k != "bare"},
         baseline_bare_delete_cpu_us_per_key=round(per["bare"][0], 2),
         baseline_bare_delete_wall_us_per_key=round(per["bare"][1], 2))


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_STORE_DIR")) as tmp:
        progress(f"keystore: store files in {tmp} (set BENCH_STORE_DIR for another disk)")
        bench_empty_commit(tmp)
        bench_block(tmp)
        bench_lease_and_deliver(tmp)
        bench_issue_path(tmp)


if __name__ == "__main__":
    main()

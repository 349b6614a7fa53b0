"""Key store figures: durable block commit, lease cost, deliver-once rate, on this disk.

- ``empty_durable_commit``: one fsync'd SQLite transaction with nothing in it (the floor every
  durable step pays here).
- ``block_prepare_commit``: a 1 Mbit block key cut into 256-bit keys (3906 keys): store
  ``prepare`` + ``commit`` at one end, and the whole two-step commit in process (both ends'
  prepare and commit, four durable transactions, plus the messages). Baseline in the same run:
  the same rows inserted into a bare SQLite table (no indexes, no audit) in one durable
  transaction.
- ``lease``: durable lease of 1024 keys (one transaction), per key.
- ``deliver_once``: keys handed out once and erased, 256-bit keys, requests of 1 and 32 keys,
  from leases (no fsync per request; one durable lease per 1024 keys) against the baseline of
  one durable transaction per key (``deliver`` of a reserved key), and the slave side's group
  commit (``deliver_many``: 32 requests, one fsync).
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
    one_end, two_ends, bare = [], [], []
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
        t0 = time.perf_counter()
        store.prepare(LINK, block_id, keys, coordinator=True)
        store.commit(LINK, block_id)
        one_end.append(time.perf_counter() - t0)

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
         keys=n, one_end_ms=1e3 * min(one_end), two_step_both_ends_ms=1e3 * min(two_ends),
         baseline_bare_insert_ms=1e3 * min(bare),
         ratio_one_end_to_baseline=min(one_end) / min(bare),
         one_end_keys_per_s=n / min(one_end))


def bench_lease_and_deliver(tmp):
    store = KeyStore(os.path.join(tmp, "lease.db"))
    _fill(store, 6, coordinator=True)              # 6 x 1953 keys this end issues
    lease_times = []
    rates = {}
    for per_request in (1, 32):
        delivered, t_total = 0, 0.0
        while delivered < 4096:
            t0 = time.perf_counter()
            lease = store.lease(LINK, 1024)
            lease_times.append(time.perf_counter() - t0)
            ids = list(lease.key_ids)
            for i in range(0, len(ids), per_request):
                for _, bits in store.deliver_leased(lease.lease_id, ids[i:i + per_request],
                                                    master_sae="m", slave_sae="s"):
                    bits[:] = bytes(len(bits))
            store.close_lease(lease.lease_id)
            t_total += time.perf_counter() - t0
            delivered += len(ids)
        rates[per_request] = delivered / t_total
    store.close()
    emit("keystore", figure="lease", keys_per_lease=1024, median_ms=1e3 * float(np.median(lease_times)),
         per_key_us=1e6 * float(np.median(lease_times)) / 1024)

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
         slave_group_commit_keys_per_s_32_requests=grouped,
         baseline_fsync_per_key_keys_per_s=baseline,
         speedup_leased_1_vs_baseline=rates[1] / baseline,
         speedup_leased_32_vs_baseline=rates[32] / baseline)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_STORE_DIR")) as tmp:
        progress(f"keystore: store files in {tmp} (set BENCH_STORE_DIR for another disk)")
        bench_empty_commit(tmp)
        bench_block(tmp)
        bench_lease_and_deliver(tmp)


if __name__ == "__main__":
    main()

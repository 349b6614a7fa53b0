"""Key cloud platform figures: charging, records, login, and a fleet of 100,000 terminals.

Everything runs on this machine in one process: two stand-in key services (the node's own
server code over CurveZMQ), site A's KMS and platform on a SQLite file with the production
settings (WAL, synchronous=FULL, secure_delete), terminals with sealed vaults talking over
CurveZMQ on loopback. Every commit is an fsync, so the disk, not the cipher, sets most figures;
the bare-cipher baseline in the same run shows how much of a record's cost is the cipher.

Figures (one JSON line each):
- charge: keys/s into a terminal over the depot link (vault sealing included), and in-process
  (platform transaction only);
- records: 1 KiB records/s with OTP (+ Poly1305) and AES-256-GCM, end to end (seal at the
  terminal, CurveZMQ, decrypt + erase + commit at the platform) and in-process, beside the
  bare cipher (seal + open of the same record, no I/O);
- login: latency (challenge + proof: two round trips, one commit), median and p99;
- fleet: register 100,000 terminals, then the time to revoke one and to charge 1,000 in a row.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import zmq

from bench.common import emit, progress
from kms.api import Api
from kms.config import DEFAULT_LEVELS, build_policy
from kms.crypto import AES_GCM, OTP, open_sealed, seal
from kms.platform import KeyCloudPlatform, record_aad
from kms.policy import SERVICES
from kms.server import KeyManagementServer
from kms.sim_nodes import StandInNodes
from kms.site import Site
from kms.store import Store
from kms.terminal import Terminal, TerminalVault

RECORD_BYTES = 1024
N_RECORDS = int(os.environ.get("QKD_BENCH_KMS_RECORDS", "300"))
N_CHARGE = int(os.environ.get("QKD_BENCH_KMS_CHARGE", "2000"))
N_LOGINS = int(os.environ.get("QKD_BENCH_KMS_LOGINS", "100"))
FLEET = int(os.environ.get("QKD_BENCH_KMS_FLEET", "100000"))
FLEET_CHARGES = 1000
KEYS_PER_FLEET_CHARGE = 8
OTP_KEY_BITS = (RECORD_BYTES + 32) * 8        # a 1 KiB record plus the Poly1305 key


def _fill(kms: KeyManagementServer, service: str, n: int) -> None:
    kms.pool_targets[service] = n
    while kms.counts(service)[0] < n:
        if not kms.refill([service])[service]:
            raise RuntimeError(f"stand-in node gave no {service} key")


def _bare_cipher(algorithm: str, key_len: int) -> float:
    key = bytearray(secrets.token_bytes(key_len))
    record = secrets.token_bytes(RECORD_BYTES)
    aad = record_aad("T", "s", str(uuid.uuid4()))
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        open_sealed(algorithm, key, seal(algorithm, key, record, aad), aad)
    return n / (time.perf_counter() - t0)


def main() -> None:
    levels = {"critical": {**DEFAULT_LEVELS["critical"], "key_size_bits": OTP_KEY_BITS,
                           "max_bytes_per_key": RECORD_BYTES}}
    policy = build_policy(levels=levels)
    with tempfile.TemporaryDirectory(prefix="bench-kms-") as tmp, \
            StandInNodes(SERVICES, link_bytes=48 << 20, max_key_size=16384) as (node_a, _):
        root = Path(tmp)
        kms = KeyManagementServer(Store(root / "kms.db"), policy, node_a.source(timeout_s=10))
        plat = KeyCloudPlatform(kms)
        site = Site(kms, plat, Api(kms, plat, {}, {}), server_keys=zmq.curve_keypair(),
                    api_endpoint="tcp://127.0.0.1:*", depot_endpoint="tcp://127.0.0.1:*",
                    name="bench").start(refill=False)
        try:
            _charge_and_records(root, kms, plat, site)
            _fleet(kms, plat)
        finally:
            site.stop()


def _terminal(root, plat, site, tid) -> Terminal:
    vault = TerminalVault(root / tid, tid)
    plat.register(tid, tid, vault.public_key.decode())
    return Terminal(vault, site.public_key, depot=site.depot.endpoint, road=site.road.endpoint,
                    timeout_s=30, retries=1)


def _charge_and_records(root, kms, plat, site) -> None:
    progress("kms: filling pools from the stand-in node")
    _fill(kms, "position", N_CHARGE + 200 + 2 * N_RECORDS + 10)
    _fill(kms, "identity", N_RECORDS + 10)
    _fill(kms, "password-auth", N_LOGINS + 10)
    t = _terminal(root, plat, site, "BENCH-1")
    t0 = time.perf_counter()
    n = t.charge({"position": N_CHARGE})
    dt = time.perf_counter() - t0
    emit("kms_charge", path="depot link, terminal vault", keys=n, seconds=round(dt, 4),
         keys_per_s=round(n / dt, 1))
    t0 = time.perf_counter()
    keys = plat.charge("BENCH-1", "in-process", {"position": 200})
    dt = time.perf_counter() - t0
    emit("kms_charge", path="platform in-process", keys=len(keys), seconds=round(dt, 4),
         keys_per_s=round(len(keys) / dt, 1))
    for k in keys:
        k.key[:] = bytes(len(k.key))
    plat.revoke("BENCH-1", "bench: in-process batch not held by the terminal")

    t = _terminal(root, plat, site, "BENCH-2")
    t.charge({"position": N_RECORDS, "identity": N_RECORDS, "password-auth": N_LOGINS})
    record = secrets.token_bytes(RECORD_BYTES)
    for service, algorithm, key_len in (("position", AES_GCM, 32),
                                        ("identity", OTP, OTP_KEY_BITS // 8)):
        bare = _bare_cipher(algorithm, key_len)
        t0 = time.perf_counter()
        for _ in range(N_RECORDS):
            t.send_record(service, record)
        dt = time.perf_counter() - t0
        emit("kms_records", algorithm=algorithm, record_bytes=RECORD_BYTES, records=N_RECORDS,
             end_to_end_per_s=round(N_RECORDS / dt, 1), bare_cipher_per_s=round(bare, 1),
             end_to_end_over_bare=round((N_RECORDS / dt) / bare, 4))
    # in-process decrypt + erase + commit, without the socket and the terminal vault
    plat_keys = plat.charge("BENCH-2", "in-process-records", {"position": N_RECORDS})
    sealed = [(k.key_id, seal(AES_GCM, k.key, record, record_aad("BENCH-2", "position",
                                                                 k.key_id)))
              for k in plat_keys]
    t0 = time.perf_counter()
    for kid, ct in sealed:
        plat.receive_record("BENCH-2", "position", kid, ct)
    dt = time.perf_counter() - t0
    emit("kms_records", algorithm=AES_GCM, path="platform in-process", records=len(sealed),
         per_s=round(len(sealed) / dt, 1))
    lat = []
    for _ in range(N_LOGINS):
        t0 = time.perf_counter()
        t.login()
        lat.append(time.perf_counter() - t0)
    lat.sort()
    emit("kms_login", logins=len(lat), median_ms=round(1e3 * statistics.median(lat), 3),
         p99_ms=round(1e3 * lat[int(0.99 * (len(lat) - 1))], 3))
    t.close()


def _fleet(kms, plat) -> None:
    progress(f"kms: registering {FLEET} terminals")
    t0 = time.perf_counter()
    batch = 10_000
    for start in range(0, FLEET, batch):
        plat.register_many([(f"F{i:06d}", f"vehicle {i}", f"{i:040d}")
                            for i in range(start, min(FLEET, start + batch))])
    emit("kms_fleet_register", terminals=FLEET, seconds=round(time.perf_counter() - t0, 3))
    _fill(kms, "position", FLEET_CHARGES * KEYS_PER_FLEET_CHARGE)
    t0 = time.perf_counter()
    for i in range(FLEET_CHARGES):
        for k in plat.charge(f"F{i:06d}", "fleet", {"position": KEYS_PER_FLEET_CHARGE}):
            k.key[:] = bytes(len(k.key))
    dt = time.perf_counter() - t0
    emit("kms_fleet_charge", terminals_registered=FLEET, charges=FLEET_CHARGES,
         keys_per_charge=KEYS_PER_FLEET_CHARGE, seconds=round(dt, 3),
         ms_per_charge=round(1e3 * dt / FLEET_CHARGES, 3))
    t0 = time.perf_counter()
    erased = plat.revoke("F000500", "bench")
    dt = time.perf_counter() - t0
    emit("kms_fleet_revoke", terminals_registered=FLEET, mirror_keys_erased=erased,
         ms=round(1e3 * dt, 3))
    t0 = time.perf_counter()
    erased = plat.revoke(f"F{FLEET - 1:06d}", "bench")
    emit("kms_fleet_revoke", terminals_registered=FLEET, mirror_keys_erased=erased,
         ms=round(1e3 * (time.perf_counter() - t0), 3), note="terminal never charged")


if __name__ == "__main__":
    main()

"""The terminal SDK: what a vehicle's software embeds to use its charged keys.

``TerminalVault`` keeps the charged keys at rest, each sealed with AES-256-GCM under the
device key (in a real terminal a secure element holds it; here a 0600 file) with the key's
ID, service and sequence number as associated data, so a row moved or altered in the file
fails to open. A key is erased from the vault (committed) *before* the record or login that
uses it is sent: a terminal that crashes mid-send has lost one key, never reused one.

``Terminal`` adds the two links: the depot (charging) and the road (records, login), both
CurveZMQ with the platform's public key pinned and the terminal's own key registered there.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import zmq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms.crypto import login_proof, seal, wipe
from kms.errors import AlreadyUsed, NoKeyAvailable
from kms.platform import LOGIN_SERVICE, ChargedKey, record_aad
from kms.rpc import RpcClient
from kms.store import private_file

DEVICE_KEY_FILE = "device.key"
CURVE_KEY_FILE = "curve.key"
VAULT_FILE = "vault.db"


def _aad(key_id: str, service: str, algorithm: str, seq: int) -> bytes:
    return f"qkd-kms vault\0{key_id}\0{service}\0{algorithm}\0{seq}".encode()


class TerminalVault:
    """Charged keys at rest in ``state_dir`` (created on first use)."""

    def __init__(self, state_dir: str | Path, terminal_id: str):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.terminal_id = terminal_id
        self._device_key = self._secret_file(DEVICE_KEY_FILE, lambda: secrets.token_bytes(32))
        pub_sec = self._secret_file(CURVE_KEY_FILE, lambda: b"\n".join(zmq.curve_keypair()))
        self.public_key, self.secret_key = pub_sec.split(b"\n")
        private_file(self.dir / VAULT_FILE)
        self.db = sqlite3.connect(self.dir / VAULT_FILE, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.execute("CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, service TEXT "
                        "NOT NULL, algorithm TEXT NOT NULL, seq INTEGER NOT NULL, nonce BLOB "
                        "NOT NULL, sealed BLOB NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS keys_by_seq ON keys(service, seq)")

    def _secret_file(self, name: str, make) -> bytes:
        path = self.dir / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(make())
                f.flush()
                os.fsync(f.fileno())
        return path.read_bytes()

    def store(self, keys: list[ChargedKey]) -> int:
        """Seal and keep a charged batch (one transaction); returns how many were new."""
        aes = AESGCM(self._device_key)
        rows = []
        for k in keys:
            nonce = secrets.token_bytes(12)
            rows.append((k.key_id, k.service, k.algorithm, k.seq, nonce,
                         aes.encrypt(nonce, bytes(k.key), _aad(k.key_id, k.service,
                                                               k.algorithm, k.seq))))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO keys VALUES (?,?,?,?,?,?)", rows)
            n = self.db.total_changes - before
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return n

    def take(self, service: str) -> ChargedKey:
        """The service's next key, erased from the vault before it is returned."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT key_id, algorithm, seq, nonce, sealed FROM keys WHERE "
                                  "service=? ORDER BY seq LIMIT 1", (service,)).fetchone()
            if row is None:
                raise NoKeyAvailable(f"terminal {self.terminal_id}: no {service!r} key left; "
                                     "dock at the depot to charge")
            self.db.execute("DELETE FROM keys WHERE key_id=?", (row[0],))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        kid, alg, seq, nonce, sealed = row
        key = bytearray(AESGCM(self._device_key).decrypt(nonce, sealed,
                                                         _aad(kid, service, alg, seq)))
        return ChargedKey(kid, service, alg, seq, key)

    def records_left(self) -> dict[str, int]:
        """How many records (or logins) the current charge still covers, per service."""
        return dict(self.db.execute("SELECT service, COUNT(*) FROM keys GROUP BY service"))

    def close(self) -> None:
        self.db.close()


@dataclass
class SealedRecord:
    service: str
    key_id: str
    ciphertext: bytes

    def body(self) -> dict:
        return {"service": self.service, "key_ID": self.key_id,
                "ciphertext": base64.b64encode(self.ciphertext).decode()}


class Terminal:
    """A vehicle terminal: vault + links to the platform's depot and road endpoints."""

    def __init__(self, vault: TerminalVault, platform_public_key: bytes, *, depot: str,
                 road: str, timeout_s: float = 3.0, retries: int = 3, context=None):
        self.vault = vault
        self.id = vault.terminal_id
        kw = dict(server_public_key=platform_public_key, public_key=vault.public_key,
                  secret_key=vault.secret_key, timeout_s=timeout_s, retries=retries,
                  context=context)
        self.depot = RpcClient(depot, **kw)
        self.road = RpcClient(road, **kw)

    def close(self) -> None:
        self.depot.close()
        self.road.close()

    def charge(self, plan: dict[str, int] | None = None, *, charge_id: str | None = None) -> int:
        """Dock: receive a batch, keep it sealed; a retry with the same charge_id is safe."""
        body = {"charge_id": charge_id or uuid.uuid4().hex}
        if plan is not None:
            body["plan"] = plan
        reply = self.depot.call("charge", body)
        keys = []
        try:
            for k in reply["keys"]:
                keys.append(ChargedKey(k["key_ID"], k["service"], k["algorithm"], int(k["seq"]),
                                       bytearray(base64.b64decode(k["key"]))))
            return self.vault.store(keys)
        finally:
            for k in keys:
                wipe(k.key)

    def seal(self, service: str, payload: bytes) -> SealedRecord:
        """Encrypt one record under the service's next key (erased from the vault first)."""
        k = self.vault.take(service)
        try:
            ct = seal(k.algorithm, k.key, payload, record_aad(self.id, service, k.key_id))
        finally:
            wipe(k.key)
        return SealedRecord(service, k.key_id, ct)

    def send(self, record: SealedRecord) -> dict:
        try:
            return self.road.call("record", record.body())
        except AlreadyUsed as exc:
            # our own retry after a lost reply: the platform already has the record
            if exc.details.get("duplicate"):
                return {"accepted": True, "key_ID": record.key_id}
            raise

    def send_record(self, service: str, payload: bytes) -> dict:
        return self.send(self.seal(service, payload))

    def login(self) -> dict:
        """Prove possession of the next unused login key against a fresh challenge."""
        ch = base64.b64decode(self.road.call("challenge", {})["challenge"])
        k = self.vault.take(LOGIN_SERVICE)
        try:
            proof = login_proof(k.key, ch, self.id)
        finally:
            wipe(k.key)
        return self.road.call("login", {"key_ID": k.key_id,
                                        "proof": base64.b64encode(proof).decode()})

    def status(self) -> dict:
        return self.road.call("status", {})

    def records_left(self) -> dict[str, int]:
        return self.vault.records_left()


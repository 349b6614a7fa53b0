"""The KMS's embedded SQLite store: the only module that imports ``sqlite3``.

Crash consistency is SQLite's: WAL with ``synchronous=FULL`` makes a committed transaction
survive a kill -9 or power loss, and every state change that hands out or consumes a key is one
``BEGIN IMMEDIATE`` transaction (take from the pool and write the mirror; erase the mirror key
and record its ID as used) committed before any reply leaves the process. So after a crash a
key is either still unused at both ends or used and remembered as used: never used twice.
``secure_delete=ON`` overwrites deleted key bytes in the file instead of leaving them in free
pages.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS pool_keys (
    key_id TEXT PRIMARY KEY, service TEXT NOT NULL, origin TEXT NOT NULL,
    origin_detail TEXT NOT NULL DEFAULT '', size_bits INTEGER NOT NULL, key BLOB NOT NULL,
    obtained_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'ready',
    current_since REAL, messages_used INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS pool_by_service ON pool_keys(service, origin, state, obtained_at);
CREATE TABLE IF NOT EXISTS retired_keys (
    key_id TEXT PRIMARY KEY, service TEXT NOT NULL, origin TEXT NOT NULL,
    retired_at REAL NOT NULL, reason TEXT NOT NULL, replaced_by TEXT);
CREATE TABLE IF NOT EXISTS draws (
    ts REAL NOT NULL, user TEXT NOT NULL, service TEXT NOT NULL, origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS draws_by_user ON draws(user, service, ts);
CREATE INDEX IF NOT EXISTS draws_by_service ON draws(service, ts);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '', key_id TEXT NOT NULL DEFAULT '',
    granted INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terminals (
    terminal_id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, public_key TEXT NOT NULL UNIQUE,
    registered_at REAL NOT NULL, revoked_at REAL, revoke_reason TEXT NOT NULL DEFAULT '',
    next_seq INTEGER NOT NULL DEFAULT 0, keys_used INTEGER NOT NULL DEFAULT 0,
    last_charge_at REAL);
CREATE TABLE IF NOT EXISTS mirror (
    terminal_id TEXT NOT NULL, key_id TEXT NOT NULL, service TEXT NOT NULL,
    algorithm TEXT NOT NULL, seq INTEGER NOT NULL, key BLOB NOT NULL, charge_id TEXT NOT NULL,
    PRIMARY KEY (terminal_id, key_id));
CREATE INDEX IF NOT EXISTS mirror_by_seq ON mirror(terminal_id, service, seq);
CREATE INDEX IF NOT EXISTS mirror_by_charge ON mirror(terminal_id, charge_id);
CREATE TABLE IF NOT EXISTS used_ids (
    terminal_id TEXT NOT NULL, key_id TEXT NOT NULL, used_at REAL NOT NULL,
    how TEXT NOT NULL, digest BLOB, PRIMARY KEY (terminal_id, key_id));
CREATE TABLE IF NOT EXISTS charges (
    terminal_id TEXT NOT NULL, request_id TEXT NOT NULL, charge_id TEXT NOT NULL,
    charged_at REAL NOT NULL, n_keys INTEGER NOT NULL, PRIMARY KEY (terminal_id, request_id));
CREATE TABLE IF NOT EXISTS challenges (
    terminal_id TEXT PRIMARY KEY, challenge BLOB NOT NULL, expires_at REAL NOT NULL);
"""


def private_file(path: str | Path) -> None:
    """Create ``path`` readable by its owner only (SQLite's -wal and -shm files copy its mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class Store:
    """One SQLite file (or ``:memory:``); ``tx()`` is a serialised write transaction."""

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        self._lock = threading.RLock()
        if self.path != ":memory:":
            private_file(self.path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                    timeout=30.0)
        if self.path != ":memory:":
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OSError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA secure_delete=ON")
        self.conn.executescript(SCHEMA)

    @contextmanager
    def tx(self):
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    def audit(self, conn, ts: float, actor: str, action: str, subject: str, key_id: str,
              granted: bool, reason: str) -> None:
        conn.execute("INSERT INTO audit (ts, actor, action, subject, key_id, granted, reason) "
                     "VALUES (?,?,?,?,?,?,?)",
                     (ts, actor, action, subject, key_id, int(granted), reason))

    def close(self) -> None:
        with self._lock:
            self.conn.close()

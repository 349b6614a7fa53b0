"""The site's key-management server: per-service pools, level policy, legacy keys, audit.

Keys enter a service's pool from the node (``refill``: enc_keys at this site, so the peer site
can fetch the same keys with dec_keys) or as imported classical keys (origin recorded, never
mixed up with quantum ones). ``allocate`` hands a key to an application that encrypts;
``retrieve`` gives the peer site's application the same key by ID to decrypt. Every verdict,
granted or not, is written to the audit table with the reason ``policy.decide`` gave.

One-time-pad keys leave the pool when handed out. An AES-256-GCM key becomes the service's
*current* key and is handed out again until its rotation interval, age, message or byte budget
runs out; then the next draw rotates to a fresh key and erases the old one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

from kms.crypto import AES_GCM, OTP, wipe
from kms.errors import (AlreadyUsed, KmsError, MalformedRequest, NoKeyAvailable,
                        PolicyRefused, UnknownName)
from kms.policy import Decision, Policy, decide
from kms.store import Store

QUANTUM = "quantum"
CLASSICAL = "classical"
HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass
class Allocation:
    key_id: str
    key: bytearray
    service: str
    algorithm: str
    origin: str
    decision: Decision

    def wipe(self) -> None:
        wipe(self.key)


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise MalformedRequest(f"key ID {str(text)[:40]!r} is not a UUID") from None


class KeyManagementServer:
    def __init__(self, store: Store, policy: Policy, source=None, *, site: str = "site",
                 pool_targets: dict[str, int] | None = None,
                 clock: Callable[[], float] = time.time):
        self.store, self.policy, self.source, self.site = store, policy, source, site
        self.pool_targets = pool_targets or {}
        self.clock = clock

    # -- pools -----------------------------------------------------------------------------
    def _check_service(self, service: str) -> None:
        if service not in self.policy.service_levels:
            raise UnknownName(f"unknown service {service!r}; known: "
                              f"{', '.join(sorted(self.policy.service_levels))}")

    def counts(self, service: str) -> tuple[int, int]:
        """Ready quantum keys and active classical keys of a service's pool."""
        rows = dict(self.store.query(
            "SELECT origin, COUNT(*) FROM pool_keys WHERE service=? AND state='ready' "
            "GROUP BY origin", (service,)))
        return rows.get(QUANTUM, 0), rows.get(CLASSICAL, 0)

    def demand_last_hour(self, service: str) -> int:
        return self.store.query("SELECT COUNT(*) FROM draws WHERE service=? AND ts>=?",
                                (service, self.clock() - HOUR_S))[0][0]

    def refill(self, services=None) -> dict[str, int]:
        """Top pools up from the node, most sensitive level first, then by last hour's demand.

        A pool's target is its configured size or, if larger, twice what it gave out in the last
        hour. Each new quantum key retires one classical key of the same service (oldest first).
        """
        services = list(services or self.policy.service_levels)
        for s in services:
            self._check_service(s)
        services.sort(key=lambda s: (-self.policy.level_of(s).rank, -self.demand_last_hour(s)))
        added: dict[str, int] = {}
        for s in services:
            level = self.policy.level_of(s)
            have = self.counts(s)[0]
            want = max(self.pool_targets.get(s, 0), 2 * self.demand_last_hour(s)) - have
            if want <= 0 or self.source is None:
                added[s] = 0
                continue
            try:
                keys = self.source.draw(s, want, level.key_size_bits)
            except NoKeyAvailable:
                added[s] = 0
                continue
            now = self.clock()
            try:
                with self.store.tx() as c:
                    c.executemany(
                        "INSERT INTO pool_keys (key_id, service, origin, origin_detail, "
                        "size_bits, key, obtained_at) VALUES (?,?,?,?,?,?,?)",
                        [(str(k.key_id), s, QUANTUM, f"node {self.source.endpoint} enc_keys",
                          len(k.key) * 8, bytes(k.key), now) for k in keys])
                    self._retire_classical(c, s, [str(k.key_id) for k in keys], now)
            finally:
                for k in keys:
                    k.wipe()
            added[s] = len(keys)
        return added

    def purge_expired(self) -> int:
        """Erase keys older than their level's maximum age (unused ones and current ones)."""
        n = 0
        now = self.clock()
        for s in self.policy.service_levels:
            level = self.policy.level_of(s)
            with self.store.tx() as c:
                rows = c.execute("SELECT key_id, origin FROM pool_keys WHERE service=? AND "
                                 "obtained_at < ?", (s, now - level.max_key_age_s)).fetchall()
                for kid, origin in rows:
                    self._retire(c, kid, s, origin, now, "expired (older than max_key_age_s "
                                 f"{level.max_key_age_s:g} of level {level.name!r})")
                n += len(rows)
        return n

    def _retire(self, c, key_id: str, service: str, origin: str, now: float, reason: str,
                replaced_by: str | None = None) -> None:
        c.execute("DELETE FROM pool_keys WHERE key_id=?", (key_id,))
        c.execute("INSERT OR REPLACE INTO retired_keys VALUES (?,?,?,?,?,?)",
                  (key_id, service, origin, now, reason, replaced_by))
        self.store.audit(c, now, "kms", "retire", service, key_id, True, reason)

    def _retire_classical(self, c, service: str, new_ids: list[str], now: float) -> int:
        # the current key first: it is the one protecting data now
        old = c.execute("SELECT key_id FROM pool_keys WHERE service=? AND origin=? AND "
                        "state IN ('ready', 'current') "
                        "ORDER BY state='current' DESC, obtained_at LIMIT ?",
                        (service, CLASSICAL, len(new_ids))).fetchall()
        for (kid,), new in zip(old, new_ids):
            self._retire(c, kid, service, CLASSICAL, now, "replaced by quantum key", new)
        return len(old)

    # -- legacy keys -----------------------------------------------------------------------
    def import_legacy(self, service: str, keys: list[tuple[str, bytes]], origin_detail: str,
                      actor: str = "admin") -> int:
        """Add classical keys (pre-shared at both sites) to a service's pool, marked classical."""
        self._check_service(service)
        if not origin_detail.strip():
            raise MalformedRequest("a legacy import needs its origin (where the keys come from)")
        level = self.policy.level_of(service)
        if not level.allow_classical:
            raise PolicyRefused(f"level {level.name!r} of service {service!r} forbids "
                                "classical keys; nothing imported")
        now = self.clock()
        rows = []
        for kid, key in keys:
            if len(key) < 32:
                raise MalformedRequest(f"legacy key {kid}: {len(key)} bytes; at least 32 "
                                       "accepted (AES-256)")
            rows.append((_uuid(kid), service, CLASSICAL, origin_detail, len(key) * 8, key, now))
        with self.store.tx() as c:
            dup = [r[0] for r in rows if c.execute(
                "SELECT 1 FROM pool_keys WHERE key_id=? UNION SELECT 1 FROM retired_keys "
                "WHERE key_id=?", (r[0], r[0])).fetchone()]
            if dup:
                raise AlreadyUsed(f"legacy key ID {dup[0]} is already known here; "
                                  "nothing imported")
            c.executemany("INSERT INTO pool_keys (key_id, service, origin, origin_detail, "
                          "size_bits, key, obtained_at) VALUES (?,?,?,?,?,?,?)", rows)
            self.store.audit(c, now, actor, "import-legacy", service, "", True,
                             f"{len(rows)} classical keys from {origin_detail}")
        return len(rows)

    def replacement_report(self) -> list[dict]:
        """Per service: how much is still protected by classical keys."""
        now, out = self.clock(), []
        for s in sorted(self.policy.service_levels):
            held = dict(self.store.query(
                "SELECT origin, COUNT(*) FROM pool_keys WHERE service=? AND "
                "state IN ('ready', 'current') GROUP BY origin", (s,)))
            q, cl = held.get(QUANTUM, 0), held.get(CLASSICAL, 0)
            retired = self.store.query("SELECT COUNT(*) FROM retired_keys WHERE service=? AND "
                                       "origin=? AND replaced_by IS NOT NULL",
                                       (s, CLASSICAL))[0][0]
            cur = self.store.query("SELECT origin FROM pool_keys WHERE service=? AND "
                                   "state='current'", (s,))
            draws = dict(self.store.query("SELECT origin, COUNT(*) FROM draws WHERE service=? "
                                          "AND ts>=? GROUP BY origin", (s, now - DAY_S)))
            total_draws = sum(draws.values())
            out.append({
                "service": s, "level": self.policy.service_levels[s],
                "quantum_keys": q, "classical_keys": cl, "classical_retired": retired,
                "current_key_origin": cur[0][0] if cur else None,
                "classical_share_of_pool": round(cl / (q + cl), 4) if q + cl else 0.0,
                "classical_share_of_draws_24h":
                    round(draws.get(CLASSICAL, 0) / total_draws, 4) if total_draws else 0.0})
        return out

    # -- allocation ------------------------------------------------------------------------
    def _refuse(self, user: str, action: str, service: str, reason: str,
                exc: type[KmsError] = PolicyRefused):
        with self.store.tx() as c:
            self.store.audit(c, self.clock(), user, action, service, "", False, reason)
        raise exc(reason)

    def _user_draws(self, user: str, service: str) -> int:
        return self.store.query("SELECT COUNT(*) FROM draws WHERE user=? AND service=? AND "
                                "ts>=?", (user, service, self.clock() - HOUR_S))[0][0]

    def allocate(self, user: str, service: str, algorithm: str, *, record_bytes: int = 0,
                 messages: int = 1) -> Allocation:
        """A key for ``user`` to encrypt ``messages`` records of ``record_bytes`` in total."""
        if record_bytes < 0 or messages < 1:
            raise MalformedRequest("record_bytes must be >= 0 and messages >= 1")
        if service not in self.policy.service_levels:
            self._refuse(user, "allocate", service, f"unknown service {service!r}; known: "
                         f"{', '.join(sorted(self.policy.service_levels))}", UnknownName)
        level = self.policy.level_of(service)
        if algorithm == OTP and messages != 1:
            self._refuse(user, "allocate", service, "a one-time pad key protects one message")
        if algorithm == AES_GCM and (messages > level.max_messages_per_key
                                     or record_bytes > level.max_bytes_per_key):
            self._refuse(user, "allocate", service, f"level {level.name!r} lets one key protect "
                         f"{level.max_messages_per_key} messages and {level.max_bytes_per_key} "
                         "bytes; asked for more")
        self.purge_expired_service(service)
        now = self.clock()
        with self.store.tx() as c:
            q, cl = (dict(c.execute("SELECT origin, COUNT(*) FROM pool_keys WHERE service=? "
                                    "AND state='ready' GROUP BY origin",
                                    (service,)).fetchall()).get(o, 0)
                     for o in (QUANTUM, CLASSICAL))
            if algorithm == AES_GCM:
                cur = self._current_if_usable(c, service, level, messages, record_bytes, now)
                if cur is not None:
                    # a current key counts as available from its own origin
                    q, cl = (q + 1, cl) if cur[1] == QUANTUM else (q, cl + 1)
            else:
                cur = None
            d = decide(self.policy, user, service, algorithm, quantum_left=q, classical_left=cl,
                       user_draws_last_hour=self._user_draws(user, service),
                       record_bytes=record_bytes)
            if d.granted and cur is not None and cur[1] == d.source:
                kid, origin, key = cur
                c.execute("UPDATE pool_keys SET messages_used=messages_used+?, "
                          "bytes_used=bytes_used+? WHERE key_id=?",
                          (messages, record_bytes, kid))
                d = Decision(True, d.reason + "; current key reused within its rotation "
                             "budget", d.source, d.algorithm)
            elif d.granted:
                row = c.execute("SELECT key_id, key FROM pool_keys WHERE service=? AND "
                                "origin=? AND state='ready' ORDER BY obtained_at LIMIT 1",
                                (service, d.source)).fetchone()
                kid, origin, key = row[0], d.source, row[1]
                if algorithm == OTP:
                    c.execute("DELETE FROM pool_keys WHERE key_id=?", (kid,))
                else:
                    for (old,) in c.execute("SELECT key_id FROM pool_keys WHERE service=? AND "
                                            "state='current'", (service,)).fetchall():
                        c.execute("DELETE FROM pool_keys WHERE key_id=?", (old,))
                        self.store.audit(c, now, "kms", "rotate", service, old, True,
                                         "replaced as the service's current AES key")
                    c.execute("UPDATE pool_keys SET state='current', current_since=?, "
                              "messages_used=?, bytes_used=? WHERE key_id=?",
                              (now, messages, record_bytes, kid))
                    d = Decision(True, d.reason + "; rotated to a fresh current key",
                                 d.source, d.algorithm)
            if not d.granted:
                self.store.audit(c, now, user, "allocate", service, "", False, d.reason)
            else:
                c.execute("INSERT INTO draws VALUES (?,?,?,?)", (now, user, service, origin))
                self.store.audit(c, now, user, "allocate", service, kid, True, d.reason)
        if not d.granted:
            exc = NoKeyAvailable if d.reason.startswith("no quantum key") else PolicyRefused
            raise exc(d.reason)
        return Allocation(kid, bytearray(key), service, algorithm, origin, d)

    def _current_if_usable(self, c, service, level, messages, nbytes, now):
        row = c.execute("SELECT key_id, origin, key, current_since, messages_used, bytes_used "
                        "FROM pool_keys WHERE service=? AND state='current'",
                        (service,)).fetchone()
        if row is None:
            return None
        kid, origin, key, since, used_m, used_b = row
        if (now - since >= level.rotation_interval_s
                or used_m + messages > level.max_messages_per_key
                or used_b + nbytes > level.max_bytes_per_key):
            return None
        return kid, origin, key

    def purge_expired_service(self, service: str) -> None:
        level = self.policy.level_of(service)
        now = self.clock()
        with self.store.tx() as c:
            for kid, origin in c.execute("SELECT key_id, origin FROM pool_keys WHERE service=? "
                                         "AND obtained_at < ?",
                                         (service, now - level.max_key_age_s)).fetchall():
                self._retire(c, kid, service, origin, now, "expired (older than max_key_age_s "
                             f"{level.max_key_age_s:g} of level {level.name!r})")

    def retrieve(self, user: str, service: str, key_id: str, algorithm: str) -> Allocation:
        """The key the peer site allocated under ``key_id``, for ``user`` to decrypt with.

        Looked up in this site's pool first (classical keys are imported at both sites); else
        fetched from the node with this service's SAE. A one-time-pad key is handed out once;
        an AES key is kept (as a retrieved key) until its level's maximum age.
        """
        kid = _uuid(key_id)
        if service not in self.policy.service_levels:
            self._refuse(user, "retrieve", service, f"unknown service {service!r}", UnknownName)
        level = self.policy.level_of(service)
        d = decide(self.policy, user, service, algorithm, quantum_left=1, classical_left=0,
                   user_draws_last_hour=0)
        if not d.granted:
            self._refuse(user, "retrieve", service, d.reason)
        self.purge_expired_service(service)
        now = self.clock()
        with self.store.tx() as c:
            row = c.execute("SELECT service, origin, key, state FROM pool_keys WHERE key_id=?",
                            (kid,)).fetchone()
            if row is not None and row[0] == service and \
                    (row[3] == "retrieved" or row[1] == CLASSICAL):
                if row[1] == CLASSICAL and algorithm == OTP:
                    self.store.audit(c, now, user, "retrieve", service, kid, False,
                                     "classical keys serve AES-256-GCM only")
                    raise PolicyRefused("classical keys serve AES-256-GCM only")
                self.store.audit(c, now, user, "retrieve", service, kid, True,
                                 f"{row[1]} key held at this site")
                return Allocation(kid, bytearray(row[2]), service, algorithm, row[1],
                                  Decision(True, "held at this site", row[1], algorithm))
            if row is not None:
                # a key of another service, or one this site drew itself: never crosses
                self.store.audit(c, now, user, "retrieve", service, kid, False,
                                 "key ID not in this service's pool")
                raise UnknownName(f"key ID not in the {service!r} pool")
            gone = c.execute("SELECT 1 FROM retired_keys WHERE key_id=?", (kid,)).fetchone()
            if gone:
                raise UnknownName(f"key ID not in the {service!r} pool (expired or retired)")
        if self.source is None:
            self._refuse(user, "retrieve", service, "no node configured to fetch key IDs from",
                         NoKeyAvailable)
        try:
            keys = self.source.fetch(service, [uuid.UUID(kid)])
        except (UnknownName, NoKeyAvailable) as exc:
            self._refuse(user, "retrieve", service, exc.message, type(exc))
        key = keys[0]
        try:
            with self.store.tx() as c:
                if algorithm != OTP:
                    c.execute("INSERT INTO pool_keys (key_id, service, origin, origin_detail, "
                              "size_bits, key, obtained_at, state) VALUES (?,?,?,?,?,?,?,?)",
                              (kid, service, QUANTUM, f"node {self.source.endpoint} dec_keys",
                               len(key.key) * 8, bytes(key.key), now, "retrieved"))
                else:
                    c.execute("INSERT OR REPLACE INTO retired_keys VALUES (?,?,?,?,?,?)",
                              (kid, service, QUANTUM, now, "one-time key handed out", None))
                self.store.audit(c, now, user, "retrieve", service, kid, True,
                                 "fetched from the node with dec_keys")
            return Allocation(kid, bytearray(key.key), service, algorithm, QUANTUM,
                              Decision(True, "fetched from the node", QUANTUM, algorithm))
        finally:
            key.wipe()

    # -- administration --------------------------------------------------------------------
    def take_for_terminal(self, c, service: str, number: int) -> list[tuple[str, bytes]]:
        """Inside the caller's transaction: remove ``number`` quantum keys for a terminal."""
        rows = c.execute("SELECT key_id, key FROM pool_keys WHERE service=? AND origin=? AND "
                         "state='ready' AND obtained_at >= ? ORDER BY obtained_at LIMIT ?",
                         (service, QUANTUM,
                          self.clock() - self.policy.level_of(service).max_key_age_s,
                          number)).fetchall()
        if len(rows) < number:
            raise NoKeyAvailable(f"the {service!r} pool holds {len(rows)} quantum keys; "
                                 f"{number} needed for this charge")
        c.executemany("DELETE FROM pool_keys WHERE key_id=?", [(r[0],) for r in rows])
        return rows

    def status(self) -> list[dict]:
        out = []
        for s in sorted(self.policy.service_levels):
            q, cl = self.counts(s)
            out.append({"service": s, "level": self.policy.service_levels[s],
                        "quantum_keys": q, "classical_keys": cl,
                        "draws_last_hour": self.demand_last_hour(s),
                        "target": self.pool_targets.get(s, 0)})
        return out

    def audit_log(self, limit: int = 50) -> list[dict]:
        rows = self.store.query("SELECT ts, actor, action, subject, key_id, granted, reason "
                                "FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(zip(("ts", "actor", "action", "subject", "key_id", "granted", "reason"),
                         r)) for r in rows]


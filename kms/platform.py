"""The key cloud platform: vehicle terminals registered, charged, used, logged in, revoked.

The platform keeps a *mirror* of every key it charged into a terminal. A key is used once:
when a record or a login consumes it, its mirror row is erased and its ID written to
``used_ids`` in the same transaction, so a replay of the ID is refused and, after a kill -9,
a key is either still unused or known as used — never accepted twice. A charge commits the
mirror before the batch leaves the platform, so a terminal never holds a key the platform has
forgotten; a retried charge request (same request ID) returns the same batch, not a new one.

Records are bound to their terminal, service and key ID (the cipher's associated data), so a
ciphertext cannot be moved to another terminal, service or key. Revocation erases a terminal's
mirror and pending challenge in one transaction; other terminals' keys are untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Callable

from kms.crypto import AES_GCM, OTP, CipherError, login_proof, open_sealed
from kms.errors import (AlreadyUsed, MalformedRequest, NotAuthorized, PolicyRefused,
                        UnknownName)
from kms.server import KeyManagementServer

LOGIN_SERVICE = "password-auth"
CHALLENGE_TTL_S = 60.0
TERMINAL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class ChargedKey:
    key_id: str
    service: str
    algorithm: str
    seq: int
    key: bytearray


def record_aad(terminal_id: str, service: str, key_id: str) -> bytes:
    return f"qkd-kms record\0{terminal_id}\0{service}\0{key_id}".encode()


def algorithm_for(policy, service: str) -> str:
    """One-time pad where the level demands it (OTP only), AES-256-GCM otherwise."""
    algs = policy.level_of(service).algorithms
    return OTP if algs == (OTP,) else AES_GCM


def check_terminal_id(terminal_id: str) -> str:
    if not isinstance(terminal_id, str) or not TERMINAL_ID.match(terminal_id):
        raise MalformedRequest(f"terminal ID {str(terminal_id)[:70]!r}: 1-64 characters of "
                               "A-Z a-z 0-9 . _ : - accepted")
    return terminal_id


class KeyCloudPlatform:
    def __init__(self, kms: KeyManagementServer, *, clock: Callable[[], float] | None = None):
        self.kms = kms
        self.store = kms.store
        self.policy = kms.policy
        self.clock = clock or kms.clock

    # -- registry --------------------------------------------------------------------------
    def register(self, terminal_id: str, vehicle: str, public_key: str,
                 actor: str = "admin") -> None:
        check_terminal_id(terminal_id)
        if not vehicle or len(vehicle) > 128:
            raise MalformedRequest("vehicle: 1-128 characters accepted")
        if len(public_key) != 40:
            raise MalformedRequest(f"terminal {terminal_id}: public key must be 40 Z85 "
                                   "characters (a CURVE public key)")
        now = self.clock()
        with self.store.tx() as c:
            if c.execute("SELECT 1 FROM terminals WHERE terminal_id=? OR public_key=?",
                         (terminal_id, public_key)).fetchone():
                raise AlreadyUsed(f"terminal {terminal_id}: this ID or public key is already "
                                  "registered")
            c.execute("INSERT INTO terminals (terminal_id, vehicle, public_key, registered_at) "
                      "VALUES (?,?,?,?)", (terminal_id, vehicle, public_key, now))
            self.store.audit(c, now, actor, "register", terminal_id, "", True,
                             f"vehicle {vehicle}")

    def register_many(self, rows: list[tuple[str, str, str]]) -> None:
        """Bulk registration (fleet import): (terminal ID, vehicle, public key) rows."""
        now = self.clock()
        for tid, _, _ in rows:
            check_terminal_id(tid)
        with self.store.tx() as c:
            c.executemany("INSERT INTO terminals (terminal_id, vehicle, public_key, "
                          "registered_at) VALUES (?,?,?,?)",
                          [(t, v, p, now) for t, v, p in rows])

    def terminal_for_key(self, public_key: str) -> str | None:
        """Who a CURVE public key belongs to, if registered (for ZAP and every request).

        A revoked terminal still passes the handshake so that each of its requests gets a
        clear "revoked" refusal instead of silence; it can no longer do anything else.
        """
        row = self.store.query("SELECT terminal_id FROM terminals WHERE public_key=?",
                               (public_key,))
        return row[0][0] if row else None

    def _active(self, c, terminal_id: str) -> None:
        row = c.execute("SELECT revoked_at FROM terminals WHERE terminal_id=?",
                        (terminal_id,)).fetchone()
        if row is None:
            raise UnknownName(f"unknown terminal {terminal_id!r}: not registered here")
        if row[0] is not None:
            raise NotAuthorized(f"terminal {terminal_id!r} is revoked")

    # -- charging --------------------------------------------------------------------------
    def charge(self, terminal_id: str, request_id: str, plan: dict[str, int]) -> list[ChargedKey]:
        """A batch of keys per service for a docked terminal (mirror committed first)."""
        check_terminal_id(terminal_id)
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
            raise MalformedRequest("charge request ID: 1-64 characters accepted")
        if not plan or any(s not in self.policy.service_levels or not isinstance(n, int)
                           or not 0 <= n <= 4096 for s, n in plan.items()):
            raise MalformedRequest("charge plan: a map of known services to 0-4096 keys; "
                                   f"services: {', '.join(sorted(self.policy.service_levels))}")
        now = self.clock()
        with self.store.tx() as c:
            self._active(c, terminal_id)
            prior = c.execute("SELECT charge_id FROM charges WHERE terminal_id=? AND "
                              "request_id=?", (terminal_id, request_id)).fetchone()
            if prior is not None:
                rows = c.execute("SELECT key_id, service, algorithm, seq, key FROM mirror "
                                 "WHERE terminal_id=? AND charge_id=? ORDER BY seq",
                                 (terminal_id, prior[0])).fetchall()
                return [ChargedKey(r[0], r[1], r[2], r[3], bytearray(r[4])) for r in rows]
            seq = c.execute("SELECT next_seq FROM terminals WHERE terminal_id=?",
                            (terminal_id,)).fetchone()[0]
            charge_id = uuid.uuid4().hex
            out, rows = [], []
            for service in sorted(plan):
                alg = algorithm_for(self.policy, service)
                for kid, key in self.kms.take_for_terminal(c, service, plan[service]):
                    rows.append((terminal_id, kid, service, alg, seq, key, charge_id))
                    out.append(ChargedKey(kid, service, alg, seq, bytearray(key)))
                    seq += 1
            c.executemany("INSERT INTO mirror VALUES (?,?,?,?,?,?,?)", rows)
            c.execute("UPDATE terminals SET next_seq=?, last_charge_at=? WHERE terminal_id=?",
                      (seq, now, terminal_id))
            c.execute("INSERT INTO charges VALUES (?,?,?,?,?)",
                      (terminal_id, request_id, charge_id, now, len(out)))
            c.execute("INSERT INTO draws SELECT ?, ?, service, 'quantum' FROM mirror WHERE "
                      "terminal_id=? AND charge_id=?", (now, f"terminal:{terminal_id}",
                                                        terminal_id, charge_id))
            self.store.audit(c, now, "platform", "charge", terminal_id, "", True,
                             f"{len(out)} keys: " + ", ".join(f"{s}={n}" for s, n in
                                                              sorted(plan.items())))
        return out

    # -- use on the road -------------------------------------------------------------------
    def _consume(self, c, terminal_id: str, key_id: str, service: str, how: str):
        """The mirror row for (terminal, key ID, service), or a refusal; caller erases it."""
        row = c.execute("SELECT service, algorithm, seq, key FROM mirror WHERE terminal_id=? "
                        "AND key_id=?", (terminal_id, key_id)).fetchone()
        if row is None or row[0] != service:
            used = c.execute("SELECT how FROM used_ids WHERE terminal_id=? AND key_id=?",
                             (terminal_id, key_id)).fetchone()
            if used is not None:
                raise AlreadyUsed(f"key ID {key_id} of terminal {terminal_id!r} was already "
                                  f"used ({used[0]}); replay refused")
            raise UnknownName(f"key ID {key_id} is not a {service!r} key charged to terminal "
                              f"{terminal_id!r}")
        return row

    def _erase(self, c, terminal_id, key_id, how, digest=None) -> None:
        c.execute("DELETE FROM mirror WHERE terminal_id=? AND key_id=?", (terminal_id, key_id))
        c.execute("INSERT INTO used_ids VALUES (?,?,?,?,?)",
                  (terminal_id, key_id, self.clock(), how, digest))
        c.execute("UPDATE terminals SET keys_used=keys_used+1 WHERE terminal_id=?",
                  (terminal_id,))

    def receive_record(self, terminal_id: str, service: str, key_id: str,
                       ciphertext: bytes) -> bytes:
        """Decrypt a terminal's record with the mirror key, then erase that key."""
        check_terminal_id(terminal_id)
        key_id = _canonical_uuid(key_id)
        if service not in self.policy.service_levels:
            raise UnknownName(f"unknown service {service!r}")
        digest = hashlib.sha256(ciphertext).digest()
        with self.store.tx() as c:
            self._active(c, terminal_id)
            try:
                _, alg, _, key = self._consume(c, terminal_id, key_id, service, "record")
            except AlreadyUsed as exc:
                prev = c.execute("SELECT digest FROM used_ids WHERE terminal_id=? AND "
                                 "key_id=?", (terminal_id, key_id)).fetchone()
                if prev and prev[0] and hmac.compare_digest(prev[0], digest):
                    exc.details["duplicate"] = True   # the same record: delivered once already
                raise
            kb = bytearray(key)
            try:
                plain = open_sealed(alg, kb, ciphertext,
                                    record_aad(terminal_id, service, key_id))
            except CipherError as exc:
                # the key stays: a forger who saw the key ID must not be able to burn it
                raise PolicyRefused(f"record from terminal {terminal_id!r}, key ID {key_id}: "
                                    f"{exc}") from None
            finally:
                kb[:] = bytes(len(kb))
            self._erase(c, terminal_id, key_id, "record", digest)
        return plain

    def challenge(self, terminal_id: str) -> bytes:
        check_terminal_id(terminal_id)
        ch = secrets.token_bytes(32)
        with self.store.tx() as c:
            self._active(c, terminal_id)
            c.execute("INSERT OR REPLACE INTO challenges VALUES (?,?,?)",
                      (terminal_id, ch, self.clock() + CHALLENGE_TTL_S))
        return ch

    def login(self, terminal_id: str, key_id: str, proof: bytes) -> dict:
        """Accept a login that proves the next unused login key against the open challenge.

        The proved key and every login key charged before it are erased (a key the terminal
        skipped, say because it crashed between erasing and sending, is never usable again).
        A wrong proof closes the challenge but leaves the keys.
        """
        check_terminal_id(terminal_id)
        key_id = _canonical_uuid(key_id)
        now = self.clock()
        with self.store.tx() as c:
            self._active(c, terminal_id)
            ch = c.execute("SELECT challenge, expires_at FROM challenges WHERE terminal_id=?",
                           (terminal_id,)).fetchone()
            c.execute("DELETE FROM challenges WHERE terminal_id=?", (terminal_id,))
            if ch is None or ch[1] < now:
                raise NotAuthorized(f"terminal {terminal_id!r}: no open login challenge (ask "
                                    "for a fresh one)")
            try:
                _, _, seq, key = self._consume(c, terminal_id, key_id, LOGIN_SERVICE, "login")
            except (AlreadyUsed, UnknownName) as exc:
                refusal, ok = exc, False   # raised after commit: the challenge stays closed
            else:
                refusal = None
                kb = bytearray(key)
                try:
                    ok = hmac.compare_digest(login_proof(kb, ch[0], terminal_id), proof)
                finally:
                    kb[:] = bytes(len(kb))
            if refusal is not None:
                self.store.audit(c, now, f"terminal:{terminal_id}", "login", terminal_id,
                                 key_id, False, refusal.message)
            elif not ok:
                self.store.audit(c, now, f"terminal:{terminal_id}", "login", terminal_id,
                                 key_id, False, "proof does not match")
            else:
                skipped = c.execute("SELECT key_id FROM mirror WHERE terminal_id=? AND "
                                    "service=? AND seq<?",
                                    (terminal_id, LOGIN_SERVICE, seq)).fetchall()
                for (k,) in skipped:
                    self._erase(c, terminal_id, k, "login key skipped")
                self._erase(c, terminal_id, key_id, "login")
                self.store.audit(c, now, f"terminal:{terminal_id}", "login", terminal_id,
                                 key_id, True, f"proof of the next login key; {len(skipped)} "
                                 "earlier login keys burned")
        if refusal is not None:
            raise refusal
        if not ok:
            # raised after the transaction commits: the challenge is closed either way
            raise NotAuthorized(f"terminal {terminal_id!r}: login proof refused")
        vehicle = self.store.query("SELECT vehicle FROM terminals WHERE terminal_id=?",
                                   (terminal_id,))[0][0]
        return {"terminal_id": terminal_id, "vehicle": vehicle, "logged_in_at": now}

    # -- revocation and status -------------------------------------------------------------
    def revoke(self, terminal_id: str, reason: str, actor: str = "admin") -> int:
        """Revoke one terminal: erase its mirror now; returns how many keys were erased."""
        check_terminal_id(terminal_id)
        now = self.clock()
        with self.store.tx() as c:
            row = c.execute("SELECT revoked_at FROM terminals WHERE terminal_id=?",
                            (terminal_id,)).fetchone()
            if row is None:
                raise UnknownName(f"unknown terminal {terminal_id!r}: not registered here")
            n = c.execute("DELETE FROM mirror WHERE terminal_id=?", (terminal_id,)).rowcount
            c.execute("DELETE FROM challenges WHERE terminal_id=?", (terminal_id,))
            if row[0] is None:
                c.execute("UPDATE terminals SET revoked_at=?, revoke_reason=? WHERE "
                          "terminal_id=?", (now, reason or "revoked", terminal_id))
            self.store.audit(c, now, actor, "revoke", terminal_id, "", True,
                             f"{reason or 'revoked'}; {n} mirror keys erased")
        return n

    def terminal_status(self, terminal_id: str) -> dict:
        check_terminal_id(terminal_id)
        row = self.store.query("SELECT vehicle, registered_at, revoked_at, revoke_reason, "
                               "keys_used, last_charge_at FROM terminals WHERE terminal_id=?",
                               (terminal_id,))
        if not row:
            raise UnknownName(f"unknown terminal {terminal_id!r}: not registered here")
        vehicle, reg, rev, why, used, last = row[0]
        left = dict(self.store.query("SELECT service, COUNT(*) FROM mirror WHERE "
                                     "terminal_id=? GROUP BY service", (terminal_id,)))
        return {"terminal_id": terminal_id, "vehicle": vehicle, "registered_at": reg,
                "revoked": rev is not None, "revoked_at": rev, "revoke_reason": why,
                "keys_used": used, "last_charge_at": last, "keys_left": left}

    def list_terminals(self, limit: int = 100, offset: int = 0) -> list[dict]:
        rows = self.store.query(
            "SELECT t.terminal_id, t.vehicle, t.revoked_at IS NOT NULL, t.keys_used, "
            "(SELECT COUNT(*) FROM mirror m WHERE m.terminal_id=t.terminal_id) "
            "FROM terminals t ORDER BY t.terminal_id LIMIT ? OFFSET ?", (limit, offset))
        return [{"terminal_id": r[0], "vehicle": r[1], "revoked": bool(r[2]),
                 "keys_used": r[3], "keys_left": r[4]} for r in rows]


def _canonical_uuid(text) -> str:
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise MalformedRequest(f"key ID {str(text)[:40]!r} is not a UUID") from None

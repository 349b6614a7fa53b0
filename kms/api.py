"""Requests of the KMS's two endpoints, validated, mapped onto the server and the platform.

Depot endpoint (the trusted local link at the depot): ``charge``, ``status`` — terminals only.
API endpoint: terminals on the road (``record``, ``challenge``, ``login``, ``status``) and the
site's applications (``allocate``, ``retrieve``, ``pools``, ``report``). A principal is
``terminal:ID`` or ``user:NAME``; what it may call is decided here, what it may draw by policy.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from kms.errors import MalformedRequest, NotAuthorized
from kms.platform import KeyCloudPlatform
from kms.server import KeyManagementServer

TERMINAL_DEPOT_OPS = {"charge", "status"}
TERMINAL_ROAD_OPS = {"record", "challenge", "login", "status"}
USER_OPS = {"allocate", "retrieve", "pools", "report"}


def b64(data) -> str:
    return base64.b64encode(bytes(data)).decode()


def unb64(body: dict, name: str, max_len: int = 1 << 19) -> bytes:
    val = _field(body, name, str)
    try:
        raw = base64.b64decode(val, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest(f"field {name!r}: not base64") from None
    if len(raw) > max_len:
        raise MalformedRequest(f"field {name!r}: over {max_len} bytes")
    return raw


def _field(body: dict, name: str, kind, default: Any = ...):
    if name not in body:
        if default is ...:
            raise MalformedRequest(f"missing field {name!r}")
        return default
    val = body[name]
    if not isinstance(val, kind) or (isinstance(val, bool) and kind is not bool):
        raise MalformedRequest(f"field {name!r}: expected {kind.__name__}")
    return val


def _only(body: dict, allowed: set[str]) -> None:
    extra = set(body) - allowed
    if extra:
        raise MalformedRequest(f"unknown field {sorted(extra)[0]!r}; accepted: "
                               f"{', '.join(sorted(allowed)) or 'none'}")


class Api:
    def __init__(self, kms: KeyManagementServer, platform: KeyCloudPlatform,
                 user_keys: dict[str, str], charge_plan: dict[str, int]):
        self.kms, self.platform = kms, platform
        self.user_keys = dict(user_keys)          # z85 public key -> user name
        self.charge_plan = dict(charge_plan)

    # principals -------------------------------------------------------------------------
    def resolve_terminal(self, z85_key: str) -> str | None:
        tid = self.platform.terminal_for_key(z85_key)
        return None if tid is None else f"terminal:{tid}"

    def resolve_any(self, z85_key: str) -> str | None:
        user = self.user_keys.get(z85_key)
        return f"user:{user}" if user is not None else self.resolve_terminal(z85_key)

    # endpoints ----------------------------------------------------------------------------
    def depot(self, principal: str, op: str, body: dict) -> dict:
        kind, _, who = principal.partition(":")
        if kind != "terminal" or op not in TERMINAL_DEPOT_OPS:
            raise MalformedRequest(f"unknown operation {op[:32]!r} at the depot; accepted: "
                                   f"{', '.join(sorted(TERMINAL_DEPOT_OPS))}")
        return getattr(self, f"_t_{op}")(who, body)

    def road(self, principal: str, op: str, body: dict) -> dict:
        kind, _, who = principal.partition(":")
        ops = TERMINAL_ROAD_OPS if kind == "terminal" else USER_OPS
        if op == "charge" and kind == "terminal":
            raise NotAuthorized("charging is allowed only over the depot's local link")
        if op not in ops:
            raise MalformedRequest(f"unknown operation {op[:32]!r}; accepted: "
                                   f"{', '.join(sorted(ops))}")
        return getattr(self, f"_{'t' if kind == 'terminal' else 'u'}_{op}")(who, body)

    # terminal operations --------------------------------------------------------------------
    def _t_charge(self, tid: str, body: dict) -> dict:
        _only(body, {"charge_id", "plan"})
        plan = _field(body, "plan", dict, self.charge_plan)
        keys = self.platform.charge(tid, _field(body, "charge_id", str), plan)
        try:
            return {"keys": [{"key_ID": k.key_id, "service": k.service,
                              "algorithm": k.algorithm, "seq": k.seq, "key": b64(k.key)}
                             for k in keys]}
        finally:
            for k in keys:
                k.key[:] = bytes(len(k.key))

    def _t_status(self, tid: str, body: dict) -> dict:
        _only(body, set())
        return self.platform.terminal_status(tid)

    def _t_record(self, tid: str, body: dict) -> dict:
        _only(body, {"service", "key_ID", "ciphertext"})
        service = _field(body, "service", str)
        kid = _field(body, "key_ID", str)
        plain = self.platform.receive_record(tid, service, kid, unb64(body, "ciphertext"))
        # The platform's business side takes the plaintext from here; the terminal hears
        # only that the record was accepted.
        self.on_record(tid, service, plain)
        return {"accepted": True, "key_ID": kid}

    def on_record(self, terminal_id: str, service: str, plaintext: bytes) -> None:
        """Hook for the business application; the default keeps nothing."""

    def _t_challenge(self, tid: str, body: dict) -> dict:
        _only(body, set())
        return {"challenge": b64(self.platform.challenge(tid))}

    def _t_login(self, tid: str, body: dict) -> dict:
        _only(body, {"key_ID", "proof"})
        return self.platform.login(tid, _field(body, "key_ID", str), unb64(body, "proof", 64))

    # application operations -----------------------------------------------------------------
    def _u_allocate(self, user: str, body: dict) -> dict:
        _only(body, {"service", "algorithm", "record_bytes", "messages"})
        a = self.kms.allocate(user, _field(body, "service", str), _field(body, "algorithm", str),
                              record_bytes=_field(body, "record_bytes", int, 0),
                              messages=_field(body, "messages", int, 1))
        try:
            return {"key_ID": a.key_id, "key": b64(a.key), "algorithm": a.algorithm,
                    "origin": a.origin, "decision": a.decision.as_dict()}
        finally:
            a.wipe()

    def _u_retrieve(self, user: str, body: dict) -> dict:
        _only(body, {"service", "key_ID", "algorithm"})
        a = self.kms.retrieve(user, _field(body, "service", str), _field(body, "key_ID", str),
                              _field(body, "algorithm", str))
        try:
            return {"key_ID": a.key_id, "key": b64(a.key), "algorithm": a.algorithm,
                    "origin": a.origin}
        finally:
            a.wipe()

    def _u_pools(self, user: str, body: dict) -> dict:
        return {"pools": self.kms.status()}

    def _u_report(self, user: str, body: dict) -> dict:
        return {"report": self.kms.replacement_report()}

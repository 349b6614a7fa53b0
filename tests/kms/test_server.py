"""The key-management server: pools per service, level policy, rotation, legacy keys."""

from __future__ import annotations

import secrets
import uuid

import pytest

from daemon.keyservice.client import Key
from kms.config import DEFAULT_LEVELS, build_policy
from kms.crypto import AES_GCM, OTP, open_sealed, seal
from kms.errors import NoKeyAvailable, PolicyRefused, UnknownName
from kms.server import KeyManagementServer
from kms.store import Store
from tests.kms.conftest import USERS


def test_site_a_encrypts_and_site_b_decrypts_with_the_same_key(sites):
    a, b = sites
    a.refill(["waybills", "identity"])
    for service, algorithm, user in (("waybills", AES_GCM, "dora"), ("identity", OTP, "hana")):
        alloc = a.allocate(user, service, algorithm, record_bytes=100)
        assert alloc.decision.granted and alloc.origin == "quantum"
        record = secrets.token_bytes(100)
        sealed = seal(algorithm, alloc.key, record, alloc.key_id.encode())
        got = b.retrieve("sam", service, alloc.key_id, algorithm)
        assert bytes(got.key) == bytes(alloc.key)
        assert open_sealed(algorithm, got.key, sealed, alloc.key_id.encode()) == record
        alloc.wipe()
        assert not any(alloc.key)


def test_a_key_id_never_crosses_from_one_service_to_another(sites):
    a, b = sites
    a.refill(["cargo", "waybills"])
    alloc = a.allocate("dora", "cargo", AES_GCM)
    # the node itself refuses the waybills SAE; the server says "not in this pool"
    with pytest.raises(UnknownName, match="not in the 'waybills' pool"):
        b.retrieve("dora", "waybills", alloc.key_id, AES_GCM)
    # the cargo service at B still gets it: the refused request consumed nothing
    assert bytes(b.retrieve("dora", "cargo", alloc.key_id, AES_GCM).key) == bytes(alloc.key)
    # and once held at B, asking for it under another service is refused locally too
    with pytest.raises(UnknownName):
        b.retrieve("dora", "position", alloc.key_id, AES_GCM)
    ids = {s: {r[0] for r in a.store.query("SELECT key_id FROM pool_keys WHERE service=?",
                                            (s,))} for s in ("cargo", "waybills")}
    assert ids["cargo"] and ids["waybills"] and not ids["cargo"] & ids["waybills"]


def test_critical_level_refuses_aes_and_hands_each_pad_once(sites):
    a, _ = sites
    a.refill(["identity"])
    with pytest.raises(PolicyRefused, match="allows only otp"):
        a.allocate("hana", "identity", AES_GCM)
    k1 = a.allocate("hana", "identity", OTP, record_bytes=500)
    k2 = a.allocate("hana", "identity", OTP, record_bytes=500)
    assert k1.key_id != k2.key_id and bytes(k1.key) != bytes(k2.key)
    assert len(k1.key) == 8192 // 8
    with pytest.raises(PolicyRefused, match="covers at most 992 bytes"):
        a.allocate("hana", "identity", OTP, record_bytes=993)
    refused = [r for r in a.audit_log() if not r["granted"]]
    assert any("allows only otp" in r["reason"] for r in refused)


def test_roles_combine_and_strangers_are_refused(sites):
    a, _ = sites
    a.refill(["identity", "cargo"])
    with pytest.raises(PolicyRefused, match="no role that opens service 'identity'"):
        a.allocate("dora", "identity", OTP)
    with pytest.raises(PolicyRefused, match="no role that opens service 'cargo'"):
        a.allocate("hana", "cargo", AES_GCM)
    # dispatcher + hr: both services open to one user
    assert a.allocate("multi", "identity", OTP).decision.granted
    assert a.allocate("multi", "cargo", AES_GCM).decision.granted
    with pytest.raises(PolicyRefused, match="unknown user"):
        a.allocate("mallory", "cargo", AES_GCM)


def test_aes_key_rotates_on_schedule_and_on_message_budget(sites, clock, policy):
    a, _ = sites
    a.refill(["waybills"])
    level = policy.level_of("waybills")
    first = a.allocate("dora", "waybills", AES_GCM)
    again = a.allocate("dora", "waybills", AES_GCM)
    assert again.key_id == first.key_id and "reused" in again.decision.reason
    clock.advance(level.rotation_interval_s)
    rotated = a.allocate("dora", "waybills", AES_GCM)
    assert rotated.key_id != first.key_id and "rotated" in rotated.decision.reason
    # the old current key is erased, not kept
    assert not a.store.query("SELECT 1 FROM pool_keys WHERE key_id=?", (first.key_id,))
    big = a.allocate("dora", "waybills", AES_GCM, messages=level.max_messages_per_key)
    assert big.key_id != rotated.key_id


def test_expired_keys_are_erased_and_never_handed_out(sites, clock, policy):
    a, b = sites
    a.refill(["identity"])
    assert a.counts("identity")[0] == 4
    clock.advance(policy.level_of("identity").max_key_age_s + 1)
    with pytest.raises(NoKeyAvailable, match="no quantum key left"):
        a.allocate("hana", "identity", OTP)
    assert a.counts("identity")[0] == 0
    retired = a.store.query("SELECT reason FROM retired_keys WHERE service='identity'")
    assert len(retired) == 4 and all("expired" in r[0] for r in retired)
    # a retrieved AES key at B ages out the same way
    a.refill(["cargo"])
    alloc = a.allocate("dora", "cargo", AES_GCM)
    b.retrieve("dora", "cargo", alloc.key_id, AES_GCM)
    clock.advance(policy.level_of("cargo").max_key_age_s + 1)
    with pytest.raises(UnknownName, match="expired or retired"):
        b.retrieve("dora", "cargo", alloc.key_id, AES_GCM)


def _legacy(n):
    return [(str(uuid.uuid4()), secrets.token_bytes(32)) for _ in range(n)]


def test_legacy_keys_serve_where_policy_allows_and_are_replaced(sites):
    a, b = sites
    legacy = _legacy(6)
    assert a.import_legacy("cargo", legacy, "HSM export 2025-11 (AES-256)") == 6
    b.import_legacy("cargo", legacy, "HSM export 2025-11 (AES-256)")
    with pytest.raises(PolicyRefused, match="forbids classical"):
        a.import_legacy("identity", _legacy(1), "HSM")
    # no quantum key yet: AES draws fall back to classical, OTP does not
    alloc = a.allocate("dora", "cargo", AES_GCM)
    assert alloc.origin == "classical" and "classical key used" in alloc.decision.reason
    assert bytes(b.retrieve("dora", "cargo", alloc.key_id, AES_GCM).key) == bytes(alloc.key)
    report = {r["service"]: r for r in a.replacement_report()}
    assert report["cargo"]["classical_keys"] == 6 and report["cargo"]["quantum_keys"] == 0
    assert report["cargo"]["classical_share_of_pool"] == 1.0
    assert report["cargo"]["classical_share_of_draws_24h"] == 1.0
    assert report["cargo"]["current_key_origin"] == "classical"
    # quantum key arrives: each new quantum key retires one classical key
    a.refill(["cargo"])
    report = {r["service"]: r for r in a.replacement_report()}
    assert report["cargo"]["quantum_keys"] == 4
    assert report["cargo"]["classical_keys"] == 2 and report["cargo"]["classical_retired"] == 4
    assert report["cargo"]["classical_share_of_pool"] == round(2 / 6, 4)
    # the classical key that was current went first; the next draw is quantum
    assert report["cargo"]["current_key_origin"] is None
    assert a.allocate("dora", "cargo", AES_GCM).origin == "quantum"
    assert {r["service"]: r for r in a.replacement_report()}["cargo"][
        "classical_share_of_draws_24h"] == 0.5
    origins = {r[0] for r in a.store.query("SELECT origin_detail FROM pool_keys WHERE "
                                            "origin='classical'")}
    assert origins == {"HSM export 2025-11 (AES-256)"}


def test_unknown_service_and_malformed_key_id_give_clear_errors(sites):
    a, b = sites
    with pytest.raises(UnknownName, match="unknown service 'fuel'; known: cargo"):
        a.allocate("dora", "fuel", AES_GCM)
    with pytest.raises(Exception, match="is not a UUID"):
        b.retrieve("dora", "cargo", "not-a-uuid", AES_GCM)


class _ScarceNode:
    """A node source with only ``budget`` keys left; records which service asked first."""

    endpoint = "scarce"

    def __init__(self, budget):
        self.budget, self.asked = budget, []

    def draw(self, service, number, size_bits):
        self.asked.append(service)
        n = min(number, self.budget)
        self.budget -= n
        if n == 0:
            raise NoKeyAvailable("node pool exhausted")
        return [Key(uuid.uuid4(), bytearray(secrets.token_bytes(size_bits // 8)))
                for _ in range(n)]


def test_scarce_key_goes_to_the_most_sensitive_level_then_to_demand(clock, policy):
    node = _ScarceNode(budget=10)
    kms = KeyManagementServer(Store(), policy, node, clock=clock,
                              pool_targets={"identity": 6, "cargo": 6, "position": 6})
    # position had demand in the last hour, cargo none: same level, position first
    kms.store.conn.executemany("INSERT INTO draws VALUES (?,?,?,?)",
                               [(clock(), "dora", "position", "quantum")] * 2)
    added = kms.refill(["cargo", "position", "identity"])
    assert node.asked[:2] == ["identity", "position"]
    assert added == {"identity": 6, "position": 4, "cargo": 0}


def test_per_user_quota_of_a_level(nodes, clock):
    policy = build_policy(levels={"internal": {**DEFAULT_LEVELS["internal"],
                                               "max_keys_per_user_per_hour": 2,
                                               "rotation_interval_s": 1.0}}, users=USERS)
    src = nodes[0].source()
    kms = KeyManagementServer(Store(), policy, src, clock=clock, pool_targets={"cargo": 5})
    kms.refill(["cargo"])
    kms.allocate("dora", "cargo", AES_GCM)
    clock.advance(2)
    kms.allocate("dora", "cargo", AES_GCM)
    with pytest.raises(PolicyRefused, match="drew 2 keys at level 'internal' in the last hour"):
        kms.allocate("dora", "cargo", AES_GCM)
    assert kms.allocate("multi", "cargo", AES_GCM).decision.granted   # another user: unaffected
    clock.advance(3600)
    assert kms.allocate("dora", "cargo", AES_GCM).decision.granted    # the hour has passed
    src.close()

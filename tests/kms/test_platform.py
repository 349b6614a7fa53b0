"""The key cloud platform and the terminal SDK over real CurveZMQ links on loopback."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
import zmq

from kms.api import Api
from kms.crypto import login_proof
from kms.errors import (AlreadyUsed, MalformedRequest, NoKeyAvailable, NotAuthorized,
                        UnknownName)
from kms.platform import KeyCloudPlatform
from kms.rpc import PROTOCOL, RpcTimeout
from kms.site import Site
from kms.terminal import Terminal, TerminalVault

PLAN = {"position": 6, "identity": 2, "password-auth": 3}


@pytest.fixture
def site(sites):
    a, _ = sites
    a.pool_targets.update({"position": 40, "identity": 10, "password-auth": 20})
    a.refill(["position", "identity", "password-auth"])
    platform = KeyCloudPlatform(a)
    api = Api(a, platform, {}, PLAN)
    s = Site(a, platform, api, server_keys=zmq.curve_keypair(),
             api_endpoint="tcp://127.0.0.1:*", depot_endpoint="tcp://127.0.0.1:*", name="t")
    s.start(refill=False)
    yield s
    s.road.stop()
    s.depot.stop()


def make_terminal(site, tmp_path, tid, register=True, timeout_s=2.0):
    vault = TerminalVault(tmp_path / tid, tid)
    if register:
        site.platform.register(tid, f"truck {tid}", vault.public_key.decode())
    return Terminal(vault, site.public_key, depot=site.depot.endpoint, road=site.road.endpoint,
                    timeout_s=timeout_s, retries=1)


def test_charge_use_once_and_replay_refused(site, tmp_path):
    t = make_terminal(site, tmp_path, "T1")
    assert t.charge() == sum(PLAN.values())
    assert t.records_left() == PLAN
    # keys at rest are sealed under the device key: no charged key appears in the vault file
    mirror = site.kms.store.query("SELECT key FROM mirror WHERE terminal_id='T1'")
    raw = (tmp_path / "T1" / "vault.db").read_bytes()
    assert mirror and not any(bytes(k) in raw for (k,) in mirror)
    got = []
    site.api.on_record = lambda tid, svc, plain: got.append((tid, svc, plain))
    rec = t.seal("position", b'{"lat": 52.1, "lon": 4.3}')
    assert t.send(rec)["accepted"]
    t.send_record("identity", secrets.token_bytes(900))   # OTP at the critical level
    assert got[0] == ("T1", "position", b'{"lat": 52.1, "lon": 4.3}')
    assert len(got) == 2 and len(got[1][2]) == 900
    assert t.records_left() == {"position": 5, "identity": 1, "password-auth": 3}
    assert t.status()["keys_left"] == {"position": 5, "identity": 1, "password-auth": 3}
    # a replay of the same key ID with other bytes is refused and not delivered
    forged = rec.body() | {"ciphertext": base64.b64encode(secrets.token_bytes(60)).decode()}
    with pytest.raises(AlreadyUsed, match="already used .*replay refused"):
        t.road.call("record", forged)
    # the identical record again (a retry whose reply was lost) is acknowledged, not delivered
    assert t.send(rec)["accepted"] and len(got) == 2
    t.close()


def test_records_are_bound_to_terminal_service_and_key(site, tmp_path):
    t1, t2 = make_terminal(site, tmp_path, "T1"), make_terminal(site, tmp_path, "T2")
    t1.charge()
    t2.charge()
    rec = t1.seal("position", b"cargo sealed at 09:12")
    # T2 presents T1's key ID: not one of its keys
    with pytest.raises(UnknownName, match="not a 'position' key charged to terminal 'T2'"):
        t2.send(rec)
    # T1's key ID under another service: refused, and the key stays usable
    with pytest.raises(UnknownName, match="not a 'cargo' key"):
        t1.road.call("record", rec.body() | {"service": "cargo"})
    assert t1.send(rec)["accepted"]
    t1.close()
    t2.close()


def test_login_consumes_the_next_key_and_wrong_proofs_are_refused(site, tmp_path):
    t = make_terminal(site, tmp_path, "T1")
    t.charge()
    assert t.login()["vehicle"] == "truck T1"
    assert t.records_left()["password-auth"] == 2
    # a proof without a fresh challenge is refused
    k = t.vault.take("password-auth")
    with pytest.raises(NotAuthorized, match="no open login challenge"):
        t.road.call("login", {"key_ID": k.key_id, "proof": base64.b64encode(
            login_proof(k.key, b"\0" * 32, "T1")).decode()})
    # a proof over a stale challenge fails and closes the challenge; the key is kept
    t.road.call("challenge", {})
    with pytest.raises(NotAuthorized, match="login proof refused"):
        t.road.call("login", {"key_ID": k.key_id, "proof": base64.b64encode(
            login_proof(k.key, b"\0" * 32, "T1")).decode()})
    ch = base64.b64decode(t.road.call("challenge", {})["challenge"])
    ok = t.road.call("login", {"key_ID": k.key_id, "proof": base64.b64encode(
        login_proof(k.key, ch, "T1")).decode()})
    assert ok["terminal_id"] == "T1"
    # the same key again: used, refused
    ch = base64.b64decode(t.road.call("challenge", {})["challenge"])
    with pytest.raises(AlreadyUsed):
        t.road.call("login", {"key_ID": k.key_id, "proof": base64.b64encode(
            login_proof(k.key, ch, "T1")).decode()})
    t.close()


def test_revocation_stops_one_terminal_and_no_other(site, tmp_path):
    ts = {tid: make_terminal(site, tmp_path, tid) for tid in ("T1", "T2", "T3")}
    for t in ts.values():
        t.charge()
    sealed = ts["T2"].seal("position", b"last position before loss")
    erased = site.platform.revoke("T2", "terminal reported stolen")
    assert erased == sum(PLAN.values())
    assert not site.kms.store.query("SELECT 1 FROM mirror WHERE terminal_id='T2'")
    # T2's key IDs and logins are refused from that instant, with a clear reason
    with pytest.raises(NotAuthorized, match="terminal 'T2' is revoked"):
        ts["T2"].send(sealed)
    with pytest.raises(NotAuthorized, match="terminal 'T2' is revoked"):
        ts["T2"].login()
    with pytest.raises(NotAuthorized, match="revoked"):
        ts["T2"].charge()
    for tid in ("T1", "T3"):
        assert ts[tid].send_record("position", b"still rolling")["accepted"]
        assert ts[tid].login()["terminal_id"] == tid
    assert site.platform.terminal_status("T2")["revoked"]
    for t in ts.values():
        t.close()


def test_unknown_terminals_and_malformed_requests_get_clear_errors(site, tmp_path):
    stranger = make_terminal(site, tmp_path, "T9", register=False, timeout_s=0.5)
    with pytest.raises(RpcTimeout, match="no reply"):
        stranger.charge()
    stranger.close()
    with pytest.raises(UnknownName, match="unknown terminal 'T9'"):
        site.platform.challenge("T9")
    t = make_terminal(site, tmp_path, "T1")
    with pytest.raises(MalformedRequest, match="unknown operation 'launch'"):
        t.road.call("launch", {})
    with pytest.raises(NotAuthorized, match="only over the depot"):
        t.road.call("charge", {"charge_id": "x"})
    with pytest.raises(MalformedRequest, match="missing field 'charge_id'"):
        t.depot.call("charge", {})
    with pytest.raises(MalformedRequest, match="charge plan"):
        t.depot.call("charge", {"charge_id": "x", "plan": {"fuel": 3}})
    with pytest.raises(MalformedRequest, match="not a UUID"):
        t.road.call("record", {"service": "position", "key_ID": "42", "ciphertext": ""})
    with pytest.raises(MalformedRequest, match="not base64"):
        t.road.call("record", {"service": "position", "key_ID": "x", "ciphertext": "%%"})
    with pytest.raises(MalformedRequest, match="unknown field 'pin'"):
        t.road.call("challenge", {"pin": 1})
    # raw frames: wrong protocol, not JSON
    srv = site.road
    pk = t.vault.public_key.decode()
    bad = srv.answer(pk, [b"HTTP/1.1", b"record", b"r1", b"{}"])
    assert bytes(bad[3]) == b"400" and b"protocol" in bytes(bad[4])
    bad = srv.answer(pk, [PROTOCOL, b"record", b"r1", b"{not json"])
    assert bytes(bad[3]) == b"400" and json.loads(bytes(bad[4]))["message"].startswith("frame 3")
    with pytest.raises(NoKeyAvailable, match="no 'cargo' key left"):
        t.seal("cargo", b"x")
    t.close()


def test_a_retried_charge_returns_the_same_batch(site, tmp_path):
    t = make_terminal(site, tmp_path, "T1")
    assert t.charge(charge_id="depot-visit-1") == 11
    assert t.charge(charge_id="depot-visit-1") == 0      # same keys again: nothing new
    assert site.kms.store.query("SELECT COUNT(*) FROM mirror")[0][0] == 11
    assert t.charge({"position": 2}, charge_id="depot-visit-2") == 2
    t.close()


def test_terminal_cli_plays_a_vehicle(site, tmp_path, capsys):
    from kms.cli import main
    state = str(tmp_path / "cli-T5")
    common = ["--state", state, "--id", "T5"]
    assert main(["terminal", "pubkey", *common]) == 0
    pub = capsys.readouterr().out.strip()
    site.platform.register("T5", "truck 5", pub)
    link = [*common, f"--platform-key={site.public_key.decode()}", "--depot",
            site.depot.endpoint, "--road", site.road.endpoint, "--json"]
    assert main(["terminal", "charge", *link]) == 0
    assert json.loads(capsys.readouterr().out)["charged"] == sum(PLAN.values())
    assert main(["terminal", "send", *link, "--service", "position", "--text", "km 212"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] is True
    assert main(["terminal", "login", *link]) == 0
    assert json.loads(capsys.readouterr().out)["terminal_id"] == "T5"
    assert main(["terminal", "left", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"position": 5, "identity": 2,
                                                   "password-auth": 2}
    assert main(["terminal", "send", *link, "--service", "cargo", "--text", "x"]) == 2
    assert "no 'cargo' key left" in capsys.readouterr().err


def test_applications_allocate_over_the_wire_and_bad_fields_are_named(site):
    from kms.rpc import RpcClient
    pub, sec = zmq.curve_keypair()
    site.api.user_keys[pub.decode()] = "dora"
    c = RpcClient(site.road.endpoint, server_public_key=site.public_key, public_key=pub,
                  secret_key=sec, timeout_s=2.0, retries=1)
    got = c.call("allocate", {"service": "position", "algorithm": "aes-256-gcm",
                              "record_bytes": 100})
    assert len(base64.b64decode(got["key"])) == 32 and got["decision"]["granted"]
    assert got["origin"] == "quantum"
    with pytest.raises(MalformedRequest, match="field 'record_bytes': expected int"):
        c.call("allocate", {"service": "position", "algorithm": "aes-256-gcm",
                            "record_bytes": "lots"})
    with pytest.raises(MalformedRequest, match="unknown operation 'record'"):
        c.call("record", {})          # a user is not a terminal
    from kms.errors import PolicyRefused
    with pytest.raises(PolicyRefused, match="no role that opens service 'identity'"):
        c.call("allocate", {"service": "identity", "algorithm": "otp"})
    c.close()

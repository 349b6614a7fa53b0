"""``qkd-kms`` admin commands, --json output, config errors, and the demo end to end."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
import zmq

from kms.cli import main
from kms.config import load
from kms.errors import ConfigError


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(f"""
[site]
name = "depot-rotterdam"
state_dir = "{tmp_path / 'state'}"

[users.dora]
roles = ["dispatcher"]

[pools]
cargo = 10
""")
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_admin_commands_with_json(cfg, capsys, tmp_path):
    code, out, _ = run(capsys, "keygen", "--config", cfg, "--json")
    keys = json.loads(out)
    assert code == 0 and len(keys["server_public_key"]) == 40
    assert set(keys["node_allow_list"]) == {f"depot-rotterdam.{s}" for s in
                                            ("waybills", "identity", "cargo", "position",
                                             "password-auth", "certificates", "mobile-app")}
    code, out, _ = run(capsys, "levels", "--config", cfg, "--json")
    levels = {lv["name"]: lv for lv in json.loads(out)}
    assert levels["critical"]["algorithms"] == ["otp"] and not levels["critical"][
        "allow_classical"]
    pub = zmq.curve_keypair()[0].decode()
    assert run(capsys, "terminals", "register", "TRK-7", "--vehicle", "truck 7",
               f"--public-key={pub}", "--config", cfg)[0] == 0
    code, out, _ = run(capsys, "terminals", "list", "--config", cfg, "--json")
    assert json.loads(out) == [{"terminal_id": "TRK-7", "vehicle": "truck 7", "revoked": False,
                                "keys_used": 0, "keys_left": 0}]
    code, out, _ = run(capsys, "terminals", "revoke", "TRK-7", "--reason", "lost",
                       "--config", cfg, "--json")
    assert json.loads(out)["revoked"] is True
    code, out, _ = run(capsys, "terminals", "status", "TRK-7", "--config", cfg, "--json")
    st = json.loads(out)
    assert st["revoked"] and st["revoke_reason"] == "lost"
    legacy = tmp_path / "legacy.txt"
    legacy.write_text("# exported from the old HSM\n" + "".join(
        f"{uuid.uuid4()} {secrets.token_hex(32)}\n" for _ in range(3)))
    code, out, _ = run(capsys, "legacy-import", "--service", "cargo", "--origin", "old HSM",
                       str(legacy), "--config", cfg, "--json")
    assert code == 0 and json.loads(out)["imported"] == 3
    code, out, _ = run(capsys, "report", "--config", cfg, "--json")
    cargo = next(r for r in json.loads(out) if r["service"] == "cargo")
    assert cargo["classical_keys"] == 3 and cargo["classical_share_of_pool"] == 1.0
    code, out, _ = run(capsys, "audit", "--config", cfg, "--json")
    assert {r["action"] for r in json.loads(out)} >= {"register", "revoke", "import-legacy"}
    # the key bytes never appear in any output
    for line in legacy.read_text().splitlines()[1:]:
        assert line.split()[1] not in out


def test_errors_are_one_line_without_traceback(cfg, capsys, tmp_path):
    code, out, err = run(capsys, "terminals", "status", "NOPE", "--config", cfg)
    assert code == 2 and err.strip() == ("qkd-kms terminals: unknown terminal 'NOPE': not "
                                         "registered here")
    code, _, err = run(capsys, "legacy-import", "--service", "identity", "--origin", "x",
                       str(tmp_path / "missing.txt"), "--config", cfg)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.txt" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nname = "x"\n[services]\nfuel = "critical"\n')
    code, _, err = run(capsys, "levels", "--config", str(bad))
    assert code == 2 and "unknown service 'fuel'" in err and str(bad) in err
    bad.write_text('[site]\nname = "x"\n[levels.critical]\nalgorithms = ["rot13"]\n')
    with pytest.raises(ConfigError, match="accepted: a non-empty subset"):
        load(bad)
    bad.write_text('[site]\nname = "x"\n[node]\nendpoint = "tcp://h:1"\n'
                   'server_public_key = "short"\nsite_sae = "a"\npeer_sae = "b"\n')
    with pytest.raises(ConfigError, match=r"\[node\].server_public_key: not a CURVE"):
        load(bad)


def test_demo_runs_two_sites_three_vehicles_and_one_revocation(capsys):
    assert main(["demo", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by = lambda step: [e for e in events if e["step"] == step]   # noqa: E731
    assert by("retrieve")[0]["ok"] is True and by("isolation")[0]["refused"] is True
    assert len(by("charge")) == 3
    revoked = by("revoke")[0]["terminal"]
    records = by("record")
    # before the revocation every vehicle's record is accepted; after it only the others'
    cut = events.index(by("revoke")[0])
    before = [e for e in records if events.index(e) < cut]
    after = [e for e in records if events.index(e) > cut]
    assert all(e["accepted"] for e in before) and len(before) == 6
    assert all(e["accepted"] == (e["terminal"] != revoked) for e in after) and after
    logins = by("login")[3:]
    assert [e["ok"] for e in logins] == [e["terminal"] != revoked for e in logins]
    status = {e["terminal"]: e for e in by("status")}
    assert status[revoked]["revoked"] and status[revoked]["mirror"] == {}
    assert all(s["mirror"] for t, s in status.items() if t != revoked)
    assert by("done")[0]["records"] == sum(e["accepted"] for e in records)


def test_store_and_key_files_are_private(cfg, capsys, tmp_path):
    import stat
    from kms.terminal import TerminalVault
    run(capsys, "keygen", "--config", cfg)
    run(capsys, "pools", "--config", cfg)
    TerminalVault(tmp_path / "term", "T1").close()
    files = [p for p in list((tmp_path / "state").rglob("*")) + list(
        (tmp_path / "term").rglob("*")) if p.is_file()]
    assert {p.name for p in files} >= {"kms.db", "server.key", "cargo.key", "vault.db",
                                       "device.key", "curve.key"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p

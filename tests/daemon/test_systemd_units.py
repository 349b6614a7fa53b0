"""The unit, sysusers and tmpfiles snippets as systemd's own tools read them."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

SYSTEMD = pathlib.Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "qkd-node.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_notify_watchdog_and_hardening_settings():
    s = unit_settings()
    for key, value in {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
                       "User": "qkd-node", "StateDirectory": "qkd-node",
                       "RuntimeDirectory": "qkd-node", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "DevicePolicy": "closed", "CapabilityBoundingSet": "",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert value in s.get(key, []), key
    assert set(s["DeviceAllow"]) == {"char-ttyUSB rw", "char-ttyACM rw"}
    assert "@system-service" in s["SystemCallFilter"]
    assert s["ExecStart"] == ["qkd-node run --config /etc/qkd-node/node.toml"]
    assert s["WatchdogSec"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify also checks that ExecStart's program exists: point it at this checkout's script.
    script = pathlib.Path(sys.executable).parent / "qkd-node"
    text = UNIT.read_text().replace("ExecStart=qkd-node ", f"ExecStart={script} ")
    unit = tmp_path / "qkd-node.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None
                    or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/systemd-tmpfiles are not installed on this machine")
@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles must chown inside the scratch root, "
                                              "which needs root (it touches only tmp_path)")
def test_sysusers_and_tmpfiles_snippets_apply_to_an_empty_root(tmp_path):
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "shadow", "gshadow"):
        (tmp_path / "etc" / name).write_text("")
    (tmp_path / "etc" / "group").write_text("dialout:x:20:\n")
    conf = (SYSTEMD / "sysusers.d" / "qkd-node.conf").read_text()
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", "-"], input=conf,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "etc" / "passwd").read_text().startswith("qkd-node:")
    assert "dialout:x:20:qkd-node" in (tmp_path / "etc" / "group").read_text()
    conf = (SYSTEMD / "tmpfiles.d" / "qkd-node.conf").read_text()
    r = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", "-"], input=conf,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    state = tmp_path / "var" / "lib" / "qkd-node"
    assert state.is_dir() and oct(state.stat().st_mode & 0o777) == "0o700"

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


def test_the_node_process_speaks_the_units_notify_contract(tmp_path):
    """What systemd sees from ``Type=notify`` + ``WatchdogSec``, without systemd as PID 1: the
    node process (real runtime, the tests' fake ports and devices) is started with
    ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as the service manager sets them, on a datagram
    socket this test owns. READY comes first, then WATCHDOG pings at half the timeout, and
    SIGTERM (``systemctl stop``) ends with STOPPING and exit code 0."""
    import signal
    import socket
    import time

    from tests.daemon.configs import example_in
    config = example_in(tmp_path)
    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(20.0)
    env = {**os.environ, "NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.daemon.fake_node", "--fake-devices",
                             "--config", str(config)], cwd=SYSTEMD.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs = [sock.recv(4096).decode()]
        assert msgs[0].startswith("READY=1\nSTATUS=1 link(s), 0 keys stored"), msgs
        t0 = time.monotonic()
        while msgs.count("WATCHDOG=1\n") < 3:
            msgs.append(sock.recv(4096).decode())
        elapsed = time.monotonic() - t0
        # three pings at 0.2 s (half of 0.4 s): at least 0.4 s apart from first to third
        assert elapsed >= 0.35, elapsed
        proc.send_signal(signal.SIGTERM)
        while not msgs[-1].startswith("STOPPING=1"):
            msgs.append(sock.recv(4096).decode())
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert all(m.startswith(("READY=1", "STATUS=", "WATCHDOG=1", "STOPPING=1")) for m in msgs)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_security_rates_the_unit_well_exposed_below_2(tmp_path):
    """systemd's own exposure score (0 = fully locked down, 10 = none); what remains is what
    the node needs: the network, serial adapters, W^X memory for numba (docs/operations.md)."""
    import re
    script = pathlib.Path(sys.executable).parent / "qkd-node"
    unit = tmp_path / "qkd-node.service"
    unit.write_text(UNIT.read_text().replace("ExecStart=qkd-node ", f"ExecStart={script} "))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for qkd-node\.service: ([0-9.]+)", r.stdout)
    assert m is not None, r.stdout[-500:] + r.stderr
    assert float(m.group(1)) < 2.0

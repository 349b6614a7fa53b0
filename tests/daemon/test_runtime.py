"""The node process: admin socket, status command, logging, signals (in a subprocess)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon import cli
from daemon.runtime import admin, journal
from tests.daemon.configs import example_in

REPO = Path(__file__).resolve().parents[2]


# -- admin socket ----------------------------------------------------------------------------

def test_admin_socket_answers_status_and_refuses_bad_requests(tmp_path):
    path = tmp_path / "run" / "admin.sock"

    async def status(_req):
        return {"status": {"node": "n1", "nan_figure": float("nan")}}

    async def main():
        server = admin.AdminServer(path, 0o600, {"status": status})
        await server.start()
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            loop = asyncio.get_running_loop()
            ask = lambda req: loop.run_in_executor(None, admin.request, path, req)  # noqa: E731
            ok = await ask({"op": "status"})
            unknown = await ask({"op": "keys"})
            not_obj = await ask(["status"])
            second = admin.AdminServer(path, 0o600, {})
            with pytest.raises(admin.AdminSocketError, match="another node answers"):
                await second.start()
        finally:
            await server.close()
        return mode, ok, unknown, not_obj
    mode, ok, unknown, not_obj = asyncio.run(main())
    assert mode == 0o600
    assert ok == {"ok": True, "status": {"node": "n1", "nan_figure": None}}
    assert unknown["ok"] is False and "unknown op 'keys'" in unknown["error"] \
        and "status" in unknown["error"]
    assert not_obj["ok"] is False and "object" in not_obj["error"]
    assert not path.exists()


def test_a_stale_socket_file_is_replaced_and_group_mode_applied(tmp_path):
    import socket
    path = tmp_path / "admin.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()                     # a socket file nobody listens on (a node that died)

    async def main():
        server = admin.AdminServer(path, 0o660, {})
        await server.start()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        await server.close()
        return mode
    assert asyncio.run(main()) == 0o660


def test_status_without_a_node_is_one_line_exit_1(tmp_path, capsys):
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no node answers at" in err


# -- logging ---------------------------------------------------------------------------------

def test_log_lines_carry_journald_priorities_and_stay_one_line(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    log = journal.setup("info", out)
    log.warning("two\nlines")
    log.debug("hidden")
    logging.getLogger("qkd.link.x").error("bad")
    assert out.getvalue().splitlines() == ["<4>qkd.node: two | lines", "<3>qkd.link.x: bad"]
    monkeypatch.delenv("JOURNAL_STREAM")
    out = io.StringIO()
    journal.setup("debug", out).log(journal.NOTICE, "note")
    assert out.getvalue().rstrip().endswith("NOTICE  qkd.node: note")


def test_run_names_the_missing_components_instead_of_half_starting(tmp_path, capsys,
                                                                   monkeypatch):
    """A build without a real component (here: one that does not exist) says so, exit 1."""
    from daemon.runtime import wiring
    monkeypatch.setitem(wiring.REQUIRED, "daemon.no_such_component", "a missing component")
    assert cli.main(["run", "--config", str(example_in(tmp_path))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks" in err[0] and "daemon.no_such_component" in err[0]


# -- the node process ------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.update(int(x) for x in text)
    return kids


def _start_fake_node(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.daemon.fake_node", "--fake-devices",
                             *extra, "--config", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_socket(path: Path, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"node exited {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "node did not open its admin socket"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_node_serves_status_reloads_on_sighup_and_stops_cleanly(tmp_path, capsys, sig):
    config = example_in(tmp_path)
    sock = tmp_path / "admin.sock"
    proc = _start_fake_node(config)
    try:
        _wait_for_socket(sock, proc)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert cli.main(["status", "--json", "--config", str(config)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["node"] == "bob" and status["pid"] == proc.pid
        (link,) = status["links"]
        assert link["link"] == "alice-bob" and link["state"] == "waiting for peer"
        assert cli.main(["status", "--socket", str(sock)]) == 0
        table = capsys.readouterr().out
        assert "alice-bob" in table and "waiting for peer" in table and "LINK" in table
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        kids = _children(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "config reloaded: log level info" in err
    assert f"{signal.Signals(sig).name}: stopping" in err and "node bob stopped" in err
    assert "Traceback" not in err
    assert not sock.exists()
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists()

"""The two-process demo launcher, with FAKE nodes (the real ones need the peer channel, store
and block roles of other branches): real `sim serve`, real processes, real admin sockets, real
drivers and Bob's real acquisition; only channel, store and block roles are doubles."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon import launch
from daemon.runtime.admin import AdminSocketError, request
from tests.daemon.launch_with_fakes import fake_node_command

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, words", [
    (["--seconds", "0"], "seconds = 0 must be > 0"),
    (["--keys", "0"], "keys = 0 must be >= 1"),
    (["--pulses", "10"], "pulses = 10 is outside"),
])
def test_bad_flags_are_one_line_exit_2(capsys, argv, words):
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


@pytest.mark.slow
def test_two_runs_end_with_one_summary_each_and_identical_stores(tmp_path, capsys):
    rc = launch.main(["--keys", "6", "--seconds", "40", "--pulses", "2e7", "--json", "--state-dir",
                      str(tmp_path)], node_command=fake_node_command, keyservice=False)
    out, err = capsys.readouterr()
    honest, attack = (json.loads(line) for line in out.strip().splitlines())
    assert rc == 0, err
    assert honest["run"] == "honest" and honest["stopped_by"] == "keys"
    assert honest["stores_identical"] and honest["stored_keys"]["alice"] >= 6
    assert honest["keys"]["alice"] == honest["stored_keys"]["alice"]     # status after drain
    assert honest["stored_keys"]["alice"] == honest["stored_keys"]["bob"]
    assert attack["run"] == "intercept-resend" and attack["stopped_by"] == "aborts"
    assert attack["stored_keys"] == {"alice": 0, "bob": 0} and attack["blocks_aborted"] >= 3
    assert "qber" in attack["alarms"]["bob"]
    assert "same key IDs with the same bits: yes" in err      # progress went to stderr
    # the kept state: configs, keys (secret ones private), logs
    assert (tmp_path / "honest" / "bob.toml").exists()
    assert (tmp_path / "honest" / "bob.key_secret").stat().st_mode & 0o077 == 0


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(x) for x in (task / "children").read_text().split()]
                found.update(kids)
                todo.extend(kids)
        except FileNotFoundError:
            pass
    return found


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_demo_and_ends_every_child(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "tests.daemon.launch_with_fakes",
                             "--seconds", "120", "--pulses", "2e7", "--state-dir", str(tmp_path)],
                            cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sock = tmp_path / "honest" / "bob" / "admin.sock"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the nodes never answered"
            try:
                if request(sock, {"op": "status"}, 1.0)["status"]["links"][0]["blocks_ok"]:
                    break
            except (AdminSocketError, OSError):
                pass
            time.sleep(0.2)
        children = _descendants(proc.pid)
        assert len(children) >= 3           # sim serve and two nodes (and their helpers)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert f"stopped by {signal.Signals(sig).name}" in out
    assert "same key IDs with the same bits: yes" in out
    assert "== run 2" not in out            # the signal ends the whole demo
    assert all(_gone(pid) for pid in children)


def test_the_demo_configs_give_each_node_a_key_service_for_its_own_site(tmp_path):
    from daemon import config as cfg
    from daemon.curve_keys import load_public_key
    from daemon.peer.auth_keys import write_bootstrap
    services = launch.write_keyservice_files(tmp_path)
    keys = {n: launch.write_keypair(tmp_path, n) for n in ("alice", "bob")}
    auth = tmp_path / "alice-bob.auth"
    write_bootstrap(auth, 1 << 12)
    conf = {}
    for node, peer in (("alice", "bob"), ("bob", "alice")):
        text = launch.node_config(
            node=node, run_dir=tmp_path, endpoint="tcp://127.0.0.1:7301", peer=peer,
            devices=[{"device": "board", "driver": "qkd-board", "url": "socket://127.0.0.1:9"}],
            block_pulses=2e9, keys=keys, auth_file=auth,
            keyservice=launch.keyservice_table(services[node]))
        assert "client_secret" not in text and "dispatcher.key_secret" not in text
        (tmp_path / f"{node}.toml").write_text(text)
        conf[node] = cfg.load(tmp_path / f"{node}.toml").keyservice
    a, b = conf["alice"], conf["bob"]
    assert (a.kme_id, a.peer_kme_id, b.kme_id, b.peer_kme_id) == (
        "KME-alice", "KME-bob", "KME-bob", "KME-alice")
    assert a.clients == {load_public_key(tmp_path / "clients" / "dispatcher.key"): "dispatcher"}
    assert b.clients == {load_public_key(tmp_path / "clients" / "recipient.key"): "recipient"}
    assert a.remote_saes == {"recipient"} and b.remote_saes == {"dispatcher"}
    assert a.link_id == b.link_id == "alice-bob" and a.endpoint != b.endpoint


def test_the_freight_verdict_needs_both_decryptions_and_a_refused_second_fetch():
    good = {"done": True, "record_bytes": 247, "second_fetch": "refused (400: not found)",
            "otp": {"key_IDs": ["0" * 36] * 8, "pad_bits": 2048, "decrypted_equal": True},
            "aes_256_gcm": {"key_ID": "1" * 36, "decrypted_equal": True}}
    assert launch._freight_ok(good) and launch._freight_ok(None)
    assert not launch._freight_ok({**good, "second_fetch": "DELIVERED AGAIN"})
    assert not launch._freight_ok({**good, "otp": {**good["otp"], "decrypted_equal": False}})
    assert not launch._freight_ok({"done": False, "why": "no keys stored at both ends"})
    text = launch._freight_lines(good)
    assert "one-time pad: 8 keys" in text and "DIFFERS" not in text

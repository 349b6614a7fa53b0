"""``qkdctl`` against two running key-service runners (in a background event loop) and an admin
socket wired the way the node wires it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from pathlib import Path

import pytest

from daemon import qkdctl
from daemon.runtime.admin import AdminServer
from tests.daemon.keyservice.test_runner import KEY_BITS, Pair, _write_cert, make_stores


class Nodes:
    def __init__(self, tmp_path):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        a_store, b_store = make_stores(tmp_path)
        self.stores = (a_store, b_store)
        self.pair = Pair(a_store, b_store)
        self.admin_path = tmp_path / "admin.sock"
        self.run(self.pair.start())
        runner_b = self.pair.runners["B"]

        async def view(_req):
            return {"keyservice": runner_b.status()}

        self.admin = AdminServer(self.admin_path, 0o600, {"keyservice": view})
        self.run(self.admin.start())
        self.files = {}
        for name in "AB":
            path = tmp_path / f"node{name}.key"
            _write_cert(path, self.pair.server_keys[name][0])
            self.files[name] = str(path)
        for sae in ("X", "Y"):
            path = tmp_path / f"{sae}.key_secret"
            _write_cert(path, *self.pair.client_keys[sae])
            self.files[sae] = str(path)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)

    def conn(self, node: str, sae: str) -> list[str]:
        return ["--endpoint", self.pair.runners[node].endpoint, "--server-key", self.files[node],
                "--client-key", self.files[sae], "--timeout-s", "2", "--retries", "1"]

    def close(self):
        self.run(self.admin.close())
        self.run(self.pair.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for s in self.stores:
            s.close()


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    yield n
    n.close()


def test_enc_keys_writes_keys_only_when_asked_and_dec_keys_gets_the_same(nodes, tmp_path,
                                                                          capsys):
    assert qkdctl.main(["enc-keys", *nodes.conn("A", "X"), "--slave", "Y", "--number", "2",
                        "--json"]) == 0
    quiet = json.loads(capsys.readouterr().out)
    assert len(quiet["keys"]) == 2 and all("key" not in k for k in quiet["keys"])
    out = tmp_path / "keys.json"
    assert qkdctl.main(["enc-keys", *nodes.conn("A", "X"), "--slave", "Y", "--number", "2",
                        "--out", str(out)]) == 0
    table = capsys.readouterr().out
    written = json.loads(out.read_text())["keys"]
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    for k in written:
        assert k["key_ID"] in table and k["key"] not in table
    assert qkdctl.main(["dec-keys", *nodes.conn("B", "Y"), "--master", "X", "--json",
                        "--show-keys", *sum((["--key-id", k["key_ID"]] for k in written), [])
                        ]) == 0
    fetched = json.loads(capsys.readouterr().out)["keys"]
    assert [(k["key_ID"], k["key"]) for k in fetched] == \
        [(k["key_ID"], k["key"]) for k in written]
    assert all(len(base64.b64decode(k["key"])) == KEY_BITS // 8 for k in fetched)
    # the same IDs again: consumed; the service's 400 is exit 1, one line on stderr
    assert qkdctl.main(["dec-keys", *nodes.conn("B", "Y"), "--master", "X",
                        "--key-id", written[0]["key_ID"]]) == 1
    err = capsys.readouterr().err
    assert "400" in err and "not found" in err and len(err.strip().splitlines()) == 1
    # --out never overwrites
    assert qkdctl.main(["enc-keys", *nodes.conn("A", "X"), "--slave", "Y",
                        "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_status_and_the_admin_views(nodes, capsys):
    assert qkdctl.main(["status", *nodes.conn("A", "X"), "--slave", "Y", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["source_KME_ID"] == "KME-A" and status["stored_key_count"] == 32
    assert qkdctl.main(["enc-keys", *nodes.conn("A", "X"), "--slave", "Y", "--number", "3"]) == 0
    capsys.readouterr()
    assert qkdctl.main(["reservations", "--admin-socket", str(nodes.admin_path), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["reservations"] == [{"master_SAE_ID": "X", "slave_SAE_ID": "Y", "keys": 3}]
    assert qkdctl.main(["clients", "--admin-socket", str(nodes.admin_path)]) == 0
    table = capsys.readouterr().out
    assert "sae_id" in table and "Y2" in table
    assert qkdctl.main(["clients", "--admin-socket", str(nodes.admin_path) + ".none"]) == 3


def test_an_etsi004_stream_from_the_command_line(nodes, capsys):
    assert qkdctl.main(["open-connect", *nodes.conn("A", "X"), "--source", "X",
                        "--destination", "Y", "--chunk-bytes", str(KEY_BITS // 8),
                        "--json"]) == 0
    ksid = json.loads(capsys.readouterr().out)["key_stream_id"]
    assert qkdctl.main(["open-connect", *nodes.conn("B", "Y"), "--source", "X",
                        "--destination", "Y", "--chunk-bytes", str(KEY_BITS // 8),
                        "--key-stream-id", ksid]) == 0
    capsys.readouterr()
    got = []
    for node, sae in (("A", "X"), ("B", "Y")):
        assert qkdctl.main(["get-key", *nodes.conn(node, sae), "--key-stream-id", ksid,
                            "--index", "4", "--json", "--show-keys"]) == 0
        got.append(json.loads(capsys.readouterr().out)["keys"][0])
    assert got[0] == got[1]
    assert qkdctl.main(["open-connect", *nodes.conn("A", "X"), "--source", "X",
                        "--destination", "Y", "--chunk-bytes", "3"]) == 1   # QoS not met
    assert "7" in capsys.readouterr().out
    for node, sae in (("A", "X"), ("B", "Y")):
        assert qkdctl.main(["close", *nodes.conn(node, sae), "--key-stream-id", ksid]) == 0


def test_usage_errors_are_one_line_and_exit_2(nodes, tmp_path, capsys):
    assert qkdctl.main(["enc-keys", "--slave", "Y", "--endpoint", "tcp://127.0.0.1:9"]) == 2
    assert "--server-key" in capsys.readouterr().err
    loose = tmp_path / "loose.key_secret"
    _write_cert(loose, *nodes.pair.client_keys["X"])
    loose.chmod(0o644)
    assert qkdctl.main(["enc-keys", "--slave", "Y", "--endpoint", "tcp://127.0.0.1:9",
                        "--server-key", nodes.files["A"], "--client-key", str(loose)]) == 2
    assert "accessible to other users" in capsys.readouterr().err
    assert qkdctl.main(["status"]) == 2
    with pytest.raises(SystemExit) as exc:
        qkdctl.main(["dec-keys", *nodes.conn("B", "Y"), "--master", "X", "--key-id", "nope"])
    assert exc.value.code == 2


def test_a_wrong_server_key_is_no_answer_exit_3(nodes, capsys):
    args = nodes.conn("A", "X")
    args[args.index("--server-key") + 1] = nodes.files["B"]
    args[args.index("--timeout-s") + 1] = "0.3"
    assert qkdctl.main(["enc-keys", *args, "--slave", "Y"]) == 3
    assert "no reply" in capsys.readouterr().err


def test_the_freight_records_example_against_two_runners(nodes):
    import importlib.util

    from daemon.keyservice.client import KeyClient

    spec = importlib.util.spec_from_file_location(
        "freight_records", Path(__file__).resolve().parents[3] / "examples" / "freight_records.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    keys = nodes.pair.client_keys
    with KeyClient(nodes.pair.runners["A"].endpoint,
                   server_public_key=nodes.pair.server_keys["A"][0], public_key=keys["X"][0],
                   secret_key=keys["X"][1]) as a, \
            KeyClient(nodes.pair.runners["B"].endpoint,
                      server_public_key=nodes.pair.server_keys["B"][0],
                      public_key=keys["Y"][0], secret_key=keys["Y"][1]) as b:
        out = example.send_and_receive(a, b, sender="X", recipient="Y")
    assert out["otp"]["decrypted_equal"] and out["aes_256_gcm"]["decrypted_equal"]
    assert out["otp"]["pad_bits"] >= 8 * out["record_bytes"]
    assert len(out["otp"]["key_IDs"]) == -(-out["record_bytes"] * 8 // KEY_BITS)

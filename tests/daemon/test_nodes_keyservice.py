"""The key service inside the node: two ``qkd-node run`` processes, each serving its site's SAE
(the dispatcher at Alice's node A, the recipient at Bob's node B), their RESERVE/VOID messages
on the link's real CurveZMQ/Wegman-Carter channel and the keys from the real SQLite stores.

- with simulated hardware (``sim serve``, real distillation): enc_keys at A for the slave SAE
  at B, dec_keys at B returns the same bytes under the same IDs; the same ID a second time is
  refused; a client key not on the allow-list gets no answer (its CURVE handshake is refused)
  and is counted; after it is added to the config, SIGHUP lets it in without a restart;
- with fast nodes (real channel and store, fake block roles and boards): a key service whose
  port is taken stops the node with one line and exit code 1.
"""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from daemon import launch
from daemon.keyservice.client import KeyServiceError, KeyServiceTimeout
from daemon.runtime.admin import request
from tests.daemon.nodes import NODES, NodePair

DISPATCHER, RECIPIENT = launch.SITES["alice"][0], launch.SITES["bob"][0]


def _allow(pair: NodePair, node: str, sae: str, public_key_file) -> None:
    """Add a client to the node's config (what an operator would do before SIGHUP)."""
    with open(pair.configs[node], "a") as f:
        f.write(f'\n[[keyservice.clients]]\nsae_id = "{sae}"\n'
                f'public_key_file = "{public_key_file}"\n')


@pytest.mark.slow
def test_keys_drawn_at_a_are_fetched_once_at_b_and_unknown_clients_are_refused(tmp_path):
    with NodePair(tmp_path, keyservice=True, sim_args=("--distance-km", "10")) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_ok"] >= 1 for n in NODES), 300,
                  "a block stored at both ends")
        with pair.client("alice") as a, pair.client("bob") as b:
            status = a.status(RECIPIENT)
            sent = a.enc_keys(RECIPIENT, number=4)
            got = b.dec_keys(DISPATCHER, [k.key_id for k in sent])
            with pytest.raises(KeyServiceError) as again:
                b.dec_keys(DISPATCHER, [sent[0].key_id])
            same = [(x.key_id, bytes(x.key)) == (y.key_id, bytes(y.key))
                    for x, y in zip(sent, got)]
            sizes = {len(k.key) for k in (*sent, *got)}
            distinct = len({bytes(k.key) for k in sent})
            shown = [bytes(k.key).hex() for k in sent]
            for k in (*sent, *got):
                k.wipe()
        alarms = {n: pair.status(n)["alarms"] for n in NODES}

        stranger_public, stranger_secret = launch.write_keypair(tmp_path / "clients", "stranger")
        with pair.client("alice", stranger_secret, timeout_s=1.0, retries=1) as s:
            with pytest.raises(KeyServiceTimeout):
                s.status(RECIPIENT)
        refused = pair.node_status("alice")["keyservice"]
        view = request(pair.sockets["alice"], {"op": "keyservice"})["keyservice"]

        # the operator adds the stranger as a second SAE at A and sends SIGHUP: no restart
        _allow(pair, "alice", "dispatcher-2", stranger_public)
        pid = pair.pid("alice")
        pair.procs["alice"].send_signal(signal.SIGHUP)
        pair.wait(lambda: len(request(pair.sockets["alice"], {"op": "keyservice"})
                              ["keyservice"]["clients"]) == 2, 20, "the allow-list reloaded")
        with pair.client("alice", stranger_secret) as s2:
            after_reload = s2.status(RECIPIENT)
        assert pair.pid("alice") == pid and pair.alive("alice")
        logs = {n: pair.logs[n].read_text() for n in NODES}

    assert alarms == {n: {} for n in NODES}      # a healthy link: no alarm, control's included
    assert status["key_size"] == 256 and status["stored_key_count"] > 0
    assert status["source_KME_ID"] == "KME-alice" and status["target_KME_ID"] == "KME-bob"
    assert same == [True] * 4 and sizes == {32} and distinct == 4
    assert again.value.status == 400 and "not found" in again.value.message
    # the unknown key never reached the service; the node counts it and says so in status
    assert refused["state"] == "serving" and refused["rejected_client_keys"] >= 1
    assert refused["keys_delivered"] == 4 and refused["clients"] == 1
    assert [c["sae_id"] for c in view["clients"]] == [DISPATCHER]
    assert after_reload["master_SAE_ID"] == "dispatcher-2"
    for n in NODES:                    # no key reaches a log
        assert not any(h in logs[n] for h in shown)


def _taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_key_service_that_cannot_bind_stops_the_node_with_one_line(tmp_path):
    with NodePair(tmp_path, fast=True, keyservice=True) as pair, _taken_port() as busy:
        port = busy.getsockname()[1]
        config = pair.configs["alice"]
        endpoint = pair.services["alice"]["endpoint"]
        config.write_text(config.read_text().replace(endpoint, f"tcp://127.0.0.1:{port}"))
        proc = subprocess.run([*pair.command, "--config", str(config)], capture_output=True,
                              text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if " ERROR " in ln]
    assert proc.returncode == 1
    assert len(errors) == 1 and f"key service on tcp://127.0.0.1:{port}" in errors[0]
    assert "cannot bind" in errors[0] and "Traceback" not in proc.stderr


def test_fast_nodes_serve_keys_both_ways_and_a_broken_reload_keeps_the_allow_list(tmp_path):
    from daemon.runtime.status import render
    with NodePair(tmp_path, fast=True, keyservice=True) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["keys_stored"] >= 80 for n in NODES), 60,
                  "keys stored at both ends")
        outcome = {}
        with pair.client("alice") as a, pair.client("bob") as b:
            # each node issues the keys its store marks as its own; both directions work
            for name, (master, slave, m_sae, s_sae) in {"a->b": (a, b, DISPATCHER, RECIPIENT),
                                                        "b->a": (b, a, RECIPIENT, DISPATCHER)
                                                        }.items():
                sent = master.enc_keys(s_sae, number=3)
                got = slave.dec_keys(m_sae, [k.key_id for k in sent])
                outcome[name] = [(x.key_id, bytes(x.key)) == (y.key_id, bytes(y.key))
                                 for x, y in zip(sent, got)]
                for k in (*sent, *got):
                    k.wipe()
        before = request(pair.sockets["alice"], {"op": "keyservice"})["keyservice"]["clients"]
        _allow(pair, "alice", "bad", "clients/no-such.key")
        broken = request(pair.sockets["alice"], {"op": "keyservice_reload"})
        after = request(pair.sockets["alice"], {"op": "keyservice"})["keyservice"]["clients"]
        shown = render(pair.node_status("alice"))
        code = pair.kill("alice", signal.SIGTERM)
        log = pair.logs["alice"].read_text()
    assert outcome == {"a->b": [True] * 3, "b->a": [True] * 3}
    assert not broken["ok"] and "keyservice.clients[1].public_key_file" in broken["error"]
    assert after == before and len(after) == 1
    assert "key service tcp://127.0.0.1:" in shown and "6 keys delivered" in shown
    assert code == 0 and "closing failed" not in log and "Traceback" not in log

"""``qkd-kms demo --nodes``: the two KMS sites against two real ``qkd-node run`` processes.

The nodes run on simulated hardware (``sim serve``, real distillation into real SQLite stores)
with their key services configured as ``qkd-node demo-nodes`` configures them
(``launch.add_kms_clients``: one SAE per business service and site). The demo runs as the
launcher runs it, a child process, and must show its whole outcome: the waybill decrypted at
site B and refused under another service, every record of the vehicles still in service
decrypted, the revoked vehicle's records and login refused — and no key in what it prints.
Also: the nodes file's errors, and the launcher's list of services kept equal to the KMS's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from daemon import launch
from daemon.runtime.admin import request
from kms.demo import outcome_ok, pool_targets
from kms.demo_nodes import load_nodes
from kms.errors import ConfigError
from kms.policy import SERVICES
from tests.daemon.nodes import NODES, NodePair

# Anything that could be a key of 256 bits or more in text: 64+ hex digits, 43+ base64 or 40
# Z85 characters in one run. Key IDs are UUIDs (hex in groups of at most 12), far shorter.
KEYLIKE = re.compile(r"[0-9a-fA-F]{64,}|[A-Za-z0-9+/]{43,}={0,2}")


def test_the_launcher_lists_the_kms_services():
    assert launch.KMS_SERVICES == SERVICES


def test_the_pools_cover_the_charges():
    targets = pool_targets(3)
    assert set(targets) == set(SERVICES)
    assert targets["identity"] == 3 * 2 + 2 and targets["waybills"] == 3 * 4 + 2 + 1


def test_a_nodes_file_missing_a_service_key_is_one_line(tmp_path):
    services = launch.write_keyservice_files(tmp_path)
    path = launch.add_kms_clients(tmp_path, services)
    a, b = load_nodes(path, SERVICES)
    assert (a.site_sae, a.peer_sae, b.site_sae, b.peer_sae) == ("kms-a", "kms-b", "kms-b",
                                                                "kms-a")
    assert set(a.credentials) == set(SERVICES) and a.endpoint == services["alice"]["endpoint"]
    assert "kms-b.cargo" in services["alice"]["remote_saes"]
    assert ("kms-a.cargo" in {sae for sae, _ in services["alice"]["clients"]})
    text = path.read_text().replace('"cargo" = ', '"cargo-x" = ')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"\[site_a\]\.clients: no key file for service "
                                          r"'cargo'"):
        load_nodes(bad, SERVICES)
    bad.write_text("[site_a]\n")
    with pytest.raises(ConfigError, match=r"missing table \[site_b\]"):
        load_nodes(bad, SERVICES)


def test_outcome_check_fails_when_the_revoked_vehicle_gets_through():
    events = [{"step": "retrieve", "ok": True}, {"step": "isolation", "refused": True},
              {"step": "charge", "terminal": "T1"}, {"step": "charge", "terminal": "T2"},
              {"step": "login", "terminal": "T1", "ok": True},
              {"step": "login", "terminal": "T2", "ok": True},
              {"step": "revoke", "terminal": "T2"},
              {"step": "record", "terminal": "T1", "accepted": True},
              {"step": "record", "terminal": "T2", "accepted": False},
              {"step": "login", "terminal": "T1", "ok": True},
              {"step": "login", "terminal": "T2", "ok": False},
              {"step": "done", "records": 1}]
    assert outcome_ok(events, "T2")
    events[8]["accepted"] = True
    events[-1]["records"] = 2
    assert not outcome_ok(events, "T2")


def _keyservice(pair: NodePair, node: str) -> dict:
    """The node's admin view of its key service (``qkdctl clients`` reads the same)."""
    return request(pair.sockets[node], {"op": "keyservice"}, timeout_s=10.0)["keyservice"]


@pytest.mark.slow
def test_kms_demo_against_two_real_nodes(tmp_path):
    # The demo draws its pools from Alice's node, which may issue half of the stored keys;
    # see launch.KMS_STORED_KEYS for the count.
    with NodePair(tmp_path, keyservice=True, kms=True,
                  sim_args=("--distance-km", "10")) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["keys_stored"] >= launch.KMS_STORED_KEYS
                              for n in NODES), 400, "enough keys stored at both ends")
        pair.drain()        # no new blocks: the stores change only by what the demo takes
        before = {n: _keyservice(pair, n)["counters"] for n in NODES}
        run = subprocess.run([sys.executable, "-m", "kms.cli", "demo", "--json", "--nodes",
                              str(pair.kms_nodes)], capture_output=True, text=True,
                             timeout=launch.KMS_DEMO_TIMEOUT_S)
        served = {n: _keyservice(pair, n) for n in NODES}
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [json.loads(line) for line in run.stdout.splitlines()]
    by = lambda step: [e for e in events if e["step"] == step]   # noqa: E731
    assert by("nodes")[0]["real"] is True
    assert by("nodes")[0]["a"] == pair.services["alice"]["endpoint"]
    assert by("retrieve")[0]["ok"] is True and by("isolation")[0]["refused"] is True
    revoked = by("revoke")[0]["terminal"]
    cut = events.index(by("revoke")[0])
    after = [e for e in by("record") if events.index(e) > cut]
    assert [e["accepted"] for e in after if e["terminal"] == revoked] == \
        [False] * sum(e["terminal"] == revoked for e in after) and after
    assert all(e["accepted"] for e in by("record") if e["terminal"] != revoked)
    last_logins = by("login")[len(by("charge")):]
    assert {e["terminal"]: e["ok"] for e in last_logins}[revoked] is False
    assert by("done")[0]["records"] == sum(e["accepted"] for e in by("record")) > 0
    assert not KEYLIKE.search(run.stdout + run.stderr)
    # The keys came from the nodes: Alice's issued at least the site A pools; Bob's handed
    # out exactly one, the waybill key (the same ID under 'cargo' was refused by the node).
    issued = served["alice"]["counters"]["issued"] - before["alice"]["issued"]
    assert issued >= sum(pool_targets(3).values())
    assert served["bob"]["counters"]["fetched"] - before["bob"]["fetched"] == 1
    assert {f"kms-a.{s}" for s in SERVICES} <= {c["sae_id"] for c in served["alice"]["clients"]}
    assert {f"kms-b.{s}" for s in SERVICES} <= {c["sae_id"] for c in served["bob"]["clients"]}


def test_node_configs_with_the_kms_saes_load_and_allow_them(tmp_path):
    from daemon import config as cfg
    from daemon.curve_keys import load_public_key
    from daemon.peer.auth_keys import write_bootstrap
    services = launch.write_keyservice_files(tmp_path)
    launch.add_kms_clients(tmp_path, services)
    keys = {n: launch.write_keypair(tmp_path, n) for n in NODES}
    auth = tmp_path / "alice-bob.auth"
    write_bootstrap(auth, 1 << 12)
    conf = {}
    for node, peer in (("alice", "bob"), ("bob", "alice")):
        text = launch.node_config(
            node=node, run_dir=tmp_path, endpoint="tcp://127.0.0.1:7301", peer=peer,
            devices=[{"device": "board", "driver": "qkd-board", "url": "socket://127.0.0.1:9"}],
            block_pulses=2e9, keys=keys, auth_file=auth,
            keyservice=launch.keyservice_table(services[node]))
        # a node config names the KMS SAEs' public keys only
        assert not [ln for ln in text.splitlines() if "kms-saes" in ln and "key_secret" in ln]
        (tmp_path / f"{node}.toml").write_text(text)
        conf[node] = cfg.load(tmp_path / f"{node}.toml").keyservice
    a, b = conf["alice"], conf["bob"]
    saes = tmp_path / "kms-saes"
    assert a.clients[load_public_key(saes / "kms-a.identity.key")] == "kms-a.identity"
    assert set(a.clients.values()) == {"dispatcher", *(f"kms-a.{s}" for s in SERVICES)}
    assert set(b.clients.values()) == {"recipient", *(f"kms-b.{s}" for s in SERVICES)}
    assert a.remote_saes == {"recipient", *(f"kms-b.{s}" for s in SERVICES)}
    assert b.remote_saes == {"dispatcher", *(f"kms-a.{s}" for s in SERVICES)}


def test_the_honest_verdict_needs_the_kms_demo_unless_the_run_was_too_short():
    freight = {"done": True, "second_fetch": "refused (400: not found)",
               "otp": {"decrypted_equal": True}, "aes_256_gcm": {"decrypted_equal": True}}
    run = launch.RunResult("honest", stores={"stores_compared": True, "stores_identical": True,
                                             "stored_keys": {"alice": 2000, "bob": 2000}},
                           freight=freight)
    verdicts = {}
    for name, kms in (("none", None), ("done", {"done": True, "lines": []}),
                      ("failed", {"done": False, "why": "qkd-kms demo exited with 1: x"}),
                      ("skipped", {"done": False, "skipped": True, "why": "skipped"})):
        run.kms = kms
        verdicts[name] = launch._passed(run)
    assert verdicts == {"none": True, "done": True, "failed": False, "skipped": True}
    assert "exited with 1" in launch._kms_lines({"done": False, "why": "exited with 1",
                                                 "lines": ["[nodes] x"]})

"""End to end, two real node processes on loopback: the real CurveZMQ + Wegman-Carter channel,
the real SQLite stores and two-step commit, FAKE block roles and devices (``fast_node``: blocks
of four round trips in milliseconds, so faults and kills meet blocks in every state).

What each test shows: messages damaged by an attacker inside CurveZMQ are rejected and their
block aborted at both ends; garbage does not stop a node; a peer restart, a network cut and a
broken connection heal by themselves with nothing half-stored; after every kill -9 of either
node, at random instants, the restarted pair agrees: same key IDs with the same bits, nothing
left in doubt, ``PRAGMA integrity_check`` ok; kill -9s between a block's commit and its
authentication refill, once a small bootstrap is used up, leave both pools equal and the link
authenticating; a bad config is one line and exit code 2; a peer
configured otherwise gets no block and an alarm, and both nodes keep serving.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from daemon.peer.auth_keys import MIN_BOOTSTRAP_BYTES
from tests.daemon.fakes import PING
from tests.daemon.nodes import NODES, NodePair


def counts(pair: NodePair) -> dict:
    return {n: pair.status(n) for n in NODES}


def assert_agree(pair: NodePair) -> dict:
    """Drained: both ends hold the same committed keys and nothing in doubt."""
    pair.drain()
    d = pair.digests()
    assert d["alice"]["n_keys"] > 0
    for k in ("n_keys", "n_bits", "ids_sha256", "bits_hmac_sha256"):
        assert d["alice"][k] == d["bob"][k], (k, d)
    pair.hold(False)
    return d


def auth_pools(directory) -> dict[str, tuple[int, bytes, int]]:
    """Each stopped node's authentication pool: (refills taken, material, send numbers
    reserved)."""
    pools = {}
    for node in NODES:
        (material,) = (directory / node).rglob("material.bin")
        state = json.loads((material.parent / "state.json").read_text())
        pools[node] = (state["next_refill"], material.read_bytes(), state["send_reserved"])
    return pools


def blocks_ok(pair: NodePair, node: str = "bob") -> int:
    return pair.status(node)["blocks_ok"]


@pytest.mark.parametrize("fault,reason", [
    ("tamper", "bad_tag"), ("replay", "replay"), ("reorder", "replay"),
    ("foreign", "bad_tag")])
def test_a_damaged_peer_message_is_rejected_and_its_block_aborted_at_both_ends(tmp_path, fault,
                                                                               reason):
    with NodePair(tmp_path, fast=True, relay=True) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 5, 60, "blocks flowing")
        before = counts(pair)
        pair.relay.inject("to_alice", fault, msg_type=PING)
        pair.wait(lambda: pair.status("alice")["rejected_messages"] > before["alice"][
            "rejected_messages"], 30, f"Alice rejecting the {fault}ed message")
        pair.wait(lambda: pair.status("bob")["abort_reasons"].get("peer: rejected_message", 0)
                  > before["bob"]["abort_reasons"].get("peer: rejected_message", 0), 30,
                  "Bob aborting the block")
        after = counts(pair)
        (done,) = pair.relay.done["to_alice"]
        assert done[0] == fault and done[2] == PING
        assert after["alice"]["abort_reasons"]["rejected_message"] == 1
        assert after["bob"]["abort_reasons"]["peer: rejected_message"] == 1
        log = pair.logs["alice"].read_text()
        assert f"peer message rejected: {reason}" in log and f"(block {done[1]})" in log
        assert f"block {done[1]} aborted: rejected_message" in log
        assert f"block {done[1]} aborted: peer: rejected_message" in pair.logs["bob"].read_text()
        # the link goes on, and the aborted block left nothing at either end
        ok = blocks_ok(pair)
        pair.wait(lambda: blocks_ok(pair) >= ok + 5, 60, "blocks flowing again")
        assert_agree(pair)


def test_garbage_from_the_peer_is_counted_and_the_node_keeps_serving(tmp_path):
    with NodePair(tmp_path, fast=True, relay=True) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 3, 60, "blocks flowing")
        for _ in range(3):
            pair.relay.inject("to_alice", "garbage")
        pair.wait(lambda: pair.relay.pending("to_alice") == 0
                  and pair.status("alice")["rejected_messages"] >= 3, 30, "garbage rejected")
        ok = blocks_ok(pair)
        pair.wait(lambda: blocks_ok(pair) >= ok + 5, 60, "blocks flowing on")
        assert "peer message rejected: malformed" in pair.logs["alice"].read_text()
        assert "authentication" in pair.status("alice")["alarms"] or \
            pair.status("alice")["rejected_messages"] < 5
        assert pair.alive("alice") and pair.alive("bob")
        assert_agree(pair)


@pytest.mark.parametrize("who", NODES)
def test_a_peer_restart_heals_without_operator_and_nothing_is_half_stored(tmp_path, who):
    with NodePair(tmp_path, fast=True) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 5, 60, "blocks flowing")
        assert pair.kill(who, signal.SIGTERM) == 0
        time.sleep(1.0)
        pair.start(who)
        ok = blocks_ok(pair)
        pair.wait(lambda: blocks_ok(pair) >= ok + 10, 60, "blocks flowing after the restart")
        assert "peer restarted" in pair.logs["bob" if who == "alice" else "alice"].read_text()
        assert_agree(pair)


def test_a_network_cut_and_a_dropped_connection_heal_by_themselves(tmp_path):
    with NodePair(tmp_path, fast=True, relay=True,
                  policy={"block_timeout_s": 5.0}) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 5, 60, "blocks flowing")
        pair.relay.drop_all = True             # the path goes silent, TCP stays up
        time.sleep(4.0)
        stalled = blocks_ok(pair)
        pair.relay.drop_all = False
        pair.wait(lambda: blocks_ok(pair) >= stalled + 10, 90, "blocks flowing after the cut")
        assert_agree(pair)


def test_kill_9_at_random_instants_leaves_both_stores_identical(tmp_path):
    """24 kills of either node (victim and instant drawn at random) while blocks are in every
    step; after each restart the pair drains, both stores agree key by key and pass SQLite's
    integrity check, and nothing committed is ever lost (the key count never falls)."""
    kills = 24
    with NodePair(tmp_path, fast=True) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 3, 60, "blocks flowing")
        history = []
        rng = random.SystemRandom()
        for i in range(kills):
            victim = rng.choice(NODES)
            time.sleep(rng.uniform(0.2, 1.5))
            assert pair.kill(victim) == -signal.SIGKILL
            pair.start(victim)
            if i % 4 == 3:             # now and then: the link makes progress again
                ok = blocks_ok(pair, "alice")
                pair.wait(lambda: blocks_ok(pair, "alice") > ok, 60, "blocks after restart")
            history.append(assert_agree(pair)["alice"]["n_keys"])
            for node in NODES:         # the stores are sound while the nodes run on them
                assert pair.integrity(node) == "ok"
        assert len(history) == kills
        assert history == sorted(history) and history[-1] > history[0]
        pair.close()
        offline = pair.offline_digests()
        for node in NODES:
            assert offline[node][0] == "ok" and offline[node][1] == []
        assert offline["alice"][2] == offline["bob"][2]
        pools = auth_pools(tmp_path)
        assert pools["alice"][:2] == pools["bob"][:2] and pools["alice"][0] > 0



def test_kill_9_between_a_commit_and_its_refill_keeps_the_link_authenticating(tmp_path):
    """A 1 KiB bootstrap (63 messages each way) is used up by the first blocks; from then on
    every peer message is tagged with pads from refills. Six times, a node (each in turn) is
    killed at a random instant and restarted with the hook that makes it kill itself right
    after its store committed a block and before its pool took that block's refill. After each
    restart the link stores blocks again (every message verified), and at the end both pools
    hold the same bytes after the same number of refills, with no authentication alarm."""
    hooks = {"QKD_FAST_AUTH_CHUNK": "8"}
    with NodePair(tmp_path, fast=True, auth_bytes=MIN_BOOTSTRAP_BYTES) as pair:
        pair.start(env=hooks)
        pair.wait(lambda: blocks_ok(pair, "alice") >= 10, 60, "blocks flowing")
        rng = random.SystemRandom()
        for i in range(6):
            victim = NODES[i % 2]
            time.sleep(rng.uniform(0.1, 0.8))
            assert pair.kill(victim) == -signal.SIGKILL
            pair.start(victim, env={**hooks, "QKD_FAST_DIE_AT_REFILL": "3"}, wait=False)
            assert pair.procs[victim].wait(60) == -signal.SIGKILL    # died between the two
            pair.procs.pop(victim)
            pair.start(victim, env=hooks)
            ok = blocks_ok(pair, "alice")
            pair.wait(lambda: blocks_ok(pair, "alice") >= ok + 5, 60, "blocks after restart")
        assert_agree(pair)
        for node in NODES:
            assert "authentication" not in pair.status(node)["alarms"]
        pair.close()
        pools = auth_pools(tmp_path)
        assert pools["alice"][:2] == pools["bob"][:2]
        assert len(pools["alice"][1]) > 4 * MIN_BOOTSTRAP_BYTES
        for node in NODES:           # both ends sent far past what the bootstrap covers
            assert pools[node][2] > 2 * (MIN_BOOTSTRAP_BYTES // 16)


def test_a_bad_config_is_one_line_and_exit_2(tmp_path):
    with NodePair(tmp_path, fast=True) as pair:
        text = pair.configs["bob"].read_text().replace("[link.policy]",
                                                      "[link.policy]\nblock_pulse = 5")
        pair.configs["bob"].write_text(text)
        proc = subprocess.run([*pair.command, "--config", str(pair.configs["bob"])],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "link[0].policy.block_pulse: unknown key" in line and "block_pulses" in line
    assert "Traceback" not in proc.stderr


def test_a_peer_with_another_policy_gets_an_alarm_and_both_keep_serving(tmp_path):
    with NodePair(tmp_path, fast=True) as pair:
        text = pair.configs["bob"].read_text().replace("eps_sec = 1e-10", "eps_sec = 1e-9")
        pair.configs["bob"].write_text(text)
        pair.start()
        pair.wait(lambda: all("config" in pair.status(n)["alarms"] for n in NODES), 30,
                  "the configuration alarm at both ends")
        time.sleep(1.0)
        for n in NODES:
            s = pair.status(n)
            assert s["blocks_started"] == 0 and s["state"] == "peer configuration mismatch"
        assert pair.alive("alice") and pair.alive("bob")


def test_a_dropped_connection_reconnects_by_itself(tmp_path):
    with NodePair(tmp_path, fast=True, delay_s=0.0) as pair:
        pair.start()
        pair.wait(lambda: blocks_ok(pair) >= 5, 60, "blocks flowing")
        connections = pair.proxy.connections
        pair.proxy.drop_connections()          # TCP reset under CurveZMQ: libzmq reconnects
        pair.wait(lambda: pair.proxy.connections > connections, 30, "a new connection")
        ok = blocks_ok(pair)
        pair.wait(lambda: blocks_ok(pair) >= ok + 10, 60, "blocks flowing after the drop")
        assert "connection lost" in pair.logs["bob"].read_text()
        assert_agree(pair)

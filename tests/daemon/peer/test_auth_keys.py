"""The authentication key pool: both ends derive the same pads, the two directions never
share one, and no pad serves twice even when the process is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from daemon.peer.auth_keys import (MESSAGES_PER_HASH_KEY, STRIDE, AuthKeyError,
                                   AuthKeyExhausted, AuthKeyPool, key_and_pad_words,
                                   read_bootstrap, write_bootstrap)


@pytest.fixture
def boot(tmp_path):
    path = tmp_path / "bootstrap.bin"
    write_bootstrap(path, 64 * 1024)
    return path


def pools(tmp_path, boot, **kw):
    return (AuthKeyPool(tmp_path / "alice", local_role="alice", bootstrap=boot, **kw),
            AuthKeyPool(tmp_path / "bob", local_role="bob", bootstrap=boot, **kw))


def test_bootstrap_file_is_private_and_never_overwritten(tmp_path, boot):
    assert stat.S_IMODE(os.stat(boot).st_mode) == 0o600
    pool_id, material = read_bootstrap(boot)
    assert len(pool_id) == 16 and len(material) == 64 * 1024
    with pytest.raises(AuthKeyError, match="exists already"):
        write_bootstrap(boot, 4096)
    with pytest.raises(AuthKeyError, match=r"bootstrap size 10 bytes outside 1024\.\."):
        write_bootstrap(tmp_path / "small", 10)


def test_damaged_bootstrap_is_refused(tmp_path, boot):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(boot.read_bytes()[:-1])
    with pytest.raises(AuthKeyError, match="truncated or damaged"):
        AuthKeyPool(tmp_path / "p", local_role="alice", bootstrap=bad)


def test_both_ends_derive_identical_pads_and_directions_never_collide(tmp_path, boot):
    alice, bob = pools(tmp_path, boot)
    seqs = [0, 1, 2, 100, 1000, 2000]
    for s in seqs:
        assert alice.send_keys(s) == bob.recv_keys(s)
        assert bob.send_keys(s) == alice.recv_keys(s)
    a_words = {key_and_pad_words(s)[1] * STRIDE for s in seqs}          # Alice: even words
    b_words = {key_and_pad_words(s)[1] * STRIDE + 8 for s in seqs}      # Bob: odd words
    assert not a_words & b_words
    assert {alice.send_keys(s)[1] for s in seqs}.isdisjoint({bob.send_keys(s)[1] for s in seqs})


def test_pads_are_the_documented_words_of_the_material(tmp_path, boot):
    alice, _ = pools(tmp_path, boot)
    _, material = read_bootstrap(boot)
    word = lambda i: int.from_bytes(material[8 * i:8 * i + 8], "little")   # noqa: E731
    for seq in (0, 7, 4000):
        key_w, pad_w = key_and_pad_words(seq)
        assert alice.send_keys(seq) == (word(2 * key_w), word(2 * pad_w))
    assert key_and_pad_words(MESSAGES_PER_HASH_KEY) == (MESSAGES_PER_HASH_KEY + 1,
                                                       MESSAGES_PER_HASH_KEY + 2)


def test_exhausted_pool_refuses_then_refill_extends_it_identically(tmp_path, boot):
    alice, bob = pools(tmp_path, boot)
    n_msgs = 64 * 1024 // STRIDE - 1           # one word per stream is the hash key
    assert alice.status().send_messages_left == n_msgs
    with pytest.raises(AuthKeyExhausted, match="refill"):
        alice.send_keys(n_msgs)
    assert bob.recv_keys(n_msgs) is None
    fresh = os.urandom(1000)                   # 62 strides and 8 bytes left out
    assert alice.refill(fresh, 0) == bob.refill(fresh, 0) == 992
    assert alice.send_keys(n_msgs) == bob.recv_keys(n_msgs)
    assert alice.status().send_messages_left == n_msgs + 62
    assert alice.refill(fresh, 0) == 0                     # the same refill again: ignored
    alice.close()
    reopened = AuthKeyPool(tmp_path / "alice", local_role="alice")
    assert reopened.send_keys(n_msgs) == bob.recv_keys(n_msgs)
    assert reopened.next_refill == 1 and reopened.refill(fresh, 0) == 0


def test_refills_are_taken_in_number_order_only(tmp_path, boot):
    """A refill numbered past the next one is refused (taking it would make this pool differ
    from the peer's); the pool is unchanged and takes it once the gap is filled."""
    alice, bob = pools(tmp_path, boot)
    first, second = os.urandom(160), os.urandom(320)
    before = alice.status().material_bytes
    with pytest.raises(AuthKeyError, match="refill 1 before refill 0"):
        alice.refill(second, 1)
    assert alice.status().material_bytes == before and alice.next_refill == 0
    assert alice.refill(first, 0) == 160 and alice.refill(second, 1) == 320
    assert bob.refill(first, 0) == 160 and bob.refill(second, 1) == 320
    last = alice.messages_left(0, 0) - 1
    assert alice.send_keys(last) == bob.recv_keys(last)


def test_refills_from_another_thread_never_lose_a_state_write(tmp_path, boot):
    """The engine refills from its commit thread while the channel takes sequence numbers on
    the event loop: every state write must hold both, or a restart finds an older state."""
    alice, _ = pools(tmp_path, boot, chunk_messages=1)        # a state write per message
    errors = []

    def take():
        try:
            for _ in range(1500):
                alice.take_send_seq()
        except Exception as exc:                  # reported below, with its type
            errors.append(exc)

    sender = threading.Thread(target=take)
    sender.start()
    for i in range(150):
        alice.refill(bytes(16), i)
    sender.join()
    assert errors == []
    alice.close()
    again = AuthKeyPool(tmp_path / "alice", local_role="alice")
    assert again.next_refill == 150 and again.send_next == 1500
    assert again.status().material_bytes == 64 * 1024 + 150 * 16


def test_torn_refill_is_cut_off_at_restart(tmp_path, boot):
    alice, _ = pools(tmp_path, boot)
    alice.close()
    with open(tmp_path / "alice" / "material.bin", "ab") as f:
        f.write(b"\x55" * 160)                  # written, never committed in state.json
    again = AuthKeyPool(tmp_path / "alice", local_role="alice")
    assert again.status().material_bytes == 64 * 1024
    assert (tmp_path / "alice" / "material.bin").stat().st_size == 64 * 1024


def test_one_process_per_pool_and_role_checked(tmp_path, boot):
    alice, _ = pools(tmp_path, boot)
    with pytest.raises(AuthKeyError, match="in use by another process"):
        AuthKeyPool(tmp_path / "alice", local_role="alice")
    alice.close()
    with pytest.raises(AuthKeyError, match="belongs to role 'alice'"):
        AuthKeyPool(tmp_path / "alice", local_role="bob")
    other = tmp_path / "other.bin"
    write_bootstrap(other, 4096)
    with pytest.raises(AuthKeyError, match="not the one pool"):
        AuthKeyPool(tmp_path / "alice", local_role="alice", bootstrap=other)


def test_low_pool_alarm(tmp_path, boot):
    alice, _ = pools(tmp_path, boot, low_water_messages=100)
    assert not alice.low
    alice.skip_send_to(64 * 1024 // STRIDE - 100)
    assert alice.low


def test_receive_floor_and_send_reservation_survive_a_clean_restart(tmp_path, boot):
    alice, bob = pools(tmp_path, boot, chunk_messages=8)
    for _ in range(3):
        bob.mark_received(alice.take_send_seq())
    alice.close()
    bob.close()
    alice, bob = pools(tmp_path, None, chunk_messages=8)
    assert alice.send_next == 8 and bob.recv_floor == 8
    assert bob.recv_keys(2) is None and bob.recv_keys(8) == alice.send_keys(8)


CHILD = r"""
import sys
from daemon.peer.auth_keys import AuthKeyPool
pool = AuthKeyPool(sys.argv[1], local_role="alice", chunk_messages=int(sys.argv[2]))
print("start", pool.send_next, pool.recv_floor, flush=True)
recv = pool.recv_floor
while True:
    s = pool.take_send_seq()
    pool.mark_received(recv)
    print(s, recv, flush=True)      # used: the send pad s and the receive pad recv
    recv += 3                      # the peer skips some numbers now and then
"""


def test_no_pad_reused_across_kill_minus_9(tmp_path, boot):
    """A child takes sequence numbers as fast as it can and is killed at random moments; every
    restart must resume above everything the child reported as used, in both directions."""
    directory = tmp_path / "pool"
    AuthKeyPool(directory, local_role="alice", bootstrap=boot).close()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    used_send: set[int] = set()
    max_recv = -1
    rng = np.random.default_rng(8)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), "16"],
                                 stdout=subprocess.PIPE, text=True, env=env)
        first = child.stdout.readline().split()
        assert first[0] == "start"
        start_send, start_floor = int(first[1]), int(first[2])
        assert all(s < start_send for s in used_send)
        assert start_floor > max_recv
        seen = [child.stdout.readline() for _ in range(int(rng.integers(20, 80)))]
        time.sleep(float(rng.uniform(0, 0.01)))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        lines = [ln.split() for ln in ("".join(seen) + out).splitlines() if ln.strip()]
        if lines and len(lines[-1]) < 2:
            lines.pop()                          # a line cut by the kill
        sends = [int(ln[0]) for ln in lines]
        assert len(sends) >= 20
        assert not used_send & set(sends)
        used_send.update(sends)
        max_recv = max([max_recv] + [int(ln[1]) for ln in lines])
    final = AuthKeyPool(directory, local_role="alice")
    assert final.send_next > max(used_send)
    assert final.recv_floor > max_recv

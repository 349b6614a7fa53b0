"""A simulated Alice/Bob board pair sharing the real LinkSimulator, driven by QkdBoard."""

from __future__ import annotations

import numpy as np
import pytest

import firmware_protocol as fp
from drivers import registry
from sim_backend.board import SimBoard
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from firmware_protocol.wire_facts import SYNC_CHANNEL


@pytest.fixture
def pair():
    link = LinkSimulator(LinkParams.preset("gys", distance_km=10.0, clock_offset_ps=-5_000_000),
                         seed=11)
    chunks = []
    run_slots = link.run_slots

    def recording_run_slots(n):
        chunk = run_slots(n)
        chunks.append(chunk)
        return chunk

    link.run_slots = recording_run_slots
    with SimBoard(fp.Role.ALICE, link) as alice_board, SimBoard(fp.Role.BOB, link) as bob_board:
        alice = registry.create("qkd-board", alice_board.url)
        bob = registry.create("qkd-board", bob_board.url)
        yield link, chunks, alice, bob, bob_board
        alice.close()
        bob.close()


def test_real_link_stream_reaches_the_host_intact(pair):
    link, chunks, alice, bob, bob_board = pair
    assert bob.get_parameter(fp.ParamId.CLOCK_HZ) == link.params.clock_hz
    bob.set_parameter(fp.ParamId.BATCH_SLOTS, 200_000)
    bob.start_acquisition()
    batches = [bob.read_events(timeout_s=5) for _ in range(20)]
    bob.stop_acquisition()
    batches += bob.queued_batches()
    assert all(isinstance(b, fp.EventBatch) for b in batches)
    ts = np.concatenate([b.timestamps_ps for b in batches])
    ch = np.concatenate([b.channels for b in batches])
    assert ts.size == bob_board.stats.events_sent == bob.stream_stats.events_received
    assert bob_board.stats.events_clamped == 0
    # Same events as the physics produced, in time order (those past the last window excepted).
    link_ts = np.concatenate([c.timestamps_ps for c in chunks])
    link_ch = np.concatenate([c.channels for c in chunks])
    order = np.argsort(link_ts, kind="stable")
    np.testing.assert_array_equal(ts, link_ts[order][:ts.size])
    np.testing.assert_array_equal(ch, link_ch[order][:ts.size])
    assert np.count_nonzero(ch == SYNC_CHANNEL) > 0
    # Telemetry counts are the physics' detector clicks (sync excluded).
    tel = bob.telemetry()
    assert sum(d.counts for d in tel.detectors) == np.count_nonzero(link_ch != SYNC_CHANNEL)

    # Alice's host learns the pattern of exactly the slots Bob's events came from.
    slots = np.concatenate([c.true_slots for c in chunks])[order][:ts.size]
    slots = slots[ch != SYNC_CHANNEL]
    np.testing.assert_array_equal(alice.request_pattern(slots), link.alice_pattern(slots))

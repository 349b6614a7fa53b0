"""QkdBoard over real TCP loopback against the simulated board: stream, gaps, faults."""

from __future__ import annotations

import numpy as np
import pytest

import firmware_protocol as fp
from drivers import registry
from drivers.board import BatchesLost, BatchGap, QkdBoard
from drivers.errors import DeviceDisconnected, DeviceReportedError
from drivers.modulator import ModulatorCalibrationLevels
from sim_backend.board import SimBoard
from sim_backend.pattern import pattern_at
from tests.sim_backend.board_fakes import recording_link


@pytest.fixture
def link():
    return recording_link()


@pytest.fixture
def bob_board(link):
    with SimBoard(fp.Role.BOB, link) as board:
        board.parameters[fp.ParamId.BATCH_SLOTS] = 50_000
        yield board


@pytest.fixture
def bob(bob_board):
    driver = registry.create("qkd-board", bob_board.url, timeout_s=2.0)
    yield driver
    driver.close()


def run(driver: QkdBoard, min_events: int) -> list:
    """Start, read until ``min_events`` arrived, stop, and return every item in stream order."""
    driver.start_acquisition()
    items, n = [], 0
    while n < min_events:
        item = driver.read_batch(timeout_s=5.0)
        items.append(item)
        n += len(item) if isinstance(item, fp.EventBatch) else 0
    driver.stop_acquisition()
    return items + driver.queued_batches()


def test_identify_configure_telemetry(bob, bob_board, link):
    ident = bob.identify()
    assert ident.role is fp.Role.BOB and ident.serial == bob_board.serial
    assert bob.configure(sync_period=2000, dead_time_ns=50.0) == {"sync_period": 2000,
                                                                  "dead_time_ns": 50.0}
    assert bob.get_parameter(fp.ParamId.SYNC_PERIOD) == 2000
    assert all(d.dead_time_ns == 50.0 for d in link.controls.detectors)    # reaches the physics
    link.controls.telemetry[1].bias_v = 21.5
    tel = bob.telemetry()
    assert tel.detectors[1].bias_v == 21.5 and not tel.acquiring
    with pytest.raises(DeviceReportedError) as err:
        bob.request_pattern([1, 2])
    assert err.value.code == fp.ErrorCode.WRONG_ROLE


def test_full_rate_stream_loses_nothing(bob, bob_board, link):
    items = run(bob, 200_000)
    assert all(isinstance(i, fp.EventBatch) for i in items)
    assert [b.batch_seq for b in items] == list(range(len(items)))
    # Count at both ends: what the board sent is what the driver delivered.
    assert bob.stream_stats.events_received == bob_board.stats.events_sent
    assert sum(len(b) for b in items) == bob_board.stats.events_sent
    assert bob.stream_stats.batches_lost == 0 and bob.decoder_stats.frames_corrupt == 0
    ts = np.concatenate([b.timestamps_ps for b in items])
    ch = np.concatenate([b.channels for b in items])
    assert ts.dtype == np.int64 and ch.dtype == np.uint8
    link_ts = np.sort(np.concatenate([c.timestamps_ps for c in link.chunks]), kind="stable")
    np.testing.assert_array_equal(ts, link_ts[:ts.size])
    assert not bob_board.acquiring


def test_dropped_batch_is_a_gap_covering_the_lost_events(bob, bob_board, link):
    bob_board.faults.drop_batches = {3}
    items = run(bob, 20_000)
    gaps = [i for i in items if isinstance(i, BatchGap)]
    batches = [i for i in items if isinstance(i, fp.EventBatch)]
    assert gaps == [BatchGap(3, 1, batches[2].t_end_ps, batches[3].t_start_ps)]
    assert items.index(gaps[0]) == 3
    link_ts = np.concatenate([c.timestamps_ps for c in link.chunks])
    lost = np.count_nonzero((link_ts >= gaps[0].t_start_ps) & (link_ts < gaps[0].t_end_ps))
    assert lost == bob_board.stats.events_dropped > 0
    assert bob.stream_stats.events_received == bob_board.stats.events_sent


def test_read_events_raises_batches_lost_then_continues(bob, bob_board):
    bob_board.faults.drop_batches = {1}
    bob.start_acquisition()
    assert bob.read_events(timeout_s=5).batch_seq == 0
    with pytest.raises(BatchesLost) as err:
        bob.read_events(timeout_s=5)
    assert err.value.gap.first_seq == 1
    assert bob.read_events(timeout_s=5).batch_seq == 2
    bob.stop_acquisition()


def test_cut_mid_frame_is_a_disconnect_without_half_batch(bob, bob_board):
    bob_board.faults.cut_in_batch = 2
    bob.start_acquisition()
    got = []
    with pytest.raises(DeviceDisconnected):
        while True:
            got.append(bob.read_events(timeout_s=5))
    assert [b.batch_seq for b in got] == [0, 1]
    assert bob.stream_stats.batches_received == 2
    # Ack + 2 batches decoded; the half batch was discarded, never delivered.
    assert bob.decoder_stats.frames_ok == 3 and bob.decoder_stats.bytes_discarded > 0
    # The driver reconnects on its next request; the board stopped with the old connection.
    assert bob.identify().role is fp.Role.BOB
    assert not bob_board.acquiring


def test_garbage_between_batches_is_skipped_and_counted(bob, bob_board):
    bob_board.faults.garbage_before_batches = b"\xa7Q\x00noise\xa7QKD\x01"
    items = run(bob, 5_000)
    assert [b.batch_seq for b in items] == list(range(len(items)))
    assert bob.decoder_stats.bytes_discarded == len(bob_board.faults.garbage_before_batches) * \
        bob_board.stats.batches_sent
    assert bob.stream_stats.events_received == bob_board.stats.events_sent


def test_alice_patterns_and_modulator(link):
    with SimBoard(fp.Role.ALICE, link) as alice_board:
        alice = registry.create("qkd-board", alice_board.url)
        slots = np.array([3, 1_000_000_007, 17], np.uint64)
        np.testing.assert_array_equal(alice.request_pattern(slots),
                                      link.alice_pattern(slots))
        alice.close()
        mod = registry.create("board-modulator", alice_board.url)
        mod.load_calibration(ModulatorCalibrationLevels(0.1, 3.3, 1.7, 5.0))
        assert alice_board.calibration == fp.ModulatorCalibration(0.1, 3.3, 1.7, 5.0)
        pattern = pattern_at(99, np.arange(1000, dtype=np.uint64), p_signal=0.6, p_decoy1=0.3)
        assert mod.stream_patterns(5000, [pattern[:600], pattern[600:]]) == 6000
        np.testing.assert_array_equal(alice_board.uploaded_patterns[5600], pattern[600:])
        mod.close()

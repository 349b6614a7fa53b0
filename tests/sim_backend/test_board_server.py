"""The simulated board over real TCP, spoken to with the bare codec (no driver in the way)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import firmware_protocol as fp
from sim_backend.board import ReplayBatch, SimBoard
from sim_backend.pattern import pattern_at
from tests.sim_backend.board_fakes import FakeLink


class Client:
    def __init__(self, board: SimBoard):
        self.sock = socket.create_connection((board.host, board.port), timeout=5)
        self.enc = fp.Encoder()
        self.dec = fp.Decoder()
        self.pending: list = []

    def send(self, msg) -> int:
        self.sock.sendall(self.enc.encode(msg))
        return self.enc.last_seq

    def receive(self, until, timeout_s: float = 5.0) -> list:
        """Messages until ``until(msg)`` is true for one (included)."""
        out = []
        deadline = time.monotonic() + timeout_s
        while True:
            while self.pending:
                msg = self.pending.pop(0)
                out.append(msg)
                if until(msg):
                    return out
            assert time.monotonic() < deadline, "board did not answer in time"
            data = self.sock.recv(1 << 20)
            assert data, "board closed the connection"
            self.pending += self.dec.feed(data)

    def ask(self, msg):
        seq = self.send(msg)
        return self.receive(lambda m: not isinstance(m, fp.EventBatch) and (
            not isinstance(m, (fp.Ack, fp.Nack)) or m.ref_seq == seq))[-1]

    def close(self):
        self.sock.close()


@pytest.fixture
def link():
    return FakeLink()


@pytest.fixture
def bob(link):
    with SimBoard(fp.Role.BOB, link) as board:
        yield board


@pytest.fixture
def alice(link):
    with SimBoard(fp.Role.ALICE, link) as board:
        yield board


def test_url_is_loopback_and_ephemeral(bob):
    assert bob.url == f"socket://127.0.0.1:{bob.port}" and bob.port > 0


def test_identify_both_roles(alice, bob):
    for board, role in ((alice, fp.Role.ALICE), (bob, fp.Role.BOB)):
        c = Client(board)
        reply = c.ask(fp.IdentifyRequest())
        c.close()
        assert reply.role is role
        assert reply.serial == board.serial
    assert fp.Capability.EVENT_STREAM in Client(bob).ask(fp.IdentifyRequest()).capabilities


def test_parameters_set_get_and_range(bob, link):
    c = Client(bob)
    assert c.ask(fp.GetParameter(fp.ParamId.CLOCK_HZ)) == fp.ParameterValue(fp.ParamId.CLOCK_HZ, 1e9)
    assert c.ask(fp.SetParameter(fp.ParamId.SYNC_PERIOD, 500)) == \
        fp.ParameterValue(fp.ParamId.SYNC_PERIOD, 500)
    assert c.ask(fp.GetParameter(fp.ParamId.SYNC_PERIOD)).value == 500
    nack = c.ask(fp.SetParameter(fp.ParamId.MU, 3.0))
    assert isinstance(nack, fp.Nack) and nack.code is fp.ErrorCode.VALUE_OUT_OF_RANGE
    assert "MU" in nack.detail and "3.0" in nack.detail
    nack = c.ask(fp.GetParameter(0x7777))
    assert nack.code is fp.ErrorCode.UNKNOWN_PARAMETER
    # Detector settings made through the board reach the shared controls.
    c.ask(fp.SetParameter(fp.ParamId.DETECTOR_ENABLE_MASK, 0b0101))
    assert [d.enabled for d in link.controls.detectors] == [True, False, True, False]


def test_heartbeat_and_telemetry(bob, link):
    link.controls.telemetry[2].counts = 1234
    link.controls.telemetry[2].photocurrent_ua = 2.5
    c = Client(bob)
    beat = c.ask(fp.Heartbeat(77))
    assert beat.token == 77 and not beat.acquiring
    tel = c.ask(fp.TelemetryRequest())
    assert len(tel.detectors) == 4
    assert tel.detectors[2].counts == 1234 and tel.detectors[2].photocurrent_ua == 2.5


def test_alice_pattern_comes_from_the_link(alice, link):
    slots = np.array([0, 5, 10**12, 2**40 + 3], dtype=np.uint64)
    reply = Client(alice).ask(fp.PatternRequest(9, slots))
    assert reply.request_id == 9
    np.testing.assert_array_equal(reply.pattern, pattern_at(link.pattern_key, slots))


def test_pattern_request_to_bob_is_wrong_role(bob):
    nack = Client(bob).ask(fp.PatternRequest(1, np.array([1], np.uint64)))
    assert nack.code is fp.ErrorCode.WRONG_ROLE


def test_calibration_and_upload_validated(alice):
    c = Client(alice)
    assert isinstance(c.ask(fp.ModulatorCalibration(0.0, 3.1, 1.55, 4.65)), fp.Ack)
    assert alice.calibration.drive_v_v == 3.1
    nack = c.ask(fp.ModulatorCalibration(0.0, 3.1, 11.0, 4.65))
    assert nack.code is fp.ErrorCode.VALUE_OUT_OF_RANGE and "D" in nack.detail
    good = np.array([0, 1, 2, 3, 4, 8, 11], np.uint8)
    assert isinstance(c.ask(fp.PatternUpload(100, good)), fp.Ack)
    np.testing.assert_array_equal(alice.uploaded_patterns[100], good)
    for bad in (0x0C, 0x10):   # intensity index 3; a reserved bit
        nack = c.ask(fp.PatternUpload(200, np.array([0, bad], np.uint8)))
        assert nack.code is fp.ErrorCode.VALUE_OUT_OF_RANGE and "slot 201" in nack.detail
    assert 200 not in alice.uploaded_patterns


def test_unknown_type_and_newer_version_are_nacked(bob):
    c = Client(bob)
    c.sock.sendall(fp.encode_frame(0xEE, 50, b"x"))
    c.sock.sendall(fp.encode_frame(fp.Heartbeat.TYPE, 51, b"\0\0\0\0", version=2))
    got = c.receive(lambda m: isinstance(m, fp.Nack) and m.ref_seq == 51)
    assert [(m.ref_seq, m.code) for m in got] == [(50, fp.ErrorCode.UNKNOWN_MESSAGE),
                                                   (51, fp.ErrorCode.UNSUPPORTED_VERSION)]


def collect_run(board, n_batches_min: int) -> tuple[list, "fp.Ack"]:
    c = Client(board)
    assert isinstance(c.ask(fp.StartAcquisition()), fp.Ack)
    got = c.receive(lambda m: isinstance(m, fp.EventBatch) and m.batch_seq >= n_batches_min - 1)
    seq = c.send(fp.StopAcquisition())
    got += c.receive(lambda m: isinstance(m, fp.Ack) and m.ref_seq == seq)
    c.close()
    return got


def test_event_stream_windows_and_content(bob, link):
    bob.parameters[fp.ParamId.BATCH_SLOTS] = 20_000
    msgs = collect_run(bob, 5)
    batches = [m for m in msgs if isinstance(m, fp.EventBatch)]
    assert isinstance(msgs[-1], fp.Ack) and not bob.acquiring and not link.controls.acquiring
    assert [b.batch_seq for b in batches] == list(range(len(batches)))
    for prev, nxt in zip(batches, batches[1:]):
        assert nxt.t_start_ps == prev.t_end_ps                      # adjacent windows
    for b in batches:
        assert np.all(b.timestamps_ps >= b.t_start_ps) and np.all(b.timestamps_ps < b.t_end_ps)
        assert np.all(np.diff(b.timestamps_ps) >= 0)
    ts = np.concatenate([b.timestamps_ps for b in batches])
    ch = np.concatenate([b.channels for b in batches])
    # Every event the link produced is delivered once, in order, except those still carried
    # past the last window (slots at the very end of the last chunk).
    link_ts = np.concatenate([c.timestamps_ps for c in link.chunks])
    link_ch = np.concatenate([c.channels for c in link.chunks])
    order = np.argsort(link_ts, kind="stable")
    link_ts, link_ch = link_ts[order], link_ch[order]
    assert ts.size == bob.stats.events_sent and bob.stats.events_clamped == 0
    np.testing.assert_array_equal(ts, link_ts[:ts.size])
    np.testing.assert_array_equal(ch, link_ch[:ts.size])
    assert np.all(link_ts[ts.size:] >= batches[-1].t_end_ps)


def test_drop_batch_fault_skips_a_sequence_number(bob):
    bob.parameters[fp.ParamId.BATCH_SLOTS] = 10_000
    bob.faults.drop_batches = {2}
    batches = [m for m in collect_run(bob, 5) if isinstance(m, fp.EventBatch)]
    seqs = [b.batch_seq for b in batches]
    assert 2 not in seqs and seqs[:3] == [0, 1, 3]
    assert batches[2].t_start_ps > batches[1].t_end_ps               # the lost window
    assert bob.stats.batches_dropped == 1


def test_second_start_is_refused_and_disconnect_stops(bob, link):
    bob.parameters[fp.ParamId.BATCH_SLOTS] = 10_000
    c = Client(bob)
    assert isinstance(c.ask(fp.StartAcquisition()), fp.Ack)
    other = Client(bob)
    assert other.ask(fp.StartAcquisition()).code is fp.ErrorCode.ALREADY_ACQUIRING
    c.close()
    deadline = time.monotonic() + 5
    while bob.acquiring and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bob.acquiring and not link.controls.acquiring
    assert isinstance(other.ask(fp.StartAcquisition()), fp.Ack)


def test_replay_mode_streams_prepacked_batches():
    replay = [ReplayBatch(np.array([0, 5, 99]), np.array([0, 1, 7], np.uint8), 100)]
    with SimBoard(fp.Role.BOB, replay=replay) as board:
        batches = [m for m in collect_run(board, 3) if isinstance(m, fp.EventBatch)]
    assert batches[1].t_start_ps == 100
    np.testing.assert_array_equal(batches[1].timestamps_ps, [100, 105, 199])
    np.testing.assert_array_equal(batches[1].channels, [0, 1, 7])


def test_events_beyond_the_declared_jitter_stay_inside_windows():
    # Declared jitter 0 ps (margin half a slot = 500 ps) but actual jitter 2 ns: many events cross
    # window boundaries. Late ones are carried to the next batch; early ones are clamped and
    # counted. None is lost and every one lies inside its batch's window.
    link = FakeLink(click_probability=0.05, jitter_ps=0.0, actual_jitter_ps=2000.0)
    with SimBoard(fp.Role.BOB, link) as board:
        board.parameters[fp.ParamId.BATCH_SLOTS] = 2_000
        batches = [m for m in collect_run(board, 20) if isinstance(m, fp.EventBatch)]
    for b in batches:
        assert np.all(b.timestamps_ps >= b.t_start_ps) and np.all(b.timestamps_ps < b.t_end_ps)
    n_link = sum(c.timestamps_ps.size for c in link.chunks)
    last_end = batches[-1].t_end_ps
    carried = sum(int(np.count_nonzero(c.timestamps_ps >= last_end)) for c in link.chunks)
    assert sum(len(b) for b in batches) == n_link - carried == board.stats.events_sent
    assert board.stats.events_clamped > 0


def test_realtime_pacing_follows_the_simulated_clock():
    # Replay batches of three events cost microseconds to send; paced, each waits out its 5 ms
    # window, so ten of them cannot arrive in less than 50 ms.
    replay = [ReplayBatch(np.array([0, 1, 2]), np.zeros(3, np.uint8), 5_000_000_000)]
    with SimBoard(fp.Role.BOB, replay=replay, realtime=True) as board:
        c = Client(board)
        c.ask(fp.StartAcquisition())
        t0 = time.monotonic()
        c.receive(lambda m: isinstance(m, fp.EventBatch) and m.batch_seq == 9)
        elapsed = time.monotonic() - t0
        c.close()
    assert elapsed >= 10 * 5e-3

"""QkdBoard and BoardModulator against scripted bytes: the exchanges document the dialect."""

from __future__ import annotations

import numpy as np
import pytest

import firmware_protocol as fp
from drivers.board import BatchesLost, BatchGap, BoardIdentity, QkdBoard
from drivers.errors import (DeviceProtocolError, DeviceReportedError, DeviceTimeout,
                            SettingOutOfRange)
from drivers.modulator import BoardModulator, ModulatorCalibrationLevels
from firmware_protocol.framing import FLAG_REPLY
from tests.drivers.expected import expected_protocol


class Script:
    """Frames as the driver (host seq from 0) and the board (its own seq) would encode them."""

    def __init__(self):
        self.host = fp.Encoder()
        self.board = fp.Encoder(1000, flags=FLAG_REPLY)

    def request(self, msg):
        frame = self.host.encode(msg)
        return frame, self.host.last_seq

    def reply(self, msg):
        return self.board.encode(msg)

    def ack(self, seq, msg):
        return self.board.encode(fp.Ack(seq, msg.TYPE))


def test_heartbeat_frame_is_byte_exact():
    # sync A7 51 4B 44 | version 1 | type 0x03 | flags 0 | seq 0 | length 4 | header CRC | token 1
    # | payload CRC
    expected = bytes.fromhex("a7514b44" "01" "03" "0000" "00000000" "04000000")
    expected += fp.crc32(expected).to_bytes(4, "little") + bytes.fromhex("01000000")
    expected += fp.crc32(bytes.fromhex("01000000")).to_bytes(4, "little")
    s = Script()
    reply = s.reply(fp.HeartbeatReply(1, 5000, False))
    with expected_protocol(QkdBoard, [(expected, reply)]) as board:
        beat = board.heartbeat()
    assert beat.uptime_ms == 5000 and beat.acquiring is False


def test_identify():
    s = Script()
    req, _ = s.request(fp.IdentifyRequest())
    caps = fp.Capability.EVENT_STREAM | fp.Capability.TELEMETRY
    rep = s.reply(fp.IdentifyReply(fp.Role.BOB, caps, "QKD-TB1", "2.1", "SN9"))
    with expected_protocol(QkdBoard, [(req, rep)]) as board:
        assert board.identify() == BoardIdentity(fp.Role.BOB, caps, "QKD-TB1", "2.1", "SN9")


def test_set_parameter_and_remembered():
    s = Script()
    req, _ = s.request(fp.SetParameter(fp.ParamId.CLOCK_HZ, 1.25e9))
    rep = s.reply(fp.ParameterValue(fp.ParamId.CLOCK_HZ, 1.25e9))
    with expected_protocol(QkdBoard, [(req, rep)]) as board:
        assert board.set_parameter(fp.ParamId.CLOCK_HZ, 1.25e9) == 1.25e9
        assert board.last_settings == {"param:CLOCK_HZ": (fp.ParamId.CLOCK_HZ, 1.25e9)}


def test_configure_by_name_sends_typed_values():
    s = Script()
    req1, _ = s.request(fp.SetParameter(fp.ParamId.SYNC_PERIOD, 1000))
    req2, _ = s.request(fp.SetParameter(fp.ParamId.MU, 0.5))
    with expected_protocol(QkdBoard, [
            (req1, s.reply(fp.ParameterValue(fp.ParamId.SYNC_PERIOD, 1000))),
            (req2, s.reply(fp.ParameterValue(fp.ParamId.MU, 0.5)))]) as board:
        assert board.configure(sync_period=1000.0, mu=0.5) == {"sync_period": 1000, "mu": 0.5}


@pytest.mark.parametrize("kwargs", [dict(mu=2.5), dict(sync_period=1.5), dict(warp_factor=9)])
def test_bad_settings_refused_before_sending(kwargs):
    with expected_protocol(QkdBoard, []) as board:
        with pytest.raises(SettingOutOfRange) as err:
            board.configure(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(err.value) or "unknown" in str(err.value)


def test_nack_is_a_device_reported_error_with_code():
    s = Script()
    req, seq = s.request(fp.StartAcquisition())
    nack = s.reply(fp.Nack(seq, fp.StartAcquisition.TYPE, fp.ErrorCode.ALREADY_ACQUIRING, "busy"))
    with expected_protocol(QkdBoard, [(req, nack)]) as board:
        with pytest.raises(DeviceReportedError) as err:
            board.start_acquisition()
    assert err.value.code == fp.ErrorCode.ALREADY_ACQUIRING and "ALREADY_ACQUIRING" in str(err.value)


def test_stale_ack_skipped_and_batches_queued_while_waiting():
    s = Script()
    req, seq = s.request(fp.StartAcquisition())
    batch = fp.EventBatch(0, 100, 200, np.array([150]), np.array([3], np.uint8))
    reply = (s.ack(seq + 17, fp.StartAcquisition()) + s.reply(batch) + s.ack(seq, fp.StartAcquisition()))
    with expected_protocol(QkdBoard, [(req, reply)]) as board:
        board.start_acquisition()
        assert board.read_events() == batch


def _batch(seq, t0):
    return fp.EventBatch(seq, t0, t0 + 1000, np.array([t0 + 1, t0 + 500]), np.array([0, 7], np.uint8))


def test_gap_is_reported_with_its_window_then_reading_continues():
    s = Script()
    stream = b"".join(s.reply(_batch(k, 1000 * k)) for k in (0, 1, 4))
    with expected_protocol(QkdBoard, [(None, stream)]) as board:
        assert board.read_events().batch_seq == 0
        assert board.read_events().batch_seq == 1
        with pytest.raises(BatchesLost) as err:
            board.read_events()
        assert board.read_events().batch_seq == 4
        assert board.stream_stats.batches_lost == 2
    assert err.value.gap == BatchGap(first_seq=2, n_missing=2, t_start_ps=2000, t_end_ps=4000)


def test_gap_at_acquisition_start_has_no_known_start():
    s = Script()
    with expected_protocol(QkdBoard, [(None, s.reply(_batch(3, 7000)))]) as board:
        items = list(board.iter_batches(timeout_s=0.0))
    assert items[0] == BatchGap(0, 3, None, 7000) and items[1].batch_seq == 3


def test_garbage_and_unknown_frames_are_skipped():
    s = Script()
    req, _ = s.request(fp.TelemetryRequest())
    tel = fp.Telemetry(True, (fp.DetectorReading(10, 50.0, 0.5, -40.0),) * 4)
    reply = b"\x00garbage\xa7QK" + fp.encode_frame(0xEE, 3, b"new") + s.reply(tel)
    with expected_protocol(QkdBoard, [(req, reply)]) as board:
        assert board.telemetry() == tel
        assert board.stream_stats.unknown_frames == 1
        assert board.decoder_stats.bytes_discarded == len(b"\x00garbage\xa7QK")


def test_malformed_reply_is_a_protocol_error():
    s = Script()
    req, _ = s.request(fp.Heartbeat(1))
    bad = fp.encode_frame(fp.HeartbeatReply.TYPE, 0, b"\x01\x00")
    with expected_protocol(QkdBoard, [(req, bad)]) as board:
        with pytest.raises(DeviceProtocolError):
            board.heartbeat()


def test_silent_board_times_out():
    s = Script()
    req, _ = s.request(fp.IdentifyRequest())
    with expected_protocol(QkdBoard, [(req, None)]) as board:
        with pytest.raises(DeviceTimeout) as err:
            board.identify()
    assert "IdentifyRequest" in str(err.value)


def test_half_a_reply_then_silence_is_a_timeout_not_a_value():
    s = Script()
    req, _ = s.request(fp.GetParameter(fp.ParamId.MU))
    rep = s.reply(fp.ParameterValue(fp.ParamId.MU, 0.5))
    with expected_protocol(QkdBoard, [(req, rep[:-3])]) as board:
        with pytest.raises(DeviceTimeout):
            board.get_parameter(fp.ParamId.MU)
        assert board.decoder_stats.frames_ok == 0


def test_pattern_request_split_and_checked(monkeypatch):
    monkeypatch.setattr("drivers.board.qkd_board.PATTERN_REQUEST_MAX_SLOTS", 3)
    s = Script()
    slots = np.array([10, 11, 12, 500, 501], np.uint64)
    r1, _ = s.request(fp.PatternRequest(1, slots[:3]))
    r2, _ = s.request(fp.PatternRequest(2, slots[3:]))
    with expected_protocol(QkdBoard, [
            (r1, s.reply(fp.PatternReply(1, np.array([1, 2, 3], np.uint8)))),
            (r2, s.reply(fp.PatternReply(2, np.array([4, 5], np.uint8))))]) as board:
        np.testing.assert_array_equal(board.request_pattern(slots), [1, 2, 3, 4, 5])


def test_pattern_reply_for_another_request_is_refused():
    s = Script()
    req, _ = s.request(fp.PatternRequest(1, np.array([7], np.uint64)))
    with expected_protocol(QkdBoard, [(req, s.reply(fp.PatternReply(9, np.array([1], np.uint8))))]) as b:
        with pytest.raises(DeviceProtocolError):
            b.request_pattern([7])


def test_modulator_calibration_exchange_and_range():
    s = Script()
    levels = ModulatorCalibrationLevels(0.0, 3.2, 1.6, 4.8)
    req, seq = s.request(fp.ModulatorCalibration(0.0, 3.2, 1.6, 4.8))
    with expected_protocol(BoardModulator, [(req, s.ack(seq, fp.ModulatorCalibration(0, 0, 0, 0)))]) as mod:
        mod.load_calibration(levels)
        assert mod.calibration == levels
        with pytest.raises(SettingOutOfRange) as err:
            mod.load_calibration(ModulatorCalibrationLevels(0.0, 3.2, -0.5, 4.8))
    assert "D = -0.5 V" in str(err.value) and "[0, 10] V" in str(err.value)


def test_modulator_pattern_upload_chunks_and_validation():
    s = Script()
    pattern = np.array([0, 1, 2, 3, 8], np.uint8)
    r1, q1 = s.request(fp.PatternUpload(40, pattern[:2]))
    r2, q2 = s.request(fp.PatternUpload(42, pattern[2:4]))
    r3, q3 = s.request(fp.PatternUpload(44, pattern[4:]))
    up = fp.PatternUpload(0, pattern)
    with expected_protocol(BoardModulator, [(r1, s.ack(q1, up)), (r2, s.ack(q2, up)),
                                            (r3, s.ack(q3, up))]) as mod:
        mod.MAX_UPLOAD_SLOTS = 2
        assert mod.load_pattern(40, pattern) == 45
        with pytest.raises(SettingOutOfRange) as err:
            mod.load_pattern(0, np.array([0, 0x0D], np.uint8))
    assert "slot 1" in str(err.value) and "0x0d" not in str(err.value).lower()

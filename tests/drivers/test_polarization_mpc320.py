"""Thorlabs MPC320: APT frames byte for byte, and the sans-I/O codec's properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import DeviceProtocolError, DeviceTimeout, SettingOutOfRange
from drivers.polarization import apt
from drivers.polarization.thorlabs_mpc320 import ThorlabsMpc320
from tests.drivers.expected import expected_protocol

STATUS_P2_85DEG = bytes.fromhex("0200" "ad020000" "0000" "0000" "00040080")  # homed, enabled
# MOVE_ABSOLUTE (0x0453), 6 data bytes, to 0x50|0x80 from 0x01: channel 2, 685 counts (85 deg)
MOVE_P2_85DEG = bytes.fromhex("53040600d001" "0200ad020000")


def test_move_absolute_frame_and_completion():
    with expected_protocol(ThorlabsMpc320, [
        (MOVE_P2_85DEG, bytes.fromhex("64040e008150") + STATUS_P2_85DEG),
    ]) as mpc:
        status = mpc.move_to(2, 85.0)
    assert status.paddle == 2 and status.homed and status.enabled and not status.moving
    assert status.position_deg == pytest.approx(85.0, abs=170 / 1370)
    assert mpc.last_settings == {"paddle2": (2, 85.0)}


def test_unsolicited_messages_are_skipped_while_waiting():
    moving = bytes.fromhex("0200" "00010000" "1000" "0500" "10000080")   # still moving
    with expected_protocol(ThorlabsMpc320, [
        (MOVE_P2_85DEG, bytes.fromhex("91040e008150") + moving
         + bytes.fromhex("64040e008150") + STATUS_P2_85DEG),
    ]) as mpc:
        assert mpc.move_to(2, 85.0).position_deg == pytest.approx(85.0, abs=0.2)


def test_enable_home_and_status_frames():
    with expected_protocol(ThorlabsMpc320, [
        (bytes.fromhex("100204015001"), None),
        (bytes.fromhex("430401005001"), bytes.fromhex("440401000150")),
        (bytes.fromhex("900401005001"),
         bytes.fromhex("91040e008150") + bytes.fromhex("0100" "00000000" "0000" "0000"
                                                       "00040080")),
    ]) as mpc:
        mpc.enable_paddle(3)
        mpc.home(1)
        status = mpc.paddle_status(1)
    assert status.paddle == 1 and status.position_deg == 0.0 and status.homed


def test_identify_decodes_hw_info():
    info = apt.HwInfo(38000001, "MPC320", 16, "1.0.3", "sim", 1, 0, 3)
    reply = apt.encode(apt.AptMessage(apt.HW_GET_INFO, data=apt.pack_hw_info(info)))
    with expected_protocol(ThorlabsMpc320, [(bytes.fromhex("050000005001"), reply)]) as mpc:
        assert mpc.identify() == info


@pytest.mark.parametrize("paddle,deg,pattern", [
    (0, 10.0, "paddle 0 outside 1..3"), (4, 10.0, "paddle 4"),
    (1, 170.5, r"position 170.5 deg outside \[0.0, 170.0\] deg"), (1, -1, "position -1"),
    (1, "x", "position 'x'"),
])
def test_out_of_range_sends_nothing(paddle, deg, pattern):
    with expected_protocol(ThorlabsMpc320, []) as mpc:
        with pytest.raises(SettingOutOfRange, match=pattern):
            mpc.move_to(paddle, deg)


def test_set_paddles_validates_all_first():
    with expected_protocol(ThorlabsMpc320, []) as mpc:
        with pytest.raises(SettingOutOfRange, match="position 200"):
            mpc.set_paddles([10.0, 20.0, 200])


def test_no_completion_is_a_timeout_naming_the_message(monkeypatch):
    monkeypatch.setattr(ThorlabsMpc320, "MOVE_TIMEOUT_S", 0.0)
    with expected_protocol(ThorlabsMpc320, [(MOVE_P2_85DEG, None)]) as mpc:
        with pytest.raises(DeviceTimeout, match=r"MOT_MOVE_ABSOLUTE.*no 0x0464 reply"):
            mpc.move_to(2, 85.0)


def test_short_status_is_a_protocol_error():
    with expected_protocol(ThorlabsMpc320, [
        (bytes.fromhex("900401005001"), bytes.fromhex("910402008150" "0100")),
    ]) as mpc:
        with pytest.raises(DeviceProtocolError, match="status data is 2 bytes"):
            mpc.paddle_status(1)


messages = st.one_of(
    st.builds(apt.AptMessage, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255),
              st.none(), st.integers(0, 0x7F), st.integers(0, 255)),
    st.builds(apt.AptMessage, st.integers(0, 0xFFFF), st.just(0), st.just(0),
              st.binary(max_size=apt.MAX_DATA_BYTES), st.integers(0, 0x7F), st.integers(0, 255)),
)


@given(st.lists(messages, max_size=8), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_decoder_recovers_every_message_under_any_chunking(msgs, sizes):
    stream = b"".join(apt.encode(m) for m in msgs)
    decoder, out, i, pos = apt.AptDecoder(), [], 0, 0
    while pos < len(stream):
        step = sizes[i % len(sizes)]
        out += decoder.feed(stream[pos:pos + step])
        pos += step
        i += 1
    assert out == msgs and decoder.pending_bytes == 0


def test_decoder_refuses_absurd_length():
    with pytest.raises(apt.AptFrameError, match="claims 4096 data bytes"):
        apt.AptDecoder().feed(bytes.fromhex("640400108150"))

"""Thorlabs MPC320 motorised fibre polarization controller (three paddles), APT binary protocol.

The paddles are fibre loops acting as lambda/4, lambda/2, lambda/4 waveplates; turning a paddle
(0..170 degrees) turns the waveplate's axis. Commands and replies are APT frames (``apt``):
a move is answered by MOVE_COMPLETED only when the paddle has arrived, so moves wait with their
own longer timeout. 115200 baud, RTS/CTS, over the controller's USB serial port.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from drivers.base import Driver
from drivers.errors import DeviceTimeout, SettingOutOfRange
from drivers.polarization import apt
from drivers.registry import register


@dataclass(frozen=True)
class PaddleStatus:
    paddle: int                # 1..3
    position_deg: float
    velocity: int              # raw controller units
    motor_current_ma: int
    moving: bool
    homed: bool
    enabled: bool


@register("thorlabs-mpc320")
class ThorlabsMpc320(Driver):
    TRANSPORT_DEFAULTS: ClassVar[dict] = {"baudrate": 115200, "rtscts": True}

    N_PADDLES: ClassVar[int] = 3
    PADDLE_CHANNELS: ClassVar[tuple[int, ...]] = (0x01, 0x02, 0x04)   # APT channel idents
    MIN_POSITION_DEG: ClassVar[float] = 0.0
    MAX_POSITION_DEG: ClassVar[float] = 170.0
    COUNTS_PER_DEG: ClassVar[float] = 1370 / 170.0    # encoder counts over the paddle travel
    MOVE_TIMEOUT_S: ClassVar[float] = 5.0             # full sweep at the slowest velocity

    def __init__(self, transport, *, name: str | None = None):
        super().__init__(transport, name=name)
        self._decoder = apt.AptDecoder()

    # -- frames -------------------------------------------------------------------------------

    def _channel(self, paddle, command: str) -> int:
        if isinstance(paddle, bool) or not isinstance(paddle, int) or \
                not 1 <= paddle <= self.N_PADDLES:
            raise SettingOutOfRange(self.name, command,
                                    f"paddle {paddle!r} outside 1..{self.N_PADDLES}")
        return self.PADDLE_CHANNELS[paddle - 1]

    def _request(self, frame: bytes, reply_id: int | None, command: str,
                 timeout_s: float | None = None, channel: int | None = None):
        """Send ``frame``; wait for the ``reply_id`` message (for ``channel`` if given)."""
        def run():
            self._decoder.clear()
            self.transport.write(frame)
            if reply_id is None:
                return None
            return self._await(reply_id, command, None, channel)
        return self.exchange(run, timeout_s)

    def _await(self, reply_id: int, command: str, timeout_s: float | None,
               channel: int | None) -> apt.AptMessage:
        wait_s = self.time_left(timeout_s)
        deadline = time.monotonic() + wait_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = self.transport.read_some(256, max(0.0, remaining))
            except DeviceTimeout:
                raise DeviceTimeout(self.name, command,
                                    f"no 0x{reply_id:04x} reply within {wait_s:g} s") from None
            try:
                messages = self._decoder.feed(data)
            except apt.AptFrameError as exc:
                raise self.reply_error(command, str(exc)) from exc
            for msg in messages:   # controllers also push messages nobody asked for: skip them
                if msg.message_id == reply_id and (channel is None or
                                                   self._reply_channel(msg) == channel):
                    return msg

    @staticmethod
    def _reply_channel(msg: apt.AptMessage) -> int:
        if msg.data is not None and len(msg.data) >= 2:
            return int.from_bytes(msg.data[:2], "little")
        return msg.param1

    def _status_from(self, msg: apt.AptMessage, command: str) -> PaddleStatus:
        try:
            st = apt.unpack_ustatus(msg.data or b"")
        except apt.AptFrameError as exc:
            raise self.reply_error(command, str(exc)) from exc
        if st.channel not in self.PADDLE_CHANNELS:
            raise self.reply_error(command, f"status for unknown channel {st.channel}")
        bits = st.status_bits
        return PaddleStatus(
            paddle=self.PADDLE_CHANNELS.index(st.channel) + 1,
            position_deg=st.position_counts / self.COUNTS_PER_DEG,
            velocity=st.velocity, motor_current_ma=st.motor_current_ma,
            moving=bool(bits & (apt.STATUS_MOVING_FORWARD | apt.STATUS_MOVING_REVERSE)),
            homed=bool(bits & apt.STATUS_HOMED), enabled=bool(bits & apt.STATUS_ENABLED))

    # -- the instrument -----------------------------------------------------------------------

    def identify(self) -> apt.HwInfo:
        msg = self._request(apt.host_command(apt.HW_REQ_INFO), apt.HW_GET_INFO, "HW_REQ_INFO")
        try:
            return apt.unpack_hw_info(msg.data or b"")
        except apt.AptFrameError as exc:
            raise self.reply_error("HW_REQ_INFO", str(exc)) from exc

    def enable_paddle(self, paddle: int, enabled: bool = True) -> None:
        channel = self._channel(paddle, "MOD_SET_CHANENABLESTATE")
        self._request(apt.host_command(apt.MOD_SET_CHANENABLESTATE, channel,
                                       0x01 if enabled else 0x02), None,
                      "MOD_SET_CHANENABLESTATE")
        self.remember(f"enable{paddle}", self.enable_paddle, paddle, enabled)

    def home(self, paddle: int) -> None:
        channel = self._channel(paddle, "MOT_MOVE_HOME")
        self._request(apt.host_command(apt.MOT_MOVE_HOME, channel), apt.MOT_MOVE_HOMED,
                      "MOT_MOVE_HOME", self.MOVE_TIMEOUT_S, channel)

    def move_to(self, paddle: int, position_deg: float) -> PaddleStatus:
        """Turn ``paddle`` to ``position_deg`` and wait until it is there."""
        command = "MOT_MOVE_ABSOLUTE"
        channel = self._channel(paddle, command)
        self._check_position(command, position_deg)
        counts = round(position_deg * self.COUNTS_PER_DEG)
        frame = apt.host_command(apt.MOT_MOVE_ABSOLUTE,
                                 data=apt.pack_move_absolute(channel, counts))
        msg = self._request(frame, apt.MOT_MOVE_COMPLETED, command, self.MOVE_TIMEOUT_S, channel)
        status = self._status_from(msg, command)
        self.remember(f"paddle{paddle}", self.move_to, paddle, position_deg)
        return status

    def set_paddles(self, positions_deg: Sequence[float]) -> None:
        if len(positions_deg) != self.N_PADDLES:
            raise SettingOutOfRange(self.name, None, f"{len(positions_deg)} positions given, "
                                                     f"the MPC320 has {self.N_PADDLES} paddles")
        for position in positions_deg:
            self._check_position("MOT_MOVE_ABSOLUTE", position)
        with self._io_lock:
            for paddle, position in enumerate(positions_deg, start=1):
                self.move_to(paddle, position)

    def paddle_status(self, paddle: int) -> PaddleStatus:
        command = "MOT_REQ_USTATUSUPDATE"
        channel = self._channel(paddle, command)
        msg = self._request(apt.host_command(apt.MOT_REQ_USTATUSUPDATE, channel),
                            apt.MOT_GET_USTATUSUPDATE, command, None, channel)
        return self._status_from(msg, command)

    def _check_position(self, command: str, position_deg) -> None:
        try:
            ok = self.MIN_POSITION_DEG <= float(position_deg) <= self.MAX_POSITION_DEG
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SettingOutOfRange(self.name, command,
                                    f"position {position_deg!r} deg outside "
                                    f"[{self.MIN_POSITION_DEG}, {self.MAX_POSITION_DEG}] deg")

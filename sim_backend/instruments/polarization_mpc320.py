"""Simulated Thorlabs MPC320 (three motorised fibre paddles) speaking APT binary frames.

Paddle k is a waveplate of retardance pi/2, pi, pi/2 whose axis turns with the paddle angle
theta: on the Poincare sphere a rotation by the retardance about (cos 2theta, sin 2theta, 0).
The controller rotation written to LinkControls is paddle 3 @ paddle 2 @ paddle 1. Moves
complete at once (the twin does not model travel time). The framing is parsed here
independently of the driver's codec: the bytes on the wire are the contract.
"""

from __future__ import annotations

import struct

import numpy as np

from sim_backend.controls import LinkControls
from sim_backend.instruments.base import SimInstrument
from sim_backend.instruments.polarization_rotations import squeezer_rotation

CHANNELS = (0x01, 0x02, 0x04)
RETARDANCES_RAD = (np.pi / 2, np.pi, np.pi / 2)
MAX_COUNTS = 1370                 # 170 degrees of paddle travel
DEG_PER_COUNT = 170.0 / MAX_COUNTS
HOST, DEVICE = 0x01, 0x50

HW_REQ_INFO, HW_GET_INFO = 0x0005, 0x0006
SET_ENABLE, REQ_ENABLE, GET_ENABLE = 0x0210, 0x0211, 0x0212
MOVE_HOME, MOVE_HOMED = 0x0443, 0x0444
MOVE_ABSOLUTE, MOVE_COMPLETED = 0x0453, 0x0464
REQ_STATUS, GET_STATUS = 0x0490, 0x0491
HOMED_BIT, ENABLED_BIT = 0x00000400, 0x80000000


def paddle_rotation(angles_deg) -> np.ndarray:
    axes = [np.array([np.cos(2 * np.radians(a)), np.sin(2 * np.radians(a)), 0.0])
            for a in angles_deg]
    return squeezer_rotation(RETARDANCES_RAD, axes)


def _frame(message_id: int, data: bytes | None = None, p1: int = 0, p2: int = 0) -> bytes:
    if data is None:
        return struct.pack("<HBBBB", message_id, p1, p2, HOST, DEVICE)
    return struct.pack("<HHBB", message_id, len(data), HOST | 0x80, DEVICE) + data


class Mpc320Sim(SimInstrument):
    SERIAL_NUMBER = 38000001

    def __init__(self, controls: LinkControls | None = None):
        super().__init__()
        self.controls = controls if controls is not None else LinkControls()
        self.positions = [0, 0, 0]          # encoder counts
        self.enabled = [True, True, True]
        self.homed = [False, False, False]
        self.received: list[int] = []       # message ids, for tests
        self._apply()

    def power_on(self) -> None:
        self.positions = [0, 0, 0]
        self.enabled = [True, True, True]
        self.homed = [False, False, False]
        self._apply()

    def respond(self, buffer: bytearray) -> bytes:
        out = bytearray()
        while len(buffer) >= 6:
            message_id, a, b, dest, _source = struct.unpack_from("<HBBBB", buffer)
            data = None
            if dest & 0x80:
                length = a | (b << 8)
                if len(buffer) < 6 + length:
                    break
                data = bytes(buffer[6:6 + length])
                del buffer[:6 + length]
            else:
                del buffer[:6]
            with self.lock:
                self.received.append(message_id)
                out += self._handle(message_id, a, b, data)
        return bytes(out)

    def _status(self, k: int) -> bytes:
        bits = (HOMED_BIT if self.homed[k] else 0) | (ENABLED_BIT if self.enabled[k] else 0)
        return struct.pack("<HiHhI", CHANNELS[k], self.positions[k], 0, 0, bits)

    def _handle(self, message_id: int, p1: int, p2: int, data: bytes | None) -> bytes:
        if message_id == HW_REQ_INFO:
            info = struct.pack("<I8sH4s48s12sHHH", self.SERIAL_NUMBER, b"MPC320", 16,
                               bytes((3, 0, 1, 0)), b"MPC320 polarization controller (sim)",
                               bytes(12), 1, 0, 3)
            return _frame(HW_GET_INFO, info)
        if message_id in (SET_ENABLE, REQ_ENABLE, MOVE_HOME, REQ_STATUS) and p1 in CHANNELS:
            k = CHANNELS.index(p1)
            if message_id == SET_ENABLE and p2 in (1, 2):
                self.enabled[k] = p2 == 1
                return b""
            if message_id == REQ_ENABLE:
                return _frame(GET_ENABLE, p1=p1, p2=1 if self.enabled[k] else 2)
            if message_id == MOVE_HOME and self.enabled[k]:
                self.positions[k], self.homed[k] = 0, True
                self._apply()
                return _frame(MOVE_HOMED, p1=p1)
            if message_id == REQ_STATUS:
                return _frame(GET_STATUS, self._status(k))
            return b""
        if message_id == MOVE_ABSOLUTE and data is not None and len(data) == 6:
            channel, counts = struct.unpack("<Hi", data)
            if channel in CHANNELS and 0 <= counts <= MAX_COUNTS:
                k = CHANNELS.index(channel)
                if self.enabled[k]:
                    self.positions[k] = counts
                    self._apply()
                    return _frame(MOVE_COMPLETED, self._status(k))
        return b""                               # refused or unknown: the MPC320 stays silent

    def angles_deg(self) -> list[float]:
        return [c * DEG_PER_COUNT for c in self.positions]

    def _apply(self) -> None:
        rotation = paddle_rotation(self.angles_deg())
        with self.controls.lock:
            self.controls.controller_rotation = rotation

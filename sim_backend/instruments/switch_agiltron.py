"""Simulated Agiltron 1xN switch: binary ``01 12 00 <ch>`` (echoed) and ``01 11 00 00`` (query).

Frames are 4 bytes with no terminator; a frame with an unknown opcode or an invalid channel is
swallowed without an answer, as the real switch does.
"""

from __future__ import annotations

from sim_backend.controls import LinkControls
from sim_backend.instruments.base import SimInstrument

FRAME_BYTES = 4
POWER_ON_PORT = 1


class AgiltronSwitchSim(SimInstrument):
    def __init__(self, controls: LinkControls | None = None, n_ports: int = 8):
        super().__init__()
        self.controls = controls if controls is not None else LinkControls()
        self.n_ports = n_ports
        self.frames: list[bytes] = []      # every frame received, for tests

    def respond(self, buffer: bytearray) -> bytes:
        out = bytearray()
        while len(buffer) >= FRAME_BYTES:
            if buffer[0] != 0x01:          # resynchronise on the start byte
                del buffer[0]
                continue
            frame = bytes(buffer[:FRAME_BYTES])
            del buffer[:FRAME_BYTES]
            with self.lock:
                self.frames.append(frame)
                out += self._handle(frame)
        return bytes(out)

    def _handle(self, frame: bytes) -> bytes:
        _, opcode, _, channel = frame
        if opcode == 0x12 and frame[2] == 0 and 1 <= channel <= self.n_ports:
            with self.controls.lock:
                self.controls.switch_port = channel
            return frame
        if opcode == 0x11 and frame[2:] == b"\x00\x00":
            with self.controls.lock:
                return bytes((0x01, 0x11, 0x00, self.controls.switch_port))
        return b""

    def power_on(self) -> None:
        with self.controls.lock:
            self.controls.switch_port = POWER_ON_PORT

    def garble(self, reply: bytes) -> bytes:
        return bytes((b ^ 0x5A) for b in reply)

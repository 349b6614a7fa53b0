"""Simulated DiCon MEMS 1xN switch: ``I1 <n>`` routes LinkControls.switch_port, ``I1?`` reads it."""

from __future__ import annotations

from sim_backend.controls import LinkControls
from sim_backend.instruments.base import LineInstrument


class DiconMemsSim(LineInstrument):
    REPLY_TERMINATOR = b"\r\n"
    POWER_ON_PORT = 1     # a non-latching MEMS switch falls back to port 1 without power

    def __init__(self, controls: LinkControls | None = None, n_ports: int = 8):
        super().__init__()
        self.controls = controls if controls is not None else LinkControls()
        self.n_ports = n_ports

    def handle_line(self, line: str):
        text = " ".join(line.upper().split())
        if text == "I1?":
            with self.controls.lock:
                return str(self.controls.switch_port)
        if text.startswith("I1 "):
            try:
                port = int(text[3:])
            except ValueError:
                return "ERR 2"           # malformed argument
            if not 1 <= port <= self.n_ports:
                return "ERR 3"           # port out of range
            with self.controls.lock:
                self.controls.switch_port = port
            return None
        return "ERR 1"                   # unknown command

    def power_on(self) -> None:
        with self.controls.lock:
            self.controls.switch_port = self.POWER_ON_PORT

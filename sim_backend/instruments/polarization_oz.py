"""Simulated OZ Optics EPC (four fibre squeezers) speaking its ``V<ch>,<mV>`` text protocol.

Each squeezer is a variable waveplate: voltage -> retardance ``delta = pi * V / V_PI_MV``; the
fast axes alternate between H (S1) and 45 degrees (S2), so four squeezers reach any rotation.
The controller rotation written to LinkControls is the product of the four (channel 1 acts
first).
"""

from __future__ import annotations

import numpy as np

from sim_backend.controls import LinkControls
from sim_backend.instruments.base import LineInstrument
from sim_backend.instruments.polarization_rotations import squeezer_rotation

N_CHANNELS = 4
MIN_VOLTAGE_MV, MAX_VOLTAGE_MV = -5000, 5000
V_PI_MV = 2000.0                                  # half-wave voltage of one squeezer
SQUEEZER_AXES = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                 np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))


def epc_rotation(voltages_mv) -> np.ndarray:
    retardances = [np.pi * v / V_PI_MV for v in voltages_mv]
    return squeezer_rotation(retardances, SQUEEZER_AXES)


class OzEpcSim(LineInstrument):
    REPLY_TERMINATOR = b"\r\n"

    def __init__(self, controls: LinkControls | None = None):
        super().__init__()
        self.controls = controls if controls is not None else LinkControls()
        self.voltages_mv = [0] * N_CHANNELS
        self._apply()

    def handle_line(self, line: str):
        text = line.strip().upper()
        if text == "V?":
            return [",".join(str(v) for v in self.voltages_mv), "Done"]
        if text.startswith("V") and "," in text:
            channel_text, _, voltage_text = text[1:].partition(",")
            try:
                channel, voltage = int(channel_text), int(voltage_text)
            except ValueError:
                return ["ERROR: bad number", "Done"]
            if not 1 <= channel <= N_CHANNELS:
                return [f"ERROR: channel {channel} out of range", "Done"]
            if not MIN_VOLTAGE_MV <= voltage <= MAX_VOLTAGE_MV:
                return [f"ERROR: voltage {voltage} out of range", "Done"]
            self.voltages_mv[channel - 1] = voltage
            self._apply()
            return [f"V{channel},{voltage}", "Done"]
        return ["ERROR: unknown command", "Done"]

    def power_on(self) -> None:
        self.voltages_mv = [0] * N_CHANNELS
        self._apply()

    def _apply(self) -> None:
        rotation = epc_rotation(self.voltages_mv)
        with self.controls.lock:
            self.controls.controller_rotation = rotation

"""Alice's polarization modulator, driven through the QKD timing board (firmware_protocol).

The modulator has no port of its own: the board's FPGA sets its drive voltage per slot from the
pattern byte (layout in ``firmware_protocol.wire_facts``) and a calibration table of one drive
level per polarization state H, V, D, A. This driver loads that table and host-supplied pattern
chunks (PatternUpload, SPEC.md section 3); both are checked here against the limits the board
applies, so a bad value fails before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import ClassVar

import numpy as np

from drivers.board.qkd_board import QkdBoard
from drivers.errors import SettingOutOfRange
from drivers.registry import register
from firmware_protocol import (Ack, ModulatorCalibration, PatternUpload,
                               first_invalid_pattern_byte)
from firmware_protocol.messages import PATTERN_REQUEST_MAX_SLOTS
from firmware_protocol.wire_facts import MODULATOR_DRIVE_MAX_V, MODULATOR_DRIVE_MIN_V


@dataclass(frozen=True)
class ModulatorCalibrationLevels:
    drive_h_v: float
    drive_v_v: float
    drive_d_v: float
    drive_a_v: float


@register("board-modulator")
class BoardModulator(QkdBoard):
    """The modulator functions of an Alice board (it is a QkdBoard connection as well)."""

    MIN_DRIVE_V: ClassVar[float] = MODULATOR_DRIVE_MIN_V
    MAX_DRIVE_V: ClassVar[float] = MODULATOR_DRIVE_MAX_V
    MAX_UPLOAD_SLOTS: ClassVar[int] = PATTERN_REQUEST_MAX_SLOTS

    calibration: ModulatorCalibrationLevels | None = None

    def load_calibration(self, levels: ModulatorCalibrationLevels) -> None:
        for state, level in zip("HVDA", astuple(levels)):
            if not (isinstance(level, (int, float)) and math.isfinite(level)
                    and self.MIN_DRIVE_V <= level <= self.MAX_DRIVE_V):
                raise SettingOutOfRange(self.name, "ModulatorCalibration",
                                        f"drive level for {state} = {level!r} V is outside "
                                        f"[{self.MIN_DRIVE_V:g}, {self.MAX_DRIVE_V:g}] V")
        self._request(ModulatorCalibration(*map(float, astuple(levels))), Ack)
        self.calibration = levels
        self.remember("calibration", self.load_calibration, levels)

    def load_pattern(self, first_slot: int, pattern) -> int:
        """Upload pattern bytes for slots from ``first_slot``; returns the next slot number."""
        pattern = np.ascontiguousarray(pattern)
        if pattern.dtype != np.uint8 or pattern.ndim != 1:
            raise SettingOutOfRange(self.name, "PatternUpload",
                                    f"pattern must be a 1-D uint8 array, got {pattern.dtype} "
                                    f"with shape {pattern.shape}")
        if not 0 <= first_slot <= 2**64 - 1 - pattern.size:
            raise SettingOutOfRange(self.name, "PatternUpload",
                                    f"first_slot {first_slot} outside [0, 2^64 - pattern size]")
        bad = first_invalid_pattern_byte(pattern)
        if bad >= 0:
            # The byte itself is key material: name the slot only.
            raise SettingOutOfRange(self.name, "PatternUpload",
                                    f"pattern byte for slot {first_slot + bad} is invalid "
                                    f"(bits 4-7 must be 0, intensity index 0..2)")
        for lo in range(0, pattern.size, self.MAX_UPLOAD_SLOTS):
            part = pattern[lo:lo + self.MAX_UPLOAD_SLOTS]
            self._request(PatternUpload(first_slot + lo, part), Ack)
        return first_slot + pattern.size

    def stream_patterns(self, first_slot: int, chunks: Iterable) -> int:
        """Upload consecutive chunks (e.g. from a generator); returns the next slot number."""
        slot = first_slot
        for chunk in chunks:
            slot = self.load_pattern(slot, chunk)
        return slot

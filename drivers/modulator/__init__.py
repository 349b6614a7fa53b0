"""Alice's polarization modulator drivers."""

from drivers.modulator.board_modulator import BoardModulator, ModulatorCalibrationLevels

__all__ = ["BoardModulator", "ModulatorCalibrationLevels"]

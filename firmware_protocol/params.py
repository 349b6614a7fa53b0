"""Board parameters addressable by id: their wire type, unit and the range a board accepts.

The table is part of the protocol (SPEC.md section 4) so that the host driver can refuse a value
before sending it and the board can answer an out-of-range value with a typed nack, both against
the same limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum


class ParamId(IntEnum):
    CLOCK_HZ = 0x0001              # pulse (slot) clock
    SYNC_PERIOD = 0x0002           # slots between sync opportunities
    MU = 0x0003                    # signal mean photon number
    NU1 = 0x0004                   # decoy 1 mean photon number
    NU2 = 0x0005                   # decoy 2 (weakest) mean photon number
    P_SIGNAL = 0x0006              # probability of the signal intensity
    P_DECOY1 = 0x0007              # probability of decoy 1 (decoy 2 takes the rest)
    P_BASIS_X = 0x0008             # probability of the X (diagonal) basis
    SYNC_KEY = 0x0009              # read-only: key of the public sync on/off sequence (sync.py)
    GATE_WIDTH_PS = 0x0010         # detector gate width
    GATE_DELAY_PS = 0x0011         # detector gate delay after the slot clock edge
    DEAD_TIME_NS = 0x0012          # detector dead time
    DETECTOR_ENABLE_MASK = 0x0013  # bit i enables detector channel i (0 = H .. 3 = A)
    BATCH_SLOTS = 0x0020           # slots covered by one event batch


class ValueKind(IntEnum):
    """Wire tag of a parameter value (one byte before the 8 value bytes)."""

    INT64 = 1
    FLOAT64 = 2


@dataclass(frozen=True)
class ParamSpec:
    param: ParamId
    kind: ValueKind
    minimum: float
    maximum: float
    unit: str

    def problem(self, value) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None if it is."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.param.name} must be a number, got {value!r}"
        if self.kind is ValueKind.INT64 and not float(value).is_integer():
            return f"{self.param.name} must be an integer, got {value!r}"
        if not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            return (f"{self.param.name} = {value!r} {self.unit} is outside "
                    f"[{self.minimum:g}, {self.maximum:g}] {self.unit}")
        return None

    def coerce(self, value):
        """``value`` as the Python type of this parameter's wire kind."""
        return int(value) if self.kind is ValueKind.INT64 else float(value)


def _spec(param, kind, lo, hi, unit):
    return param, ParamSpec(param, kind, lo, hi, unit)


PARAMETERS: dict[ParamId, ParamSpec] = dict((
    _spec(ParamId.CLOCK_HZ, ValueKind.FLOAT64, 1e6, 10e9, "Hz"),
    _spec(ParamId.SYNC_PERIOD, ValueKind.INT64, 2, 2**20, "slots"),
    _spec(ParamId.MU, ValueKind.FLOAT64, 0.0, 2.0, "photons"),
    _spec(ParamId.NU1, ValueKind.FLOAT64, 0.0, 2.0, "photons"),
    _spec(ParamId.NU2, ValueKind.FLOAT64, 0.0, 2.0, "photons"),
    _spec(ParamId.P_SIGNAL, ValueKind.FLOAT64, 0.0, 1.0, ""),
    _spec(ParamId.P_DECOY1, ValueKind.FLOAT64, 0.0, 1.0, ""),
    _spec(ParamId.P_BASIS_X, ValueKind.FLOAT64, 0.0, 1.0, ""),
    _spec(ParamId.SYNC_KEY, ValueKind.INT64, 0, 2**63 - 1, ""),
    _spec(ParamId.GATE_WIDTH_PS, ValueKind.INT64, 50, 100_000, "ps"),
    _spec(ParamId.GATE_DELAY_PS, ValueKind.INT64, 0, 10_000_000, "ps"),
    _spec(ParamId.DEAD_TIME_NS, ValueKind.FLOAT64, 0.0, 100_000.0, "ns"),
    _spec(ParamId.DETECTOR_ENABLE_MASK, ValueKind.INT64, 0, 0xF, ""),
    _spec(ParamId.BATCH_SLOTS, ValueKind.INT64, 1_000, 2**28, "slots"),
))


READ_ONLY = frozenset({ParamId.SYNC_KEY})
"""Parameters a board reports but refuses to set (Nack READ_ONLY_PARAMETER)."""


def param_id(value: int):
    """A known ``ParamId`` or the raw integer (a newer board may define more ids)."""
    try:
        return ParamId(value)
    except ValueError:
        return int(value)

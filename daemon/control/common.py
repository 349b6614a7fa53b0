"""What the loops share: the QBER measured over a window, config errors, the status dict."""

from __future__ import annotations

import math
from dataclasses import dataclass


class ControlConfigError(ValueError):
    """A control-loop setting outside its accepted range (one line: name, value, range)."""


def check_range(name: str, value, lo: float, hi: float, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        suffix = f" {unit}" if unit else ""
        raise ControlConfigError(f"{name} = {value!r}{suffix} is outside the accepted range "
                                 f"[{lo:g}, {hi:g}]{suffix}")


@dataclass(frozen=True)
class QberWindow:
    """Sifted bits and errors measured between ``t0_s`` and ``t1_s`` (link time, seconds).

    Basis-resolved counts are optional: ``z`` is the rectilinear (H/V) basis, ``x`` the
    diagonal (D/A) one. ``sifted``/``errors`` are the totals.
    """

    t0_s: float
    t1_s: float
    sifted: int
    errors: int
    sifted_z: int | None = None
    errors_z: int | None = None
    sifted_x: int | None = None
    errors_x: int | None = None

    @property
    def qber(self) -> float:
        return self.errors / self.sifted if self.sifted else math.nan

    @property
    def qber_z(self) -> float:
        return self.errors_z / self.sifted_z if self.sifted_z else math.nan

    @property
    def qber_x(self) -> float:
        return self.errors_x / self.sifted_x if self.sifted_x else math.nan


def loop_status(state: str, last_action: str | None, alarms: dict[str, str],
                **figures) -> dict:
    """The dict a loop shows in ``qkd-node status`` (JSON-able)."""
    return {"state": state, "last_action": last_action, "alarms": dict(alarms), **figures}

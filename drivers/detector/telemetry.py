"""Detector telemetry records and the blinding indicators a detector driver can see.

Bright-light blinding turns avalanche photodiodes into classical threshold detectors: the bias
sags, the photocurrent rises far above its dark level, and the clicks follow the attacker rather
than single photons (rate pinned high, or pulled down to almost nothing). The countermeasures of
docs/physics.md section 8 that need nothing but the detector's own telemetry are checked here, as a
pure function over a history of readings, so a control loop (or a test) can run them without an
instrument. Double clicks, invalid patterns and inter-arrival statistics need the time tagger and
belong elsewhere.

Every alarm names a time window (from the last good reading before the violation to the first
good reading after it) because the daemon discards keys from the whole affected window, and the
attack may have started any time after the last reading that looked clean.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Telemetry:
    """One reading of a detector unit; every tuple holds one value per detector channel."""

    timestamp_s: float                   # UNIX time at which the reading completed
    counts: tuple[int, ...]              # clicks since the instrument started (monotonic)
    count_rate_hz: tuple[float, ...]     # clicks per second over the instrument's last gate
    bias_setpoint_v: float               # bias the unit was told to hold
    bias_v: tuple[float, ...]            # measured bias
    photocurrent_ua: tuple[float, ...]   # measured APD photocurrent
    temperature_c: tuple[float, ...]     # APD temperature

    @property
    def n_channels(self) -> int:
        return len(self.counts)


class BlindingLimitsError(ValueError):
    """A blinding limit is inconsistent; the message names the value and the accepted range."""


@dataclass(frozen=True)
class BlindingLimits:
    """Alarm thresholds; a rate floor of ``None`` disables that check (e.g. while not acquiring)."""

    photocurrent_ceiling_ua: float = 1.0
    max_bias_sag_v: float = 2.0
    click_rate_ceiling_hz: float = 5.0e6
    click_rate_floor_hz: float | None = None

    def __post_init__(self):
        for name in ("photocurrent_ceiling_ua", "max_bias_sag_v", "click_rate_ceiling_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise BlindingLimitsError(f"{name}={value!r}: must be a finite number > 0")
        floor = self.click_rate_floor_hz
        if floor is not None and not (math.isfinite(floor)
                                      and 0 <= floor < self.click_rate_ceiling_hz):
            raise BlindingLimitsError(
                f"click_rate_floor_hz={floor!r}: must be in [0, click_rate_ceiling_hz="
                f"{self.click_rate_ceiling_hz!r}) or None")


class Indicator(enum.StrEnum):
    PHOTOCURRENT_HIGH = "photocurrent_high"
    BIAS_SAG = "bias_sag"
    CLICK_RATE_HIGH = "click_rate_high"
    CLICK_RATE_LOW = "click_rate_low"


@dataclass(frozen=True)
class Alarm:
    """One uninterrupted run of readings in which ``indicator`` fired on ``channel``.

    ``start_s``..``end_s`` is the window whose keys are suspect: from the last clean reading
    before the run (or the run's first reading if the history starts inside it) to the first
    clean reading after it (or the run's last reading if it is still ``ongoing``).
    """

    indicator: Indicator
    channel: int
    start_s: float
    end_s: float
    ongoing: bool
    worst_value: float    # in the unit of the limit: uA, V of sag, or Hz
    limit: float
    n_readings: int

    def __str__(self) -> str:
        state = "ongoing" if self.ongoing else "ended"
        return (f"{self.indicator} on channel {self.channel}: worst {self.worst_value:g} vs limit "
                f"{self.limit:g} over {self.n_readings} reading(s), window "
                f"{self.start_s:.3f}..{self.end_s:.3f} s ({state})")


def _violations(reading: Telemetry, channel: int, limits: BlindingLimits):
    """Yield ``(indicator, value, limit)`` for each check this channel fails in this reading."""
    current = reading.photocurrent_ua[channel]
    if current > limits.photocurrent_ceiling_ua:
        yield Indicator.PHOTOCURRENT_HIGH, current, limits.photocurrent_ceiling_ua
    sag = reading.bias_setpoint_v - reading.bias_v[channel]
    if sag > limits.max_bias_sag_v:
        yield Indicator.BIAS_SAG, sag, limits.max_bias_sag_v
    rate = reading.count_rate_hz[channel]
    if rate > limits.click_rate_ceiling_hz:
        yield Indicator.CLICK_RATE_HIGH, rate, limits.click_rate_ceiling_hz
    if limits.click_rate_floor_hz is not None and rate < limits.click_rate_floor_hz:
        yield Indicator.CLICK_RATE_LOW, rate, limits.click_rate_floor_hz


def blinding_indicators(telemetry_history: Sequence[Telemetry],
                        limits: BlindingLimits) -> list[Alarm]:
    """Every run of consecutive readings that breaks a limit, per indicator and channel.

    ``telemetry_history`` must be in time order. Alarms come out ordered by start time, then
    channel, then indicator. A low click rate is compared as "below the floor" (a blinded
    detector can be held silent); every other indicator as "above the ceiling".
    """
    history = list(telemetry_history)
    if not history:
        return []
    n_channels = history[0].n_channels
    for k, reading in enumerate(history):
        if reading.n_channels != n_channels:
            raise ValueError(f"telemetry_history[{k}] has {reading.n_channels} channels, "
                             f"expected {n_channels} like the first reading")
        if k and reading.timestamp_s < history[k - 1].timestamp_s:
            raise ValueError(f"telemetry_history[{k}].timestamp_s={reading.timestamp_s} is "
                             f"earlier than the reading before it: history must be in time order")

    alarms: list[Alarm] = []
    # open runs: (indicator, channel) -> [first_index, last_index, worst_value, limit]
    open_runs: dict[tuple[Indicator, int], list] = {}

    def close(key, next_index: int | None):
        first, last, worst, limit = open_runs.pop(key)
        start_s = history[first - 1].timestamp_s if first > 0 else history[first].timestamp_s
        end_s = history[next_index].timestamp_s if next_index is not None else \
            history[last].timestamp_s
        alarms.append(Alarm(key[0], key[1], start_s, end_s, next_index is None, worst, limit,
                            last - first + 1))

    for k, reading in enumerate(history):
        seen = set()
        for channel in range(n_channels):
            for indicator, value, limit in _violations(reading, channel, limits):
                key = (indicator, channel)
                seen.add(key)
                run = open_runs.get(key)
                if run is None:
                    open_runs[key] = [k, k, value, limit]
                else:
                    run[1] = k
                    low = indicator is Indicator.CLICK_RATE_LOW
                    run[2] = min(run[2], value) if low else max(run[2], value)
        for key in [key for key in open_runs if key not in seen]:
            close(key, k)
    for key in list(open_runs):
        close(key, None)

    order = list(Indicator)
    alarms.sort(key=lambda a: (a.start_s, a.channel, order.index(a.indicator)))
    return alarms

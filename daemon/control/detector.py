"""Detector health and blinding: per-reading checks, alarms, and a ledger of suspect windows.

Bright-light blinding turns Bob's avalanche photodiodes into classical detectors the attacker
steers, with QBER and click rate looking normal. What still shows: photocurrent far above its
dark level, a sagging bias, click rates pinned above a ceiling or held below a floor, detectors
driven into dead-time saturation, and (with the time tagger's help) multi-clicks.
Every reading is checked; an alarm covers the interval from the last clean reading before it to
the first clean reading after it (the attack may have begun any time after the last reading
that looked clean), and the engine asks ``window_verdict(state, t0, t1)`` before keeping a
block: ``"ok"`` (clean readings on both sides, no alarm inside), ``"alarm"`` (no key from this
window) or ``"pending"`` (no clean reading after ``t1`` yet: ask again later).
All times are the node's acquisition clock in seconds (the same clock the engine stamps its
blocks with).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from daemon.control.common import check_range, loop_status
from drivers.detector.telemetry import BlindingLimits, Telemetry, blinding_indicators


@dataclass(frozen=True)
class TaggerCounts:
    """What the time tagger saw over ``t0_s..t1_s``: slots with a click, slots with >= 2."""

    t0_s: float
    t1_s: float
    detections: int
    multi_clicks: int


@dataclass(frozen=True)
class DetectorSample:
    reading: Telemetry
    tagger: TaggerCounts | None = None
    acquiring: bool = True            # the count-rate floor applies only while light is sent


@dataclass(frozen=True)
class DetectorConfig:
    limits: BlindingLimits = field(default_factory=BlindingLimits)
    dead_time_ns: float = 100.0           # the dead time the detectors are set to
    max_dead_fraction: float = 0.2        # rate x dead time above this: saturation
    max_multi_click_fraction: float = 0.05
    max_temperature_c: float = -40.0
    retention_s: float = 7 * 86400.0      # closed alarm intervals kept this long

    def __post_init__(self):
        check_range("dead_time_ns", self.dead_time_ns, 0.0, 1e6, "ns")
        check_range("max_dead_fraction", self.max_dead_fraction, 0.0, 1.0)
        check_range("max_multi_click_fraction", self.max_multi_click_fraction, 0.0, 1.0)
        check_range("max_temperature_c", self.max_temperature_c, -273.0, 100.0, "degC")
        check_range("retention_s", self.retention_s, 0.0, 1e9, "s")


@dataclass(frozen=True)
class AlarmInterval:
    """No key from ``start_s..end_s``; ``end_s`` is None while the alarm lasts."""

    start_s: float
    end_s: float | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class AlarmRaised:
    since_s: float
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return f"alarm raised since {self.since_s:.3f} s: " + "; ".join(self.reasons)


@dataclass(frozen=True)
class AlarmCleared:
    interval: AlarmInterval

    def describe(self) -> str:
        return (f"alarm cleared: no key from {self.interval.start_s:.3f}..."
                f"{self.interval.end_s:.3f} s")


@dataclass(frozen=True)
class DetectorState:
    last_clean_s: float | None = None
    last_reading_s: float | None = None
    open: AlarmInterval | None = None
    closed: tuple[AlarmInterval, ...] = ()
    active: tuple[tuple[str, str], ...] = ()
    readings: int = 0
    last_action: str | None = None


class DetectorLoop:
    """Checks each detector sample and keeps the ledger of windows with no key (pure)."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()

    def initial_state(self) -> DetectorState:
        return DetectorState()

    def check(self, sample: DetectorSample) -> dict[str, str]:
        """Alarms of one sample: name -> one line for the operator."""
        c, r = self.config, sample.reading
        limits = c.limits if sample.acquiring else dataclasses.replace(c.limits,
                                                                       click_rate_floor_hz=None)
        out: dict[str, str] = {}
        for a in blinding_indicators([r], limits):
            out[f"{a.indicator}:{a.channel}"] = (f"{a.indicator} on channel {a.channel}: "
                                                 f"{a.worst_value:g} vs limit {a.limit:g}")
        for ch, rate in enumerate(r.count_rate_hz):
            dead = rate * c.dead_time_ns * 1e-9
            if dead > c.max_dead_fraction:
                out[f"dead_time_saturation:{ch}"] = (
                    f"channel {ch} dead {dead:.0%} of the time ({rate:.3g} Hz x "
                    f"{c.dead_time_ns:g} ns) > {c.max_dead_fraction:.0%}")
        for ch, temp in enumerate(r.temperature_c):
            if not temp <= c.max_temperature_c:
                out[f"temperature_high:{ch}"] = (f"channel {ch} at {temp:g} degC, above "
                                                 f"{c.max_temperature_c:g} degC")
        t = sample.tagger
        if t is not None and t.detections > 0:
            frac = t.multi_clicks / t.detections
            if frac > c.max_multi_click_fraction:
                out["multi_clicks"] = (f"{frac:.2%} of detections are multi-clicks "
                                       f"(> {c.max_multi_click_fraction:.2%})")
        return out

    def step(self, state: DetectorState, sample: DetectorSample
             ) -> tuple[DetectorState, AlarmRaised | AlarmCleared | None]:
        now = sample.reading.timestamp_s
        if state.last_reading_s is not None and now < state.last_reading_s:
            raise ValueError(f"reading at {now} s is earlier than the last one at "
                             f"{state.last_reading_s} s: samples must come in time order")
        alarms = self.check(sample)
        closed = tuple(iv for iv in state.closed
                       if iv.end_s is not None and iv.end_s >= now - self.config.retention_s)
        action = None
        opened = state.open
        if alarms:
            since = state.last_clean_s if state.last_clean_s is not None else now
            if sample.tagger is not None:
                since = min(since, sample.tagger.t0_s)
            if opened is None:
                opened = AlarmInterval(since, None, tuple(sorted(alarms.values())))
                action = AlarmRaised(since, opened.reasons)
            else:
                reasons = tuple(sorted(set(opened.reasons) | set(alarms.values())))
                opened = AlarmInterval(min(opened.start_s, since), None, reasons)
            last_clean = state.last_clean_s
        else:
            if opened is not None:
                done = AlarmInterval(opened.start_s, now, opened.reasons)
                closed = closed + (done,)
                action = AlarmCleared(done)
                opened = None
            last_clean = now
        new = DetectorState(last_clean_s=last_clean, last_reading_s=now, open=opened,
                            closed=closed, active=tuple(sorted(alarms.items())),
                            readings=state.readings + 1,
                            last_action=action.describe() if action else state.last_action)
        return new, action

    @staticmethod
    def alarm_intervals(state: DetectorState) -> list[AlarmInterval]:
        """Every interval with no key, oldest first (the ongoing one last, ``end_s`` None)."""
        return list(state.closed) + ([state.open] if state.open is not None else [])

    @staticmethod
    def window_verdict(state: DetectorState, t0_s: float, t1_s: float) -> str:
        """``"ok"``, ``"alarm"`` or ``"pending"`` for a block acquired over ``t0_s..t1_s``."""
        if not t0_s <= t1_s:
            raise ValueError(f"window {t0_s}..{t1_s}: t0 must not be after t1")
        for iv in DetectorLoop.alarm_intervals(state):
            end = math.inf if iv.end_s is None else iv.end_s
            if t0_s <= end and t1_s >= iv.start_s:
                return "alarm"
        if state.open is None and state.last_clean_s is not None and state.last_clean_s >= t1_s:
            return "ok"
        return "pending"

    def status(self, state: DetectorState) -> dict:
        mode = "alarm" if state.open is not None else ("ok" if state.readings else "starting")
        return loop_status(mode, state.last_action, dict(state.active),
                           readings=state.readings,
                           no_key_intervals=[iv.to_dict() for iv in
                                             self.alarm_intervals(state)[-5:]])

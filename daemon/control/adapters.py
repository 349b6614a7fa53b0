"""The loops' only contact with hardware: read telemetry from a driver, step, apply the action.

One adapter per device kind holds its loop's state behind a lock. The runtime calls ``tick``
from a worker thread (drivers block), at the loop's period; ``status()`` and ``healthy()`` are
cheap and safe from the event loop. A driver error does not escape ``tick``: it marks the device
lost (``device_lost`` alarm, ``healthy()`` false, so the systemd watchdog stops being fed) until
a later tick succeeds. A loop whose last good tick is older than ``stale_after_s`` is unhealthy
too: a stalled loop must not look alive.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from daemon.control.common import ControlConfigError, QberWindow
from daemon.control.detector import (AlarmInterval, DetectorLoop, DetectorSample, TaggerCounts)
from daemon.control.polarization import (D_REF, H_REF, GpConfig, GpLoop, OzLoop,
                                         SopReading)
from daemon.control.switch import SwitchLoop, SwitchReading
from drivers.errors import DeviceError


class LoopAdapter:
    kind = "loop"

    def __init__(self, name: str, loop, state, *, stale_after_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.loop, self._state = name, loop, state
        self.stale_after_s = float(stale_after_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ok: float | None = None
        self._device_error: str | None = None

    @property
    def state(self):
        with self._lock:
            return self._state

    def _guarded(self, operation: Callable[[], object]):
        """Run one device exchange; a DeviceError marks the device lost and returns None."""
        try:
            result = operation()
        except DeviceError as exc:
            with self._lock:
                self._device_error = str(exc).splitlines()[0][:200]
            return None
        with self._lock:
            self._device_error = None
            self._last_ok = self._clock()
        return result

    @property
    def device_error(self) -> str | None:
        """The last device error, None once a tick succeeded again."""
        with self._lock:
            return self._device_error

    def healthy(self) -> bool:
        with self._lock:
            return (self._device_error is None and self._last_ok is not None
                    and self._clock() - self._last_ok <= self.stale_after_s)

    def status(self) -> dict:
        with self._lock:
            out = self.loop.status(self._state)
            age = None if self._last_ok is None else self._clock() - self._last_ok
            error = self._device_error
        out["kind"] = self.kind
        out["last_tick_age_s"] = age
        if error is not None:
            out["alarms"]["device_lost"] = error
        out["healthy"] = self.healthy()
        return out


class GpAdapter(LoopAdapter):
    """``drivers.polarization.gp_scpi.GpPolarizationController`` + ``GpLoop``.

    A node has one reference (Alice's H): the loop locks it and steers the twist about it on
    the X-basis QBER of finished blocks (``tick``'s ``qber``), by excursions of the lock target.
    With two references the loop asks for the next one after each step: ``select_reference(k)``
    makes Alice's reference light state ``k`` of ``GpConfig.references`` (only the simulator
    can, in-process: ``LinkControls.reference_sop``). Without a selector a two-reference loop
    is refused.
    """

    kind = "polarization-gp"

    def __init__(self, name: str, driver, loop: GpLoop | None = None, *,
                 select_reference: Callable[[int], None] | None = None,
                 stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        loop = loop or GpLoop(GpConfig(references=(H_REF, D_REF) if select_reference
                                       else (H_REF,)))
        if len(loop.config.references) > 1 and select_reference is None:
            raise ControlConfigError(f"{name}: {len(loop.config.references)} references "
                                     f"configured but no way to select Alice's reference light")
        super().__init__(name, loop, loop.initial_state(), stale_after_s=stale_after_s,
                         clock=clock)
        self.driver = driver
        self.select_reference = select_reference
        self._selected = False

    def tick(self, now_s: float, qber: QberWindow | None = None):
        def run():
            if self.select_reference is not None and not self._selected:
                with self._lock:
                    first = self._state.reference
                self.select_reference(first)
                self._selected = True
            m = self.driver.measure_sop()
            with self._lock:
                state, action = self.loop.step(self._state,
                                               SopReading(now_s, m.as_tuple(), qber))
            if action is not None:
                for waypoint in action.via:
                    self.driver.set_sop(waypoint)
                if action.target is not None:
                    self.driver.set_sop(action.target)
                if action.via:                  # blocks begun before now saw the old twist
                    state = self.loop.applied(state, self._clock())
                if action.next_reference is not None:
                    self.select_reference(action.next_reference)
            with self._lock:
                self._state = state
            return action
        return self._guarded(run)


class OzAdapter(LoopAdapter):
    """``drivers.polarization.oz_epc.OzEpc`` + ``OzLoop`` (steered on QBER windows)."""

    kind = "polarization-oz"

    def __init__(self, name: str, driver, loop: OzLoop | None = None, *,
                 stale_after_s: float = 120.0, clock: Callable[[], float] = time.monotonic):
        loop = loop or OzLoop()
        super().__init__(name, loop, loop.initial_state(), stale_after_s=stale_after_s,
                         clock=clock)
        self.driver = driver
        self._started = False

    def tick(self, window: QberWindow, now_s: float):
        """Feed one QBER window (blocks measured after the last action); ``now_s`` is when the
        resulting action takes effect, in the windows' clock."""
        def run():
            if not self._started:
                voltages = self.driver.voltages_mv()
                with self._lock:
                    self._state = self.loop.initial_state(voltages)
                self._started = True
            with self._lock:
                state, action = self.loop.step(self._state, window)
            if action is not None:
                self.driver.set_voltages(list(action.voltages_mv))
                state = self.loop.applied(state, now_s)
            with self._lock:
                self._state = state
            return action
        return self._guarded(run)

    def probe(self) -> None:
        """Read the voltages only: proves the unit answers while no QBER window arrives (an
        idle link must not look like a lost device)."""
        self._guarded(self.driver.voltages_mv)


class DetectorAdapter(LoopAdapter):
    """``drivers.detector.id120.Id120`` (or any driver with ``read_telemetry``) + DetectorLoop.

    ``window_ok(t0, t1)`` is the engine's question before it keeps a block: True only when a
    clean reading after ``t1`` exists and no alarm interval touches ``t0..t1``.
    """

    kind = "detector"

    def __init__(self, name: str, driver, loop: DetectorLoop | None = None, *,
                 stale_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        loop = loop or DetectorLoop()
        super().__init__(name, loop, loop.initial_state(), stale_after_s=stale_after_s,
                         clock=clock)
        self.driver = driver
        self._readings: tuple = (None, None)      # (last, the one before)

    def tick(self, tagger: TaggerCounts | None = None,
             acquiring: bool | Callable[[float | None], bool] = True):
        """``acquiring``: was light sent over the gate; a callable is asked with the gate's
        start (the previous reading's time, None for the first reading)."""
        def run():
            reading = self.driver.read_telemetry()
            with self._lock:
                before = self._readings[0]
            lit = acquiring(None if before is None else before.timestamp_s) \
                if callable(acquiring) else acquiring
            with self._lock:
                self._state, action = self.loop.step(
                    self._state, DetectorSample(reading, tagger, lit))
                self._readings = (reading, self._readings[0])
            return action
        return self._guarded(run)

    def last_readings(self):
        """The last telemetry reading and the one before it (None until there are)."""
        with self._lock:
            return self._readings

    def window_verdict(self, t0_s: float, t1_s: float) -> str:
        with self._lock:
            return self.loop.window_verdict(self._state, t0_s, t1_s)

    def window_ok(self, t0_s: float, t1_s: float) -> bool:
        return self.window_verdict(t0_s, t1_s) == "ok"

    def alarm_intervals(self) -> list[AlarmInterval]:
        with self._lock:
            return self.loop.alarm_intervals(self._state)


class SwitchAdapter(LoopAdapter):
    """A 1xN switch driver (``select_port``/``port``) + SwitchLoop.

    ``count_rate()`` returns ``(rate_hz, gate_start_s)``: the total click rate and the start of
    the gate it was measured over, in the ``now_s`` clock (from the detector unit's counters or
    the time tagger).
    """

    kind = "switch"

    def __init__(self, name: str, driver, loop: SwitchLoop,
                 count_rate: Callable[[], tuple[float | None, float | None]], *,
                 stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(name, loop, loop.initial_state(), stale_after_s=stale_after_s,
                         clock=clock)
        self.driver = driver
        self.count_rate = count_rate

    def tick(self, now_s: float, acquiring: bool | Callable[[float | None], bool] = True):
        """``acquiring``: was light sent over the rate's gate; a callable is asked with the
        gate's start."""
        def run():
            port = self.driver.port()
            rate, since = self.count_rate()
            lit = acquiring(since) if callable(acquiring) else acquiring
            with self._lock:
                state, action = self.loop.step(
                    self._state, SwitchReading(now_s, port, rate, since, lit))
            if action is not None:
                self.driver.select_port(action.port)
            with self._lock:
                self._state = state
            return action
        return self._guarded(run)


def all_healthy(adapters) -> bool:
    """The watchdog's health predicate over every loop of the node."""
    return all(a.healthy() for a in adapters)

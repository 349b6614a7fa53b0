"""Simulated ID120-like single-photon detector unit: the command interpreter and its TCP server.

``SpdInstrument`` is sans-I/O: one command line in, one reply line (or nothing) out. It is the
instrument's firmware: it validates settings against its own limits, writes accepted settings
into ``LinkControls.detectors[i]`` (so the link physics counts with them) and answers telemetry
from ``LinkControls.telemetry[i]`` (which the physics updates; a blinding attack shows there as a
high photocurrent and a sagging bias). Like a real SCPI instrument it never answers an error in
line: a bad command is dropped and its code lands on the ``SYST:ERR?`` queue.

``serve_spd`` puts it on a TCP port of 127.0.0.1 (line-terminated, reachable with pyvisa-py as
``TCPIP::127.0.0.1::<port>::SOCKET``) through the simulated-instrument base, whose fault knobs
(silent, garbage, close mid-reply, unplug/replug) apply unchanged.

One unit serves one or several of Bob's detector channels (``channels``): a real ID120 is a
single detector (``channels=(i,)``), a bank of four matched ones is ``channels=(0, 1, 2, 3)``.
Settings apply to every channel of the unit; telemetry is reported per channel, in the order of
``channels``. The dialect itself is documented in ``drivers/detector/id120.py``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Sequence

from firmware_protocol.wire_facts import N_DETECTORS
from sim_backend.controls import DetectorSettings, LinkControls
from sim_backend.instruments.base import LineInstrument, TcpServer

# The firmware's limits (the driver keeps its own copy and checks before sending; tests assert
# that the two agree).
EFFICIENCIES_PCT = (10, 15, 20, 25)
DEAD_TIME_RANGE_NS = (100, 25000)
BIAS_RANGE_V = (30.0, 70.0)
THRESHOLD_RANGE_MV = (10.0, 500.0)

# Status alarm bits and the instrument-side levels behind them.
ALARM_TEMPERATURE = 1          # APD warmer than TEMPERATURE_ALARM_C: cooler not regulating
ALARM_BIAS = 2                 # a measured bias more than BIAS_TOLERANCE_V from the set-point
ALARM_PHOTOCURRENT = 4         # a photocurrent above PHOTOCURRENT_ALARM_UA
TEMPERATURE_ALARM_C = -40.0
BIAS_TOLERANCE_V = 2.0
PHOTOCURRENT_ALARM_UA = 1.0

ERROR_QUEUE_LENGTH = 16

NO_ERROR = (0, "No error")
UNDEFINED_HEADER = (-113, "Undefined header")
MISSING_PARAMETER = (-109, "Missing parameter")
PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
DATA_TYPE_ERROR = (-104, "Data type error")
DATA_OUT_OF_RANGE = (-222, "Data out of range")
ILLEGAL_PARAMETER_VALUE = (-224, "Illegal parameter value")
QUEUE_OVERFLOW = (-350, "Queue overflow")


class _CommandError(Exception):
    def __init__(self, error: tuple[int, str]):
        super().__init__(error[1])
        self.error = error


def _parse_number(arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise _CommandError(DATA_TYPE_ERROR) from None
    if not math.isfinite(value):
        raise _CommandError(DATA_TYPE_ERROR)
    return value


def _parse_int(arg: str) -> int:
    value = _parse_number(arg)
    if value != int(value):
        raise _CommandError(DATA_TYPE_ERROR)
    return int(value)


def _in_range(value: float, bounds: tuple[float, float]) -> float:
    if not bounds[0] <= value <= bounds[1]:
        raise _CommandError(DATA_OUT_OF_RANGE)
    return value


class SpdInstrument(LineInstrument):
    """The ID120-like dialect acting on ``controls`` for the detector ``channels``."""

    def __init__(self, controls: LinkControls, channels: Sequence[int] = (0, 1, 2, 3), *,
                 serial: str = "SPD-SIM-0", clock: Callable[[], float] = time.monotonic):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(not 0 <= c < N_DETECTORS for c in channels) \
                or len(set(channels)) != len(channels):
            raise ValueError(f"channels={channels!r}: need distinct detector indices in "
                             f"0..{N_DETECTORS - 1}")
        self.controls = controls
        self.channels = channels
        self.identity = f"qkd-node sim,ID120,{serial},1.0"
        self._clock = clock
        self.errors: deque[tuple[int, str]] = deque()
        self._gate_start = (clock(), self._counts())
        self._setters = {
            "EFFICIENCY": self._set_efficiency,
            "DEADTIME:TIME": self._set_dead_time,
            "BIAS:VOLTAGE": self._set_bias,
            "THRESHOLD": self._set_threshold,
            "DETECTOR:STATE": self._set_state,
        }
        self._queries = {
            "*IDN?": lambda: self.identity,
            "EFFICIENCY?": lambda: f"{round(self._first().efficiency_pct):d}",
            "DEADTIME:TIME?": lambda: f"{round(self._first().dead_time_ns):d}",
            "BIAS:VOLTAGE?": lambda: f"{self._first().bias_v:.2f}",
            "THRESHOLD?": lambda: f"{self._first().threshold_mv:.1f}",
            "DETECTOR:STATE?": lambda: "1" if self._first().enabled else "0",
            "COUNTERS:DETECTION_COUNT?": self._detection_count,
            "MEASURE:BIAS?": lambda: self._per_channel("bias_v", "{:.3f}"),
            "MEASURE:PHOTOCURRENT?": lambda: self._per_channel("photocurrent_ua", "{:.3f}"),
            "MEASURE:TEMPERATURE?": lambda: self._per_channel("temperature_c", "{:.1f}"),
            "STATUS?": self._status,
            "SYST:ERR?": self._next_error,
            "SYSTEM:ERROR?": self._next_error,
            "SYST:ERR:NEXT?": self._next_error,
            "SYSTEM:ERROR:NEXT?": self._next_error,
        }
        self._events = {"*RST": self.reset, "*CLS": self.errors.clear}

    # -- the one entry point ------------------------------------------------------------------
    def handle_line(self, line: str) -> str | None:
        """Execute one command line; return the reply line (no terminator) or None."""
        header, _, arg = line.strip().partition(" ")
        header = header.upper()
        arg = arg.strip()
        try:
            if header in self._queries:
                if arg:
                    raise _CommandError(PARAMETER_NOT_ALLOWED)
                return self._queries[header]()
            if header in self._events:
                if arg:
                    raise _CommandError(PARAMETER_NOT_ALLOWED)
                self._events[header]()
                return None
            if header in self._setters:
                if not arg:
                    raise _CommandError(MISSING_PARAMETER)
                self._setters[header](arg)
                return None
            raise _CommandError(UNDEFINED_HEADER)
        except _CommandError as exc:
            self.push_error(exc.error)
            return None

    def push_error(self, error: tuple[int, str]) -> None:
        if len(self.errors) >= ERROR_QUEUE_LENGTH - 1:
            # SCPI keeps the oldest errors and replaces the newest by "Queue overflow".
            if len(self.errors) == ERROR_QUEUE_LENGTH - 1:
                self.errors.append(QUEUE_OVERFLOW)
            return
        self.errors.append(error)

    def power_cycle(self) -> None:
        """Switched off and on: factory settings, empty error queue, a new counting gate."""
        self.reset()
        self.errors.clear()
        self._gate_start = (self._clock(), self._counts())

    def reset(self) -> None:
        """``*RST``: factory settings (those of a fresh ``DetectorSettings``) on every channel."""
        factory = DetectorSettings()
        with self.controls.lock:
            self._move_bias(factory.bias_v)
            self._apply(efficiency_pct=factory.efficiency_pct, dead_time_ns=factory.dead_time_ns,
                        threshold_mv=factory.threshold_mv, enabled=factory.enabled)

    # -- settings -----------------------------------------------------------------------------
    def _apply(self, **fields) -> None:
        with self.controls.lock:
            for c in self.channels:
                for name, value in fields.items():
                    setattr(self.controls.detectors[c], name, value)

    def _set_efficiency(self, arg: str) -> None:
        value = _parse_int(arg)
        if value not in EFFICIENCIES_PCT:
            raise _CommandError(ILLEGAL_PARAMETER_VALUE)
        self._apply(efficiency_pct=float(value))

    def _set_dead_time(self, arg: str) -> None:
        self._apply(dead_time_ns=float(_in_range(_parse_int(arg), DEAD_TIME_RANGE_NS)))

    def _set_bias(self, arg: str) -> None:
        self._move_bias(_in_range(_parse_number(arg), BIAS_RANGE_V))

    def _move_bias(self, value: float) -> None:
        with self.controls.lock:
            # The unit's regulator moves the measured bias with the set-point at once; any sag
            # the physics imposes stays on top of it.
            for c in self.channels:
                step = value - self.controls.detectors[c].bias_v
                self.controls.telemetry[c].bias_v += step
            self._apply(bias_v=value)

    def _set_threshold(self, arg: str) -> None:
        self._apply(threshold_mv=_in_range(_parse_number(arg), THRESHOLD_RANGE_MV))

    def _set_state(self, arg: str) -> None:
        value = _parse_int(arg)
        if value not in (0, 1):
            raise _CommandError(ILLEGAL_PARAMETER_VALUE)
        self._apply(enabled=bool(value))

    # -- telemetry ----------------------------------------------------------------------------
    def _first(self):
        return self.controls.detectors[self.channels[0]]

    def _counts(self) -> tuple[int, ...]:
        with self.controls.lock:
            return tuple(int(self.controls.telemetry[c].counts) for c in self.channels)

    def _per_channel(self, field: str, fmt: str) -> str:
        with self.controls.lock:
            return ",".join(fmt.format(getattr(self.controls.telemetry[c], field))
                            for c in self.channels)

    def _detection_count(self) -> str:
        """Counts since start and the rate over the gate that this query closes."""
        now, counts = self._clock(), self._counts()
        start, start_counts = self._gate_start
        self._gate_start = (now, counts)
        dt = now - start
        fields = []
        for n, n0 in zip(counts, start_counts):
            rate = (n - n0) / dt if dt > 0 else 0.0
            fields.append(f"{n:d},{rate:.1f}")
        return ",".join(fields)

    def _status(self) -> str:
        with self.controls.lock:
            tele = [self.controls.telemetry[c] for c in self.channels]
            setpoint = self._first().bias_v
            temperature = max(t.temperature_c for t in tele)
            bias_ok = all(abs(t.bias_v - setpoint) <= BIAS_TOLERANCE_V for t in tele)
            alarms = 0
            if temperature > TEMPERATURE_ALARM_C:
                alarms |= ALARM_TEMPERATURE
            if not bias_ok:
                alarms |= ALARM_BIAS
            if any(t.photocurrent_ua > PHOTOCURRENT_ALARM_UA for t in tele):
                alarms |= ALARM_PHOTOCURRENT
        return f"{temperature:.1f},{int(bias_ok)},{alarms:d}"

    def _next_error(self) -> str:
        code, message = self.errors.popleft() if self.errors else NO_ERROR
        return f'{code:d},"{message}"'


def serve_spd(controls: LinkControls, channels: Sequence[int] = (0, 1, 2, 3), *,
              port: int = 0, serial: str = "SPD-SIM-0") -> TcpServer:
    """Start a simulated detector unit on 127.0.0.1 (port 0: any free port); caller closes it."""
    return TcpServer(SpdInstrument(controls, channels, serial=serial), port=port)

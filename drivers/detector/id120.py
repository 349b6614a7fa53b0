"""Driver for an ID Quantique ID120-like single-photon detector unit (SCPI lines over VISA).

The unit is reached as a VISA socket resource (``TCPIP::host::port::SOCKET``, ``\\n``-terminated
both ways); ``socket://host:port`` works too. It holds one detector channel (a real ID120) or a
matched bank of several (Bob's H/V/D/A); settings apply to the whole unit, telemetry comes back
per channel, in channel order.

Dialect (``<f>`` comma-separated, one value per channel; set commands have no reply)

    *IDN?                        -> maker,ID120,serial,firmware
    *RST / *CLS                     factory settings / clear the error queue
    EFFICIENCY <pct>, EFFICIENCY?   detection efficiency in %, one of 10, 15, 20, 25
    DEADTIME:TIME <ns>, ...?        dead time in ns, integer 100..25000
    BIAS:VOLTAGE <v>, ...?          APD bias set-point in V, 30.00..70.00 ("%.2f")
    THRESHOLD <mv>, THRESHOLD?      discriminator threshold in mV, 10.0..500.0 ("%.1f")
    DETECTOR:STATE <0|1>, ...?      detector armed (counting) or not
    COUNTERS:DETECTION_COUNT?    -> counts_1,rate_hz_1,...,counts_n,rate_hz_n
                                    counts since start; rate over the gate since the previous
                                    DETECTION_COUNT? query (the query closes the gate)
    MEASURE:BIAS?                -> <f> measured bias, V
    MEASURE:PHOTOCURRENT?        -> <f> APD photocurrent, uA
    MEASURE:TEMPERATURE?         -> <f> APD temperature, degC
    STATUS?                      -> hottest_temperature_c,bias_ok(0|1),alarm_mask
                                    (mask: 1 cooler, 2 bias off set-point, 4 photocurrent high)
    SYST:ERR?                    -> code,"message"   (0,"No error" when empty; SCPI-99 codes
                                    -113 undefined header, -222 out of range, -224 illegal value)

Provenance: the command headers ``EFFICIENCY``, ``DEADTIME:TIME``, ``BIAS:VOLTAGE`` and
``COUNTERS:DETECTION_COUNT?`` and the value sets follow the ID120-style remote interface as it is
met in the field (docs/physics.md section 8); we have not checked them byte for byte against the
vendor manual, so a real unit may need header aliases. Our own: the multi-channel replies, the
rate gate, ``THRESHOLD``, ``DETECTOR:STATE``, the ``MEASURE:*`` telemetry and ``STATUS?`` layout.
The simulated twin is ``sim_backend.instruments.spd``; a static pyvisa-sim definition is
``sim_backend/instruments/id120.yaml``.

Every set command is followed by a ``SYST:ERR?`` read, so a refusal by the unit surfaces as a
DeviceReportedError on the very call that caused it. Values outside the limits below are refused
before anything is sent (SettingOutOfRange).

Over pyvisa-py a socket closed by the unit is not reported as such (a read at end-of-stream just
waits out the timeout); ``VisaTransport`` looks at the socket itself and reports the close as
DeviceDisconnected, so the usual reconnect, re-apply and retry happen inside the call's timeout.
A set command and its ``SYST:ERR?`` read are one call: together they take at most the timeout.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

from drivers.detector.telemetry import Telemetry
from drivers.errors import DeviceProtocolError
from drivers.registry import register
from drivers.scpi import ScpiInstrument, ScpiProperty



def _parse_int(reply: str) -> int:
    value = float(reply)
    if not value.is_integer():
        raise ValueError("expected an integer")
    return int(value)


def _parse_finite(reply: str) -> float:
    value = float(reply)
    if not math.isfinite(value):
        raise ValueError("non-finite value")
    return value


def _parse_state(reply: str) -> bool:
    if reply not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return reply == "1"


def _parse_vector(reply: str) -> tuple[float, ...]:
    return tuple(_parse_finite(p) for p in reply.split(","))


def _integral(value) -> None:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError("must be a whole number")


def _boolean(value) -> None:
    if not isinstance(value, bool):
        raise TypeError("must be True or False")


class StatusAlarm(enum.IntFlag):
    NONE = 0
    TEMPERATURE = 1      # cooler not holding the APD temperature
    BIAS = 2             # a measured bias is off its set-point
    PHOTOCURRENT = 4     # a photocurrent above the unit's own alarm level


@dataclass(frozen=True)
class DetectorStatus:
    temperature_c: float     # hottest channel
    bias_ok: bool
    alarms: StatusAlarm


@register("id120")
class Id120(ScpiInstrument):
    """ID120-like SPD unit; settings are properties, telemetry is read in one go."""

    TRANSPORT_DEFAULTS: ClassVar[dict] = {"read_termination": "\n"}

    EFFICIENCIES_PCT: ClassVar[tuple[int, ...]] = (10, 15, 20, 25)
    MIN_DEAD_TIME_NS: ClassVar[int] = 100
    MAX_DEAD_TIME_NS: ClassVar[int] = 25000
    MIN_BIAS_V: ClassVar[float] = 30.0
    MAX_BIAS_V: ClassVar[float] = 70.0
    MIN_THRESHOLD_MV: ClassVar[float] = 10.0
    MAX_THRESHOLD_MV: ClassVar[float] = 500.0

    efficiency_pct = ScpiProperty(
        "EFFICIENCY?", "EFFICIENCY {}", parse=_parse_int, format=lambda v: f"{int(v):d}",
        valid_values=EFFICIENCIES_PCT, validate=_integral, units="%")
    dead_time_ns = ScpiProperty(
        "DEADTIME:TIME?", "DEADTIME:TIME {}", parse=_parse_int, format=lambda v: f"{int(v):d}",
        valid_range=(MIN_DEAD_TIME_NS, MAX_DEAD_TIME_NS), validate=_integral, units="ns")
    bias_v = ScpiProperty(
        "BIAS:VOLTAGE?", "BIAS:VOLTAGE {}", parse=_parse_finite,
        format=lambda v: f"{float(v):.2f}",
        valid_range=(MIN_BIAS_V, MAX_BIAS_V), units="V", doc="APD bias set-point")
    threshold_mv = ScpiProperty(
        "THRESHOLD?", "THRESHOLD {}", parse=_parse_finite,
        format=lambda v: f"{float(v):.1f}",
        valid_range=(MIN_THRESHOLD_MV, MAX_THRESHOLD_MV), units="mV")
    enabled = ScpiProperty(
        "DETECTOR:STATE?", "DETECTOR:STATE {}", parse=_parse_state,
        format=lambda v: "1" if v else "0", validate=_boolean)
    measured_bias_v = ScpiProperty("MEASURE:BIAS?", parse=_parse_vector, units="V")
    photocurrent_ua = ScpiProperty("MEASURE:PHOTOCURRENT?", parse=_parse_vector, units="uA")
    temperature_c = ScpiProperty("MEASURE:TEMPERATURE?", parse=_parse_vector, units="degC")

    # Wall clock for telemetry time stamps (tests replace it).
    clock: Callable[[], float] = staticmethod(time.time)

    def write(self, command: str) -> None:
        """Send a command, then read the error queue so a refusal names this command."""
        def write_and_check() -> None:
            super(Id120, self).write(command)
            self.check_errors(command)
        self.call(write_and_check)

    def reset(self) -> None:
        """``*RST``: the unit's factory settings (remembered settings are dropped too)."""
        self.write("*RST")
        for key in list(self.last_settings):
            self.forget(key)

    def detection_counts(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """Counts since start and rate (Hz) over the gate this query closes, per channel."""
        command = "COUNTERS:DETECTION_COUNT?"
        reply = self.ask(command)
        try:
            fields = reply.split(",")
            if len(fields) % 2 or not fields[0]:
                raise ValueError("expected counts,rate pairs")
            counts = tuple(_parse_int(f) for f in fields[0::2])
            rates = tuple(float(f) for f in fields[1::2])
            if any(c < 0 for c in counts) or not all(math.isfinite(r) and r >= 0 for r in rates):
                raise ValueError("negative or non-finite value")
        except ValueError as exc:
            raise DeviceProtocolError(self.name, command,
                                      f"cannot parse reply {reply[:64]!r}: {exc}") from exc
        return counts, rates

    def status(self) -> DetectorStatus:
        command = "STATUS?"
        reply = self.ask(command)
        try:
            temperature, bias_ok, mask = reply.split(",")
            status = DetectorStatus(_parse_finite(temperature), _parse_state(bias_ok),
                                    StatusAlarm(_parse_int(mask)))
        except ValueError as exc:
            raise DeviceProtocolError(self.name, command,
                                      f"cannot parse reply {reply[:64]!r}: {exc}") from exc
        return status

    def read_telemetry(self) -> Telemetry:
        """Counts, rates, bias, photocurrent and temperature of every channel, time-stamped."""
        counts, rates = self.detection_counts()
        setpoint = self.bias_v
        bias = self.measured_bias_v
        current = self.photocurrent_ua
        temperature = self.temperature_c
        for command, values in (("MEASURE:BIAS?", bias), ("MEASURE:PHOTOCURRENT?", current),
                                ("MEASURE:TEMPERATURE?", temperature)):
            if len(values) != len(counts):
                raise DeviceProtocolError(
                    self.name, command, f"{len(values)} values for {len(counts)} channels")
        return Telemetry(timestamp_s=self.clock(), counts=counts, count_rate_hz=rates,
                         bias_setpoint_v=setpoint, bias_v=bias, photocurrent_ua=current,
                         temperature_c=temperature)

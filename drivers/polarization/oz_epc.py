"""OZ Optics EPC electronic polarization controller (fibre squeezers) over its text protocol.

Dialect (docs/physics.md §8): ``V<ch>,<mV>`` sets one squeezer's drive voltage and is answered by a
confirmation line and ``Done``; ``V?`` reads all channels (one line, then ``Done``); a refused
command is answered ``ERROR: <reason>`` then ``Done``. RS-232 at 9600 baud, CR LF.

The EPC has no polarimeter: a drift-compensation loop steers its voltages on the measured QBER
(or an external polarimeter); ``status`` reports the voltages it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from drivers.base import LineDriver
from drivers.errors import DeviceReportedError, SettingOutOfRange
from drivers.registry import register


@dataclass(frozen=True)
class EpcStatus:
    voltages_mv: tuple[int, ...]     # drive voltage per squeezer channel, millivolts


@register("oz-epc")
class OzEpc(LineDriver):
    TRANSPORT_DEFAULTS: ClassVar[dict] = {"baudrate": 9600}
    WRITE_TERMINATION = b"\r\n"
    READ_TERMINATION = b"\n"

    N_CHANNELS: ClassVar[int] = 4
    MIN_VOLTAGE_MV: ClassVar[int] = -5000
    MAX_VOLTAGE_MV: ClassVar[int] = 5000

    def _check(self, command: str, channel: int, voltage_mv: int) -> None:
        if isinstance(channel, bool) or not isinstance(channel, int) or \
                not 1 <= channel <= self.N_CHANNELS:
            raise SettingOutOfRange(self.name, command,
                                    f"channel {channel!r} outside 1..{self.N_CHANNELS}")
        if isinstance(voltage_mv, bool) or not isinstance(voltage_mv, int) or \
                not self.MIN_VOLTAGE_MV <= voltage_mv <= self.MAX_VOLTAGE_MV:
            raise SettingOutOfRange(self.name, command,
                                    f"voltage {voltage_mv!r} mV outside "
                                    f"[{self.MIN_VOLTAGE_MV}, {self.MAX_VOLTAGE_MV}] mV "
                                    f"(integer millivolts)")

    def _exchange(self, command: str) -> str:
        """Send a command; return its one reply line after checking the closing ``Done``."""
        reply, done = self.ask_lines(command, 2)
        if reply.upper().startswith("ERROR"):
            raise DeviceReportedError(self.name, command, reply)
        if done != "Done":
            raise self.reply_error(command,
                                   f"expected 'Done' after the reply, got {done[:64]!r}")
        return reply

    def set_voltage(self, channel: int, voltage_mv: int) -> None:
        command = f"V{channel},{voltage_mv}"
        self._check(command, channel, voltage_mv)
        reply = self._exchange(command)
        if reply.replace(" ", "") != command:
            raise self.reply_error(command,
                                   f"confirmation {reply[:64]!r} does not match")
        self.remember(f"V{channel}", self.set_voltage, channel, voltage_mv)

    def set_voltages(self, voltages_mv: Sequence[int]) -> None:
        if len(voltages_mv) != self.N_CHANNELS:
            raise SettingOutOfRange(self.name, None, f"{len(voltages_mv)} voltages given, the "
                                                     f"EPC has {self.N_CHANNELS} channels")
        for command_channel, voltage in enumerate(voltages_mv, start=1):
            self._check(f"V{command_channel},{voltage}", command_channel, voltage)
        with self._io_lock:
            for channel, voltage in enumerate(voltages_mv, start=1):
                self.set_voltage(channel, voltage)

    def voltages_mv(self) -> tuple[int, ...]:
        reply = self._exchange("V?")
        try:
            values = tuple(int(v) for v in reply.split(","))
        except ValueError:
            values = ()
        if len(values) != self.N_CHANNELS:
            raise self.reply_error("V?", f"expected {self.N_CHANNELS} integers, "
                                         f"got {reply[:64]!r}")
        return values

    def status(self) -> EpcStatus:
        return EpcStatus(self.voltages_mv())

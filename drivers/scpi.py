"""A small declarative SCPI base: each setting is declared once with its commands and range.

    class Attenuator(ScpiInstrument):
        attenuation_db = ScpiProperty(":ATT?", ":ATT {}", parse=float, valid_range=(0, 60),
                                      units="dB")

Reading the attribute sends the query and parses the reply (an unparsable reply is a
DeviceProtocolError, never a half-parsed value); assigning validates first (SettingOutOfRange
naming value and range, nothing sent), then sends, and remembers the value so the base driver
can re-apply it after a reconnect. ``check_errors`` drains a ``SYST:ERR?`` queue.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from drivers.base import LineDriver
from drivers.errors import DeviceReportedError, SettingOutOfRange

_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*(?:,\s*"?(.*?)"?)?\s*$')


@dataclass(frozen=True)
class Identity:
    """The four ``*IDN?`` fields."""

    manufacturer: str
    model: str
    serial: str
    firmware: str


def parse_floats(count: int) -> Callable[[str], tuple[float, ...]]:
    """Parser for a comma-separated reply of exactly ``count`` numbers."""
    def parse(reply: str) -> tuple[float, ...]:
        parts = [p for p in reply.replace(";", ",").split(",")]
        if len(parts) != count:
            raise ValueError(f"expected {count} comma-separated numbers")
        return tuple(float(p) for p in parts)
    return parse


def format_floats(digits: int) -> Callable[[Any], str]:
    """Formatter for a vector setting: ``(0.1, 0.2)`` -> ``"0.1000,0.2000"``."""
    return lambda values: ",".join(f"{float(v):.{digits}f}" for v in values)


class ScpiProperty:
    """A device setting or measurement declared once: commands, parser, formatter, range."""

    def __init__(self, get: str | None = None, set: str | None = None, *,
                 parse: Callable[[str], Any] = float, format: Callable[[Any], str] = str,
                 valid_range: tuple[float, float] | None = None,
                 valid_values: Collection | None = None,
                 validate: Callable[[Any], None] | None = None,
                 units: str = "", doc: str = "", memory_key: str | None = None):
        if get is None and set is None:
            raise TypeError("a ScpiProperty needs a get or a set command")
        self.get_command, self.set_command = get, set
        self.parse, self.format = parse, format
        self.valid_range, self.valid_values = valid_range, valid_values
        self.validate_extra = validate
        self.units = units
        self.__doc__ = doc or f"SCPI {get or ''} {set or ''} [{units}]".strip()
        self.attr = ""
        # Two commands that set the same physical state (an SOP given as a vector or as angles)
        # share one memory key, so only the latest is re-applied after a reconnect.
        self.memory_key = memory_key

    def __set_name__(self, owner, name: str) -> None:
        self.attr = name
        self.memory_key = self.memory_key or name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        if self.get_command is None:
            raise AttributeError(f"{self.attr} is write-only ({self.set_command})")
        reply = instance.ask(self.get_command)
        try:
            return self.parse(reply)
        except (ValueError, TypeError, IndexError) as exc:
            raise instance.reply_error(self.get_command,
                                       f"cannot parse reply {reply[:64]!r}: {exc}") from exc

    def __set__(self, instance, value) -> None:
        if self.set_command is None:
            raise AttributeError(f"{self.attr} is read-only ({self.get_command})")
        self.check(instance.name, value)
        instance.write(self.set_command.format(self.format(value)))
        instance.remember(self.memory_key, functools.partial(self.__set__, instance), value)

    def check(self, device: str, value) -> None:
        """Raise SettingOutOfRange (naming value, range and units) before anything is sent."""
        units = f" {self.units}" if self.units else ""
        if self.valid_values is not None and value not in self.valid_values:
            raise SettingOutOfRange(device, self.set_command,
                                    f"{self.attr}={value!r} not one of "
                                    f"{sorted(self.valid_values)}{units}")
        if self.valid_range is not None:
            lo, hi = self.valid_range
            try:
                ok = lo <= value <= hi
            except TypeError as exc:
                raise SettingOutOfRange(device, self.set_command,
                                        f"{self.attr}={value!r} is not a number in "
                                        f"[{lo}, {hi}]{units}") from exc
            if not ok:
                raise SettingOutOfRange(device, self.set_command,
                                        f"{self.attr}={value!r} outside [{lo}, {hi}]{units}")
        if self.validate_extra is not None:
            try:
                self.validate_extra(value)
            except (ValueError, TypeError) as exc:
                raise SettingOutOfRange(device, self.set_command,
                                        f"{self.attr}={value!r}: {exc}") from exc


def parse_error_reply(reply: str) -> tuple[int, str]:
    """``-113,"Undefined header"`` -> (-113, "Undefined header")."""
    m = _ERROR_REPLY.match(reply)
    if m is None:
        raise ValueError(f"not an error-queue entry: {reply[:64]!r}")
    return int(m.group(1)), (m.group(2) or "").strip()


class ScpiInstrument(LineDriver):
    """Line-terminated SCPI over any transport, with an error queue."""

    ERROR_QUERY: ClassVar[str] = "SYST:ERR?"
    MAX_ERROR_QUEUE: ClassVar[int] = 32

    def identify(self) -> Identity:
        reply = self.ask("*IDN?")
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 4:
            raise self.reply_error("*IDN?", f"expected 4 fields: {reply[:80]!r}")
        return Identity(*parts)

    def read_errors(self) -> list[tuple[int, str]]:
        """Drain the device's error queue (stops at code 0), all of it within one call's timeout."""
        return self.call(self._read_errors_now)

    def _read_errors_now(self) -> list[tuple[int, str]]:
        errors = []
        for _ in range(self.MAX_ERROR_QUEUE):
            reply = self.ask(self.ERROR_QUERY)
            try:
                code, message = parse_error_reply(reply)
            except ValueError as exc:
                raise self.reply_error(self.ERROR_QUERY, str(exc)) from exc
            if code == 0:
                return errors
            errors.append((code, message))
        raise self.reply_error(self.ERROR_QUERY,
                               f"error queue did not empty after {self.MAX_ERROR_QUEUE} reads")

    def check_errors(self, command: str | None = None) -> None:
        """Raise DeviceReportedError (first code, all messages) if the queue holds any."""
        errors = self.read_errors()
        if errors:
            text = "; ".join(f"{code} {msg}".strip() for code, msg in errors)
            raise DeviceReportedError(self.name, command, f"device reported: {text}",
                                      code=errors[0][0])

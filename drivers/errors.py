"""Typed device errors. Each names the device and the command so a technician can act on it."""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every driver error."""

    def __init__(self, device: str, command: str | None, message: str):
        self.device = device
        self.command = command
        where = f"{device}" + (f" (command {command!r})" if command else "")
        super().__init__(f"{where}: {message}")


class DeviceTimeout(DeviceError):
    """No complete reply within the timeout (a short read counts as a timeout)."""


class DeviceDisconnected(DeviceError):
    """The port or connection went away (closed, unplugged, refused)."""


class DeviceProtocolError(DeviceError):
    """The device answered something that does not parse as the dialect allows."""


class DeviceReportedError(DeviceError):
    """The device itself reported an error (e.g. from a ``SYST:ERR?`` queue or an error code)."""

    def __init__(self, device: str, command: str | None, message: str, code: int | None = None):
        self.code = code
        super().__init__(device, command, message)


class SettingOutOfRange(DeviceError, ValueError):
    """A setting was refused before anything was sent: it names the value and the valid range."""


class InvalidDeviceUrl(ValueError):
    """A device URL that no transport accepts; names the URL and the forms accepted.

    Raised before anything is opened: it is a configuration (user) error, not a device fault.
    """

    def __init__(self, url: str, expected: str, problem: str | None = None):
        self.url = url
        self.expected = expected
        why = f" ({problem})" if problem else ""
        super().__init__(f"bad device URL {url!r}{why}: expected {expected}")

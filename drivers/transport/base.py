"""The byte-level interface every driver talks through.

Drivers only know bytes: a transport is opened from a URL or VISA resource string
(``open_transport`` in ``drivers.transport``) and offers blocking reads with per-call timeouts.
Short reads are timeouts, never partial values.
"""

from __future__ import annotations

import abc


class Transport(abc.ABC):
    """A byte stream to one device. ``name`` is used in every error message."""

    name: str
    url: str

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of ``data`` (raises DeviceDisconnected)."""

    @abc.abstractmethod
    def read_some(self, max_bytes: int, timeout_s: float | None = None) -> bytes:
        """Return 1..max_bytes bytes as soon as any are available (DeviceTimeout if none)."""

    @abc.abstractmethod
    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        """Return exactly ``n`` bytes (DeviceTimeout if they do not all arrive in time)."""

    @abc.abstractmethod
    def read_until(self, terminator: bytes, timeout_s: float | None = None,
                   max_bytes: int = 65536) -> bytes:
        """Return bytes up to and including ``terminator`` (DeviceTimeout otherwise)."""

    @abc.abstractmethod
    def reset_input(self) -> None:
        """Discard anything already received (after a timeout, before a retry)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def reopen(self) -> None:
        """Close and open again (reconnect after DeviceDisconnected)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""What every device driver shares: a name, a transport, and surviving a reconnect.

A driver remembers the last value of each setting it sent (switch port, SOP …). When the link
to the device drops, ``call`` reopens the transport with exponential backoff, re-applies those
settings in the order they were first made, and retries the operation once; if the device stays
away the caller gets one DeviceDisconnected that says for how long it was tried.

A call's timeout is firm: the outermost ``call`` sets a deadline (the caller's ``timeout_s``,
else the transport's), and every read, drain, backoff sleep, reopen and retry inside it, nested
calls included, gets only what is left (``time_left``). A node next to glitching hardware must be
able to rely on "this takes at most T".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from drivers.errors import DeviceDisconnected, DeviceProtocolError, DeviceTimeout
from drivers.transport import Transport, open_transport

log = logging.getLogger("qkd.drivers")

T = TypeVar("T")


class Driver:
    """Base of every device driver. Subclasses set ``TRANSPORT_DEFAULTS`` for their model."""

    # Per-model transport defaults (baud rate, RTS/CTS, terminations …); URL options override.
    TRANSPORT_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Keyword arguments of the driver's constructor that ``from_url`` must not pass to the
    # transport (e.g. ``n_ports`` of a switch model).
    DRIVER_OPTIONS: ClassVar[frozenset[str]] = frozenset()
    # Reconnect policy: delays grow from the first to the cap, for at most this many attempts.
    RECONNECT_ATTEMPTS: ClassVar[int] = 5
    RECONNECT_FIRST_DELAY_S: ClassVar[float] = 0.05
    RECONNECT_MAX_DELAY_S: ClassVar[float] = 1.0
    # Upper bound on the post-timeout drain, in transport timeouts (a chattering device
    # must not hold the driver forever).
    STALE_DRAIN_MAX_PERIODS: ClassVar[int] = 5

    def __init__(self, transport: Transport, *, name: str | None = None):
        self.transport = transport
        self.name = name or getattr(transport, "name", type(self).__name__)
        self._last_settings: dict[str, tuple[Callable[..., Any], tuple]] = {}
        self._reapplying = False
        self._stale_reply_possible = False
        self._stale_since = 0.0
        # One exchange at a time: a control loop and a status request may share a driver.
        self._io_lock = threading.RLock()
        self._closed = False
        self._deadline: float | None = None     # of the outermost call in progress

    # -- the call's deadline ------------------------------------------------------------------

    def default_timeout_s(self) -> float:
        return float(getattr(self.transport, "timeout_s", 1.0) or 0.0)

    def time_left(self, timeout_s: float | None = None) -> float:
        """What one wait may take: inside a call, what is left of the call's deadline (cut further
        to ``timeout_s`` if given); outside, ``timeout_s`` or the transport's timeout."""
        if self._deadline is None:
            return self.default_timeout_s() if timeout_s is None else max(0.0, float(timeout_s))
        left = self._deadline - time.monotonic()
        if timeout_s is not None:
            left = min(left, float(timeout_s))
        return max(0.0, left)

    # -- one command/reply exchange -----------------------------------------------------------

    def exchange(self, operation: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run one command/reply ``operation`` from a clean input, with reconnect.

        After a timeout or an unparsable reply, a late answer to that command may still be on
        its way; the next exchange first waits for the line to go quiet and drops it, so a
        slow device can never hand a stale reply to the next command. The wait for quiet takes
        at most half of what is left of the call, so the command itself keeps the other half.
        """
        def clean_then_run() -> T:
            self._drain_stale_replies()
            self.transport.reset_input()
            try:
                return operation()
            except (DeviceTimeout, DeviceProtocolError):
                self._mark_stale()
                raise
        return self.call(clean_then_run, timeout_s)

    def reply_error(self, command: str | None, message: str) -> DeviceProtocolError:
        """A DeviceProtocolError for a reply that does not parse; the line is drained next time."""
        self._mark_stale()
        return DeviceProtocolError(self.name, command, message)

    def _mark_stale(self) -> None:
        self._stale_reply_possible = True
        self._stale_since = time.monotonic()

    def _drain_stale_replies(self) -> None:
        if not self._stale_reply_possible:
            return
        quiet_s = self.default_timeout_s()
        # a late reply is expected within a few timeouts of the failure, not forever after
        window = self._stale_since + self.STALE_DRAIN_MAX_PERIODS * quiet_s - time.monotonic()
        allowed = min(window, self.time_left() / 2)
        deadline = time.monotonic() + allowed
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.transport.read_some(65536, min(quiet_s, remaining))
            except DeviceTimeout:
                break
        self._stale_reply_possible = False

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None, timeout_s: float = 1.0,
                 **options):
        """Open the model's transport for ``url`` (model defaults, then ``options``)."""
        driver_options = {k: options.pop(k) for k in list(options) if k in cls.DRIVER_OPTIONS}
        merged = {**cls.TRANSPORT_DEFAULTS, **options}
        transport = open_transport(url, name=name or url, timeout_s=timeout_s, **merged)
        try:
            return cls(transport, name=name or url, **driver_options)
        except BaseException:
            transport.close()
            raise

    # -- settings memory ----------------------------------------------------------------------

    def remember(self, key: str, apply: Callable[..., Any], *args) -> None:
        """Record that ``apply(*args)`` is the current value of setting ``key``."""
        if not self._reapplying:
            self._last_settings[key] = (apply, args)  # an update keeps its first-made order

    def forget(self, key: str) -> None:
        self._last_settings.pop(key, None)

    @property
    def last_settings(self) -> dict[str, tuple]:
        """Setting name -> last arguments sent (for status pages and tests)."""
        return {key: args for key, (_apply, args) in self._last_settings.items()}

    def reapply_settings(self) -> None:
        """Send every remembered setting again (after the device came back)."""
        self._reapplying = True
        try:
            for apply, args in list(self._last_settings.values()):
                apply(*args)
        finally:
            self._reapplying = False

    # -- reconnect ----------------------------------------------------------------------------

    def call(self, operation: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``operation``; on DeviceDisconnected reconnect, re-apply settings, retry once.

        All of it within ``timeout_s`` (default: the transport's timeout); a call made inside
        another call shares the outer call's deadline, or shortens it with its own timeout.
        """
        with self._io_lock:
            if self._closed:
                raise DeviceDisconnected(self.name, None, "driver was closed")
            if self._deadline is not None:
                outer = self._deadline
                if timeout_s is not None:     # a nested call may only shorten the deadline
                    self._deadline = min(outer, time.monotonic() + float(timeout_s))
                try:
                    return self._run_with_reconnect(operation)
                finally:
                    self._deadline = outer
            budget = self.default_timeout_s() if timeout_s is None else float(timeout_s)
            self._deadline = time.monotonic() + budget
            try:
                return self._run_with_reconnect(operation)
            finally:
                self._deadline = None

    def _run_with_reconnect(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except DeviceDisconnected as first:
            if self._reapplying:
                raise
            self.reconnect(cause=first)
            return operation()

    def reconnect(self, cause: Exception | None = None) -> None:
        """Reopen the transport with exponential backoff, then re-apply the last settings.

        Inside a call, attempts stop at the call's deadline (at least one is always made).
        """
        delay = self.RECONNECT_FIRST_DELAY_S
        started = time.monotonic()
        last_error: Exception | None = cause
        attempt = 0
        out_of_time = False
        for attempt in range(1, self.RECONNECT_ATTEMPTS + 1):
            try:
                self._reopen_within_deadline()
                self.on_reconnect()
                self.reapply_settings()
            except DeviceDisconnected as exc:
                last_error = exc
            else:
                log.info("%s: reconnected after %d attempt(s)", self.name, attempt)
                return
            if attempt < self.RECONNECT_ATTEMPTS:
                pause = delay if self._deadline is None else min(delay, self.time_left(delay))
                if pause <= 0 and self._deadline is not None:
                    out_of_time = True
                    break
                time.sleep(pause)
                delay = min(delay * 2, self.RECONNECT_MAX_DELAY_S)
        waited = time.monotonic() - started
        limit = " (the call's time limit)" if out_of_time else ""
        raise DeviceDisconnected(
            self.name, None,
            f"device at {getattr(self.transport, 'url', '?')} did not come back after "
            f"{attempt} reconnect attempts over {waited:.2f} s{limit} "
            f"(last error: {last_error})") from last_error

    def _reopen_within_deadline(self) -> None:
        """Reopen; a TCP connect may wait only for what is left of the call."""
        transport = self.transport
        connect = getattr(transport, "connect_timeout_s", None)
        if connect is None or self._deadline is None:
            transport.reopen()
            return
        transport.connect_timeout_s = max(0.001, min(connect, self.time_left(connect)))
        try:
            transport.reopen()
        finally:
            transport.connect_timeout_s = connect

    def on_reconnect(self) -> None:
        """Hook for a model that needs a handshake after reopening (before settings)."""

    def close(self) -> None:
        """Close for good: later calls raise DeviceDisconnected instead of reconnecting."""
        with self._io_lock:
            self._closed = True
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LineDriver(Driver):
    """A driver whose device speaks text lines (SCPI, DiCon, OZ Optics …).

    Every exchange starts from an empty input buffer so that a late reply to an earlier,
    timed-out command cannot be taken for the answer to this one.
    """

    WRITE_TERMINATION: ClassVar[bytes] = b"\n"
    READ_TERMINATION: ClassVar[bytes] = b"\n"
    ENCODING: ClassVar[str] = "ascii"

    def write(self, command: str) -> None:
        self.call(lambda: self._write_now(command))

    def ask(self, command: str, timeout_s: float | None = None) -> str:
        """Send ``command`` and return its one-line reply, terminator stripped."""
        def run() -> str:
            self._write_now(command)
            return self._read_line_now(command)
        return self.exchange(run, timeout_s)

    def ask_lines(self, command: str, n_lines: int, timeout_s: float | None = None) -> list[str]:
        """Send ``command`` and return exactly ``n_lines`` reply lines (all within the timeout)."""
        def run() -> list[str]:
            self._write_now(command)
            return [self._read_line_now(command) for _ in range(n_lines)]
        return self.exchange(run, timeout_s)

    def _write_now(self, command: str) -> None:
        self.transport.write(command.encode(self.ENCODING) + self.WRITE_TERMINATION)

    def _read_line_now(self, command: str) -> str:
        try:
            raw = self.transport.read_until(self.READ_TERMINATION, self.time_left())
        except DeviceTimeout as exc:
            raise DeviceTimeout(self.name, command, str(exc).split(": ", 1)[-1]) from exc
        try:
            return raw[:-len(self.READ_TERMINATION)].decode(self.ENCODING).strip()
        except UnicodeDecodeError as exc:
            raise self.reply_error(command,
                                   f"reply is not {self.ENCODING} text: {raw[:64]!r}") from exc

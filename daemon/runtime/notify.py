"""systemd's notify protocol (sd_notify) without libsystemd, and a watchdog fed only when healthy.

systemd gives a ``Type=notify`` service the address of a datagram socket in ``$NOTIFY_SOCKET``:
a filesystem path, or an abstract socket written with a leading ``@`` (a NUL byte on the wire).
A message is newline-separated ``KEY=VALUE`` assignments in one datagram: ``READY=1`` once the
node serves, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` to prove it lives,
``STOPPING=1`` on the way down. With ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``, the process it is meant for) and kills the service if no ping arrives in
time. ``Watchdog`` pings only while a health predicate holds (every control loop ticked
recently, every device answering), so a stalled event loop or a lost device ends in a restart
(``Restart=on-failure``), not in a process that looks alive and distils nothing.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable, Mapping

from daemon.waiting import wait_at_most


class NotifyError(ValueError):
    """A malformed notify setting (one line naming the variable and what is accepted)."""


def notify_address(env: Mapping[str, str]) -> str | bytes | None:
    """The socket address from ``NOTIFY_SOCKET``: a path, an abstract name (bytes), or None."""
    value = env.get("NOTIFY_SOCKET")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if not value.startswith("/"):
        raise NotifyError(f"NOTIFY_SOCKET = {value!r} is neither an absolute path nor an "
                          f"abstract socket name starting with '@'")
    return value


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout from ``WATCHDOG_USEC`` in seconds; None when it is not for us."""
    value = env.get("WATCHDOG_USEC")
    if not value:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(value)
    except ValueError:
        usec = -1
    if usec <= 0:
        raise NotifyError(f"WATCHDOG_USEC = {value!r} is not a positive integer of microseconds")
    return usec / 1e6


class Notifier:
    """Sends notify messages to ``$NOTIFY_SOCKET``; every method is a no-op outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = notify_address(env)
        self.watchdog_s = watchdog_interval_s(env)
        self.sent: int = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False if there is no socket or it failed."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:
                raise NotifyError(f"{key} = {text[:40]!r}: a notify value must be one line")
            lines.append(f"{key}={text}")
        data = ("\n".join(lines) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError:
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        return self.send(RELOADING=1)


class Watchdog:
    """Feeds systemd's watchdog at half its timeout, only while ``healthy()`` is true.

    ``pings``/``missed`` count what happened; ``tick()`` is the unit of work (testable without
    an event loop), ``run(stop)`` the coroutine the runtime starts.
    """

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool],
                 interval_s: float | None = None):
        self.notifier = notifier
        self.healthy = healthy
        timeout = notifier.watchdog_s
        self.interval_s = interval_s if interval_s is not None else (
            timeout / 2 if timeout else None)
        self.pings = 0
        self.missed = 0

    def tick(self) -> bool:
        try:
            ok = bool(self.healthy())
        except Exception:        # a predicate that breaks is not health
            ok = False
        if ok and self.notifier.watchdog():
            self.pings += 1
            return True
        self.missed += 1
        return False

    async def run(self, stop: asyncio.Event) -> None:
        if self.interval_s is None:
            return
        while not stop.is_set():
            self.tick()
            await wait_at_most(stop, self.interval_s)


async def serve(stop: asyncio.Event, healthy: Callable[[], bool],
                status_text: Callable[[], str], *, notifier: Notifier | None = None,
                status_every_s: float = 10.0) -> Watchdog:
    """The node's side of ``Type=notify``: READY once it serves (with a STATUS line), a
    STATUS line whenever it changes, WATCHDOG at half the timeout while ``healthy()``, and
    STOPPING when ``stop`` is set. Runs on the event loop on purpose: a stalled loop sends no
    pings. Returns the watchdog (its counts) when it ends."""
    notifier = notifier if notifier is not None else Notifier()
    watchdog = Watchdog(notifier, healthy)
    period = min(x for x in (watchdog.interval_s, status_every_s) if x is not None)
    last = _safe(status_text)
    notifier.ready(last)
    try:
        while not stop.is_set():
            text = _safe(status_text)
            if text != last:
                notifier.status(text)
                last = text
            if watchdog.interval_s is not None:
                watchdog.tick()
            await wait_at_most(stop, period)
    finally:
        notifier.stopping("stopping")
    return watchdog


def _safe(status_text: Callable[[], str]) -> str:
    try:
        return " ".join(str(status_text()).split())[:200]
    except Exception as exc:      # a status that breaks must not stop the pings
        return f"status unavailable: {type(exc).__name__}"

"""Byte-exact protocol tests: the test is the dialect's documentation.

    with expected_protocol(DiconMems, [(b"I1 3\\r\\n", None), (b"I1?\\r\\n", b"3\\r\\n")]) as sw:
        sw.select_port(3)
        assert sw.port() == 3

Each exchange is ``(sent, reply)``: ``sent`` the exact bytes the driver must write (None: the
device speaks unprompted), ``reply`` what the device answers (None: nothing). The helper fails as
soon as the driver writes anything else, and on exit if an exchange was left unused or a reply
left unread. A read with nothing scripted is a DeviceTimeout, as on a silent device.
"""

from __future__ import annotations

import contextlib
from collections import deque

from drivers.errors import DeviceTimeout
from drivers.transport.base import Transport


class ProtocolMismatch(AssertionError):
    pass


class ScriptedTransport(Transport):
    """A Transport that plays a script of (sent, reply) exchanges."""

    def __init__(self, exchanges, name: str = "scripted"):
        self.name = name
        self.url = "scripted://"
        self.timeout_s = 0.0
        self.log_traffic = True
        self._script = deque(self._normalise(exchanges))
        self._pending_out = bytearray()
        self._rx = bytearray()
        self.written: list[bytes] = []
        self.reopened = 0
        self.closed = False

    @staticmethod
    def _normalise(exchanges):
        out = []
        for i, item in enumerate(exchanges):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"exchange #{i} must be a (sent, reply) tuple, got {item!r}")
            sent, reply = item
            if sent is None and reply is None:
                raise TypeError(f"exchange #{i} is (None, None)")
            out.append((None if sent is None else bytes(sent),
                        None if reply is None else bytes(reply)))
        return out

    # -- the Transport interface --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        self._pending_out += data
        while self._pending_out:
            if not self._script or self._script[0][0] is None:
                raise ProtocolMismatch(f"driver sent {bytes(self._pending_out)!r} but the script "
                                       f"expects {self._describe_next()}")
            sent, reply = self._script[0]
            n = min(len(sent), len(self._pending_out))
            if self._pending_out[:n] != sent[:n]:
                raise ProtocolMismatch(f"driver sent {bytes(self._pending_out)!r}, expected "
                                       f"{sent!r}")
            if len(self._pending_out) < len(sent):
                return  # the rest of this command comes in a later write
            del self._pending_out[:len(sent)]
            self._script.popleft()
            if reply is not None:
                self._rx += reply

    def _pull_unprompted(self) -> None:
        while self._script and self._script[0][0] is None:
            self._rx += self._script.popleft()[1]

    def read_some(self, max_bytes: int, timeout_s: float | None = None) -> bytes:
        if not self._rx:
            self._pull_unprompted()
        if not self._rx:
            raise DeviceTimeout(self.name, None, "scripted device has nothing to say")
        data = bytes(self._rx[:max_bytes])
        del self._rx[:max_bytes]
        return data

    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        if len(self._rx) < n:
            self._pull_unprompted()
        if len(self._rx) < n:
            raise DeviceTimeout(self.name, None,
                                f"short read: {len(self._rx)} of {n} bytes scripted")
        data = bytes(self._rx[:n])
        del self._rx[:n]
        return data

    def read_until(self, terminator: bytes, timeout_s: float | None = None,
                   max_bytes: int = 65536) -> bytes:
        if terminator not in self._rx:
            self._pull_unprompted()
        at = self._rx.find(terminator)
        if at < 0:
            raise DeviceTimeout(self.name, None, f"no {terminator!r} in scripted reply "
                                                 f"{bytes(self._rx)!r}")
        end = at + len(terminator)
        data = bytes(self._rx[:end])
        del self._rx[:end]
        return data

    def reset_input(self) -> None:
        if self._rx:
            raise ProtocolMismatch(f"driver discarded unread reply bytes {bytes(self._rx)!r}")

    def close(self) -> None:
        self.closed = True

    def reopen(self) -> None:
        self.reopened += 1

    # -- checks -------------------------------------------------------------------------------

    def _describe_next(self) -> str:
        if not self._script:
            return "nothing more"
        sent, reply = self._script[0]
        return "no write (an unprompted reply)" if sent is None else repr(sent)

    def verify_complete(self) -> None:
        problems = []
        if self._pending_out:
            problems.append(f"incomplete command {bytes(self._pending_out)!r}")
        if self._script:
            problems.append(f"{len(self._script)} exchange(s) unused, next {self._describe_next()}")
        if self._rx:
            problems.append(f"reply bytes never read: {bytes(self._rx)!r}")
        if problems:
            raise ProtocolMismatch("; ".join(problems))


@contextlib.contextmanager
def expected_protocol(driver_factory, exchanges, **driver_kwargs):
    """Yield ``driver_factory(transport, **driver_kwargs)`` wired to a scripted device."""
    transport = ScriptedTransport(exchanges)
    driver = driver_factory(transport, **driver_kwargs)
    yield driver
    transport.verify_complete()

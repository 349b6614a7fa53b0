"""The common driver base: reconnect with exponential backoff, settings memory, one clear error."""

from __future__ import annotations

import pytest

from drivers import base
from drivers.base import Driver
from drivers.errors import DeviceDisconnected
from tests.drivers.expected import ScriptedTransport


class FlakyTransport(ScriptedTransport):
    """Reopen fails ``failures`` times, then succeeds."""

    def __init__(self, failures: int):
        super().__init__([])
        self.failures = failures
        self.timeout_s = 60.0    # sleeps are recorded, not slept: the call's deadline never binds

    def reopen(self):
        self.reopened += 1
        if self.reopened <= self.failures:
            raise DeviceDisconnected(self.name, None, "still unplugged")


class Counter(Driver):
    def __init__(self, transport, **kw):
        super().__init__(transport, **kw)
        self.applied = []

    def set_level(self, level):
        self.call(lambda: self.applied.append(level))
        self.remember("level", self.set_level, level)


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(base.time, "sleep", calls.append)
    return calls


def test_backoff_doubles_to_the_cap_then_reapplies(sleeps):
    drv = Counter(FlakyTransport(failures=4), name="dev")
    drv.RECONNECT_MAX_DELAY_S = 0.3
    drv.set_level(7)
    outcomes = iter([DeviceDisconnected("dev", None, "gone"), "ok"])

    def op():
        result = next(outcomes)
        if isinstance(result, Exception):
            raise result
        return result

    assert drv.call(op) == "ok"
    assert sleeps == [0.05, 0.1, 0.2, 0.3]               # doubled, capped
    assert drv.transport.reopened == 5
    assert drv.applied == [7, 7]                         # re-applied once, after reopening
    assert drv.last_settings == {"level": (7,)}


def test_device_that_stays_away_is_one_error_naming_attempts(sleeps):
    drv = Counter(FlakyTransport(failures=99), name="dev")
    with pytest.raises(DeviceDisconnected, match=r"dev: device at scripted:// did not come back "
                                                 r"after 5 reconnect attempts .*still unplugged"):
        drv.call(lambda: (_ for _ in ()).throw(DeviceDisconnected("dev", None, "gone")))
    assert len(sleeps) == 4                              # no sleep after the last attempt


def test_reapply_keeps_first_made_order_with_latest_values(sleeps):
    drv = Counter(FlakyTransport(failures=0))
    drv.remember("a", drv.applied.append, "a1")
    drv.remember("b", drv.applied.append, "b1")
    drv.remember("a", drv.applied.append, "a2")
    drv.reapply_settings()
    assert drv.applied == ["a2", "b1"]
    drv.forget("a")
    assert drv.last_settings == {"b": ("b1",)}

from __future__ import annotations

import pytest

from drivers import registry
from drivers.base import LineDriver
from drivers.transport import SerialTransport


@registry.register("test-loop-driver")
class LoopDriver(LineDriver):
    TRANSPORT_DEFAULTS = {"baudrate": 57600, "rtscts": True}


def test_create_opens_the_url_with_model_defaults_and_overrides():
    drv = registry.create("test-loop-driver", "loop://", name="lp", timeout_s=0.1, rtscts=False)
    try:
        assert isinstance(drv, LoopDriver) and drv.name == "lp"
        assert isinstance(drv.transport, SerialTransport)
        assert drv.transport._port.baudrate == 57600 and not drv.transport._port.rtscts
        assert drv.ask("hello") == "hello"              # loop:// echoes
    finally:
        drv.close()


def test_available_lists_registered_names():
    names = registry.available()
    assert "test-loop-driver" in names and names == sorted(names)


def test_unknown_driver_lists_the_known_ones():
    with pytest.raises(LookupError, match=r"unknown driver 'nope'; known drivers: .*test-loop"):
        registry.create("nope", "loop://")


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="already used"):
        @registry.register("test-loop-driver")
        class Other(LineDriver):
            pass

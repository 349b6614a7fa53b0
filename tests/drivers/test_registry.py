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


def test_the_polarization_and_switch_models_are_registered():
    from drivers.polarization.gp_scpi import GpPolarizationController
    from drivers.polarization.oz_epc import OzEpc
    from drivers.polarization.thorlabs_mpc320 import ThorlabsMpc320
    from drivers.switch.agiltron import AgiltronSwitch
    from drivers.switch.dicon_mems import DiconMems
    expected = {"gp-polarization": GpPolarizationController, "oz-epc": OzEpc,
                "thorlabs-mpc320": ThorlabsMpc320, "dicon-mems": DiconMems,
                "agiltron-switch": AgiltronSwitch}
    for name, cls in expected.items():
        assert registry.driver_class(name) is cls and cls.driver_name == name


def test_driver_options_are_split_from_transport_options():
    drv = registry.create("dicon-mems", "loop://", n_ports=16, baudrate=19200, timeout_s=0.05)
    try:
        assert drv.n_ports == 16 and drv.transport._port.baudrate == 19200
    finally:
        drv.close()

"""Devices from config: one connection per URL, the most specific driver, clean failures."""

from __future__ import annotations

import pytest

from daemon.config import DeviceConfig
from daemon.devices import DevicePool, DeviceSetupError
from drivers.errors import DeviceDisconnected


class Link:
    def __init__(self, link_id, *devices):
        self.id = link_id
        self.devices = tuple(DeviceConfig(*d) for d in devices)


class Opened:
    def __init__(self, driver, url):
        self.driver, self.url, self.closed = driver, url, 0

    def close(self):
        self.closed += 1


def test_a_shared_url_opens_once_with_the_most_specific_driver():
    opened = []

    def opener(driver, url):
        opened.append(Opened(driver, url))
        return opened[-1]
    pool = DevicePool(opener)
    pool.open([Link("a-b", ("board", "qkd-board", "socket://h:1"),
                    ("modulator", "board-modulator", "socket://h:1")),
               Link("a-c", ("board", "qkd-board", "socket://h:2"))])
    assert [(o.driver, o.url) for o in opened] == [("board-modulator", "socket://h:1"),
                                                   ("qkd-board", "socket://h:2")]
    assert pool.links["a-b"]["board"] is pool.links["a-b"]["modulator"]
    pool.close()
    assert [o.closed for o in opened] == [1, 1]


def test_unrelated_drivers_on_one_url_are_refused():
    pool = DevicePool(lambda d, u: Opened(d, u))
    with pytest.raises(DeviceSetupError, match=r"URL /dev/ttyUSB0 is named by unrelated "
                                               r"drivers: a-b.switch \(dicon-mems\), "
                                               r"a-b.epc \(oz-epc\)"):
        pool.open([Link("a-b", ("switch", "dicon-mems", "/dev/ttyUSB0"),
                        ("epc", "oz-epc", "/dev/ttyUSB0"))])


def test_a_device_that_does_not_open_is_one_line_and_the_others_are_closed():
    opened = []

    def opener(driver, url):
        if url == "/dev/ttyUSB9":
            raise DeviceDisconnected(url, None, "no such device\nsecond line")
        opened.append(Opened(driver, url))
        return opened[-1]
    pool = DevicePool(opener)
    with pytest.raises(DeviceSetupError) as info:
        pool.open([Link("a-b", ("board", "qkd-board", "socket://h:1"),
                        ("switch", "dicon-mems", "/dev/ttyUSB9"))])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("link a-b: device switch (dicon-mems at "
                                              "/dev/ttyUSB9): ")
    assert opened[0].closed == 1 and pool.links == {}

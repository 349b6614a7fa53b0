"""Agiltron 1xN fibre-optic switch, binary serial protocol.

Dialect (docs/physics.md §8): the 4-byte frame ``01 12 00 <ch>`` selects channel ``ch`` and the
switch echoes it back unchanged; ``01 11 00 00`` asks for the channel and is answered
``01 11 00 <ch>``. 9600 8N1, no terminator. The echo is compared byte for byte: anything else is a
protocol error, and the driver waits the switch's settle time after a change.
"""

from __future__ import annotations

import time
from typing import ClassVar

from drivers.base import Driver
from drivers.registry import register
from drivers.switch.ports import SwitchStatus, check_port, check_port_count

SELECT = 0x12
QUERY = 0x11
FRAME_BYTES = 4


def select_frame(channel: int) -> bytes:
    return bytes((0x01, SELECT, 0x00, channel))


QUERY_FRAME = bytes((0x01, QUERY, 0x00, 0x00))


@register("agiltron-switch")
class AgiltronSwitch(Driver):
    TRANSPORT_DEFAULTS: ClassVar[dict] = {"baudrate": 9600}
    DRIVER_OPTIONS: ClassVar[frozenset[str]] = frozenset({"n_ports"})

    MAX_PORTS: ClassVar[int] = 64
    DEFAULT_PORTS: ClassVar[int] = 8
    SETTLE_TIME_S: ClassVar[float] = 0.02    # MEMS switching time incl. settling

    def __init__(self, transport, *, name: str | None = None, n_ports: int | None = None):
        super().__init__(transport, name=name)
        self.n_ports = check_port_count(type(self).__name__,
                                        self.DEFAULT_PORTS if n_ports is None else n_ports,
                                        self.MAX_PORTS)

    def _transact(self, frame: bytes) -> bytes:
        def run() -> bytes:
            self.transport.write(frame)
            return self.transport.read_exact(FRAME_BYTES, self.time_left())
        return self.exchange(run)

    def select_port(self, port: int) -> None:
        frame = select_frame(check_port(self.name, f"select {port}", port, self.n_ports))
        echo = self._transact(frame)
        if echo != frame:
            raise self.reply_error(frame.hex(" "),
                                   f"echo {echo.hex(' ')} differs from the command")
        time.sleep(self.SETTLE_TIME_S)
        self.remember("port", self.select_port, port)

    def port(self) -> int:
        reply = self._transact(QUERY_FRAME)
        if reply[:3] != QUERY_FRAME[:3] or not 1 <= reply[3] <= self.n_ports:
            raise self.reply_error(QUERY_FRAME.hex(" "),
                                   f"unexpected reply {reply.hex(' ')}")
        return reply[3]

    def status(self) -> SwitchStatus:
        return SwitchStatus(self.port(), self.n_ports)

"""DiCon MEMS 1xN optical switch over RS-232 (or a serial-to-TCP bridge).

Dialect (docs/physics.md §8): ``I1 <n>`` routes switch 1 to output ``n`` (no reply on success),
``I1?`` answers the selected port; a refused command is answered ``ERR <code>``. CR LF, 9600 8N1.
After a change the driver waits the mirror's settle time, then reads the port back, so a
silently refused command is never mistaken for a switched fibre.
"""

from __future__ import annotations

import time
from typing import ClassVar

from drivers.base import LineDriver
from drivers.errors import DeviceReportedError
from drivers.registry import register
from drivers.switch.ports import SwitchStatus, check_port, check_port_count


@register("dicon-mems")
class DiconMems(LineDriver):
    TRANSPORT_DEFAULTS: ClassVar[dict] = {"baudrate": 9600}
    DRIVER_OPTIONS: ClassVar[frozenset[str]] = frozenset({"n_ports"})
    WRITE_TERMINATION = b"\r\n"
    READ_TERMINATION = b"\n"

    MAX_PORTS: ClassVar[int] = 32
    DEFAULT_PORTS: ClassVar[int] = 8
    SETTLE_TIME_S: ClassVar[float] = 0.01    # MEMS mirror switching + settling, datasheet <10 ms

    def __init__(self, transport, *, name: str | None = None, n_ports: int | None = None):
        super().__init__(transport, name=name)
        self.n_ports = check_port_count(type(self).__name__,
                                        self.DEFAULT_PORTS if n_ports is None else n_ports,
                                        self.MAX_PORTS)

    def select_port(self, port: int) -> None:
        command = f"I1 {port}"
        check_port(self.name, command, port, self.n_ports)
        with self._io_lock:
            self.write(command)
            time.sleep(self.SETTLE_TIME_S)
            now = self.port()
            if now != port:
                raise DeviceReportedError(self.name, command,
                                          f"switch reports port {now} after selecting {port}")
            self.remember("port", self.select_port, port)

    def port(self) -> int:
        reply = self.ask("I1?")
        if reply.upper().startswith("ERR"):
            raise DeviceReportedError(self.name, "I1?", reply)
        try:
            port = int(reply)
        except ValueError:
            raise self.reply_error("I1?", f"not a port number: {reply[:64]!r}") \
                from None
        if not 1 <= port <= self.n_ports:
            raise self.reply_error("I1?",
                                   f"port {port} outside 1..{self.n_ports}")
        return port

    def status(self) -> SwitchStatus:
        return SwitchStatus(self.port(), self.n_ports)

"""What all 1xN switch drivers share: the port-range check and the status record."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import SettingOutOfRange


@dataclass(frozen=True)
class SwitchStatus:
    port: int          # 1-based output port now selected
    n_ports: int


def check_port(device: str, command: str | None, port, n_ports: int) -> int:
    """Return ``port`` if it is an integer in 1..n_ports, else SettingOutOfRange."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= n_ports:
        raise SettingOutOfRange(device, command, f"port {port!r} outside 1..{n_ports}")
    return port


def check_port_count(cls_name: str, n_ports, max_ports: int) -> int:
    if isinstance(n_ports, bool) or not isinstance(n_ports, int) or not 2 <= n_ports <= max_ports:
        raise ValueError(f"{cls_name}: n_ports {n_ports!r} outside 2..{max_ports}")
    return n_ports

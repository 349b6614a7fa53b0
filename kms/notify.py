"""sd_notify for ``Type=notify``: READY=1 and STOPPING=1 on the socket systemd names.

A no-op outside systemd (no ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    target = "\0" + addr[1:] if addr.startswith("@") else addr
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(state.encode(), target)
        except OSError:
            return False
    return True

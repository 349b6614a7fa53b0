"""Where the real ports come from: the peer channel, the key store and the block roles.

``Ports`` is what the node needs besides its config; tests pass doubles, ``qkd-node run`` the
real ones from ``real_ports()``: ``daemon/runtime/adapters.py`` ``build_ports()`` maps each real
component onto its port in ``engine/ports.py`` (the CurveZMQ channel with its Wegman-Carter key
pool, the SQLite store, the block roles built from the link's policy and Alice's announced board
parameters). A build without one of the components names what it lacks instead of starting
half a node.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

from daemon.config import LinkConfig, NodeConfig
from daemon.engine.acquisition import BobAcquisition
from daemon.engine.ports import BlockRoleFactory, KeyStore, PeerChannel

REQUIRED = {"daemon.peer.channel": "the authenticated peer channel",
            "daemon.keystore": "the key store",
            "postprocessing.block": "the block roles"}
ADAPTERS = "daemon.runtime.adapters"


class MissingComponent(RuntimeError):
    """This build cannot run a node: one line naming what is missing."""


@dataclass(frozen=True)
class Ports:
    channel: Callable[[NodeConfig, LinkConfig], PeerChannel]
    store: Callable[[NodeConfig], KeyStore]        # opened once per node; close() if it has one
    roles: Callable[[NodeConfig], BlockRoleFactory]
    acquisition: Callable = BobAcquisition         # (board, BoardParameters, block_pulses)
    device_opener: Callable | None = None          # (driver, url) -> driver; None: registry


def real_ports() -> Ports:
    missing = [f"{what} ({name})" for name, what in REQUIRED.items()
               if not _present(name)]
    if missing or not _present(ADAPTERS):
        lacking = ", ".join(missing) if missing else f"the adapters ({ADAPTERS})"
        raise MissingComponent(f"this build of qkd-node lacks {lacking}; it cannot run a node")
    return importlib.import_module(ADAPTERS).build_ports()


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False

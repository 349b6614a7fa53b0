"""Where the real ports come from: the peer channel, the key store and the block roles.

``Ports`` is what the node needs besides its config; tests pass doubles, ``qkd-node run`` the
real ones from ``real_ports()``. The three real components are built on their own branches of
the work (``daemon.peer``, ``daemon.keystore``, ``postprocessing.block``); until all three are
present ``real_ports()`` names what this build lacks instead of starting half a node.

``daemon/runtime/adapters.py`` (written when the three land) has one function,
``build_ports() -> Ports``, mapping each real component onto its port in ``engine/ports.py``:

- ``channel(node_config, link)``: the CurveZMQ channel for ``link.peer`` (endpoint, bind,
  pinned ``public_key_file``, ``auth_bootstrap_file``) with ``link.keys``; ``recv()`` returns
  its authenticated envelopes, and a ``ports.Rejected`` for each message it dropped;
  ``auth_key_bits_left``/``refill_auth_key`` from its key pool.
- ``store(node_config)``: the SQLite store at ``keystore.path``; ``usage`` (stored bits against
  ``capacity_bits``) and ``digest`` (committed keys only) if it does not have them yet.
- ``roles(node_config)``: a factory building ``BlockParams`` from ``link.protocol``,
  ``link.policy``, ``link.calibration`` and the announced ``BoardParameters``, and the
  ``AliceBlock``/``BobBlock`` roles each with a fresh ``ProtocolRandom``.
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

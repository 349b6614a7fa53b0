"""A node process with the REAL peer channel and key store but FAKE block roles and devices.

``python -m tests.daemon.fast_node --config FILE``: the real ``daemon.runtime.node`` with the
real CurveZMQ/Wegman-Carter channel, the real SQLite store and the real two-step commit, but
block roles that swap two nonces and derive a key from them, and a fake board whose blocks
come every few tens of milliseconds. Blocks therefore take milliseconds instead of the
seconds real distillation takes, so the crash and recovery tests can kill a node many times
while many blocks are in every state of the commit. Tests only.
"""

from __future__ import annotations

import functools
import sys

from daemon.runtime import adapters, node
from daemon.runtime.wiring import Ports
from tests.daemon.fakes import FakeAcquisition, FakeBoard, FakeRoleFactory

KEY_BITS = 4096          # per block: 2048 bits refill the authentication pool, 8 keys stored
BLOCK_INTERVAL_S = 0.05
ROUNDS = 4               # round trips per block: faults can hit a block in its middle


def main(argv: list[str]) -> int:
    ports = Ports(channel=adapters.ChannelPort, store=adapters.StorePort,
                  roles=lambda conf: FakeRoleFactory(KEY_BITS, rounds=ROUNDS),
                  acquisition=functools.partial(FakeAcquisition, interval_s=BLOCK_INTERVAL_S),
                  device_opener=lambda driver, url: FakeBoard())
    return node.main(argv, ports)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

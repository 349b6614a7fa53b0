"""A node process with the REAL peer channel and key store but FAKE block roles and devices.

``python -m tests.daemon.fast_node --config FILE``: the real ``daemon.runtime.node`` with the
real CurveZMQ/Wegman-Carter channel, the real SQLite store and the real two-step commit, but
block roles that swap two nonces and derive a key from them, and a fake board whose blocks
come every few tens of milliseconds. Blocks therefore take milliseconds instead of the
seconds real distillation takes, so the crash and recovery tests can kill a node many times
while many blocks are in every state of the commit. Tests only.

Two environment variables serve the authentication-pool tests: ``QKD_FAST_AUTH_CHUNK`` sets
the pool's sequence-number chunk (a restart skips what is left of one; the default 1024 would
use up a small bootstrap at the first restart), and ``QKD_FAST_DIE_AT_REFILL=N`` makes the
node kill itself with SIGKILL when its N-th refill is about to enter the pool: after the
store committed the block, before the pool holds its bits.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from daemon.runtime import adapters, node
from daemon.runtime.wiring import Ports
from tests.daemon.fakes import FakeAcquisition, FakeBoard, FakeRoleFactory

KEY_BITS = 4096          # per block: 2048 bits refill the authentication pool, 8 keys stored
BLOCK_INTERVAL_S = 0.05
ROUNDS = 4               # round trips per block: faults can hit a block in its middle


class DyingChannelPort(adapters.ChannelPort):
    """The real channel port, which dies (kill -9) at its ``die_at``-th new refill."""

    die_at = 0
    refills = 0

    def refill_auth_key(self, link_id, index, key_bytes) -> int:
        if index == self.next_auth_refill(link_id):
            DyingChannelPort.refills += 1
            if DyingChannelPort.refills == self.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().refill_auth_key(link_id, index, key_bytes)


def main(argv: list[str]) -> int:
    chunk = os.environ.get("QKD_FAST_AUTH_CHUNK")
    if chunk:
        adapters.AuthKeyPool = functools.partial(adapters.AuthKeyPool,
                                                 chunk_messages=int(chunk))
    DyingChannelPort.die_at = int(os.environ.get("QKD_FAST_DIE_AT_REFILL", "0"))
    ports = Ports(channel=DyingChannelPort, store=adapters.StorePort,
                  roles=lambda conf: FakeRoleFactory(KEY_BITS, rounds=ROUNDS),
                  acquisition=functools.partial(FakeAcquisition, interval_s=BLOCK_INTERVAL_S),
                  device_opener=lambda driver, url: FakeBoard())
    return node.main(argv, ports)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

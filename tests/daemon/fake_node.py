"""A node process with FAKE ports, for the subprocess tests (runtime signals, launcher).

``python -m tests.daemon.fake_node [--fake-devices] [--abort-all] --config FILE``: the real
``daemon.runtime.node`` with the tests' doubles injected — a TCP channel without
authentication, an in-memory store and fake block roles; with ``--fake-devices`` also fake
boards and a fake acquisition, else the real drivers and Bob's real acquisition. Never shipped.
"""

from __future__ import annotations

import argparse
import functools
import sys

from daemon.engine.acquisition import BobAcquisition
from daemon.runtime import node
from daemon.runtime.wiring import Ports
from tests.daemon.fakes import FakeAcquisition, FakeBoard, FakeRoleFactory, FakeTcpChannel, \
    InMemoryKeyStore


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fake-devices", action="store_true")
    parser.add_argument("--abort-all", action="store_true")
    ours, rest = parser.parse_known_args(argv)
    ports = Ports(
        channel=lambda conf, link: FakeTcpChannel(link.peer.endpoint, link.peer.bind),
        store=lambda conf: InMemoryKeyStore(conf.keystore.capacity_bits),
        roles=lambda conf: FakeRoleFactory(1000, abort_every=1 if ours.abort_all else 0),
        # with real devices Bob's real acquisition streams and aligns the simulated board's
        # events; only the block roles, channel and store are fakes
        acquisition=(functools.partial(FakeAcquisition, interval_s=0.05)
                     if ours.fake_devices else BobAcquisition),
        device_opener=(lambda driver, url: FakeBoard()) if ours.fake_devices else None)
    return node.main(rest, ports)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

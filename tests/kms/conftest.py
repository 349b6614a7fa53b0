"""Two sites' key services (the node's real KeyServer over CurveZMQ) and their KMS servers."""

from __future__ import annotations

import pytest

from kms.config import build_policy
from kms.policy import SERVICES
from kms.server import KeyManagementServer
from kms.sim_nodes import StandInNodes
from kms.store import Store


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


USERS = {"dora": ["dispatcher"], "hana": ["hr"], "sam": ["security-officer"],
         "multi": ["dispatcher", "hr"], "appy": ["app-backend"]}


@pytest.fixture(scope="session")
def nodes():
    with StandInNodes(SERVICES, link_bytes=1 << 22, max_key_size=16384) as pair:
        yield pair


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def policy():
    return build_policy(users=USERS)


@pytest.fixture
def sites(nodes, clock, policy):
    a_node, b_node = nodes
    src_a, src_b = a_node.source(timeout_s=2.0), b_node.source(timeout_s=2.0)
    a = KeyManagementServer(Store(), policy, src_a, site="A", clock=clock,
                            pool_targets={s: 4 for s in SERVICES})
    b = KeyManagementServer(Store(), policy, src_b, site="B", clock=clock)
    yield a, b
    src_a.close()
    src_b.close()

"""kill -9 at random moments against real store files (child processes, real fsyncs).

One store: a child loops prepare/commit/discard/lease/deliver/reserve; after each kill the
file passes SQLite's integrity check, every stored ID holds the bits it was stored with,
delivered keys are gone and were delivered once, and recovery leaves nothing leased or in
doubt. Two nodes: two children run the two-step commit over pipes relayed by the test, which
kills either at random and restarts it; at the end both stores are settled (as two restarted
daemons would) and must agree block by block and bit by bit, with no key issued twice.
More kills: ``python -m tests.daemon.keystore.stress_crash --kills 500``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.daemon.keystore.crash_harness import run_pair, run_single


def test_kill9_single_store_few(tmp_path):
    stats = run_single(tmp_path, kills=3, rng=np.random.default_rng(11))
    assert stats["live"] + stats["delivered"] > 0           # the child did real work


@pytest.mark.slow
def test_kill9_single_store_20_kills(tmp_path):
    stats = run_single(tmp_path, kills=20, rng=np.random.default_rng(12))
    assert stats["delivered"] > 0


@pytest.mark.slow
def test_kill9_two_nodes_agree(tmp_path):
    stats = run_pair(tmp_path, kills=12, rng=np.random.default_rng(13))
    assert stats["committed"] > 0 and stats["masters"] > 0 and stats["slaves"] > 0

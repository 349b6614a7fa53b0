"""Acquisition against the simulated hardware over its real byte paths: Bob's blocks are
aligned to Alice's slots (her board's pattern agrees with his clicks) and never overlap."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.engine.acquisition import BobAcquisition, PatternSource, read_board_parameters
from drivers import registry
from sim_backend.params import LinkParams
from firmware_protocol.wire_facts import PATTERN_BASIS_BIT, PATTERN_VALUE_BIT
from sim_backend.serve import SimulatedPair

BLOCK_PULSES = 20_000_000


@pytest.mark.slow
def test_bob_blocks_are_aligned_to_alices_pattern_and_disjoint():
    params = LinkParams.preset("gys", distance_km=10.0)
    with SimulatedPair(params, seed=5, realtime=False) as pair:
        urls = {(e.node, e.device): e.url for e in pair.endpoints()}
        alice = registry.create("qkd-board", urls[("alice", "board")], timeout_s=5.0)
        bob = registry.create("qkd-board", urls[("bob", "board")], timeout_s=5.0)
        try:
            board = read_board_parameters(alice)
            acq = BobAcquisition(bob, board, BLOCK_PULSES)
            blocks = [acq.next_block(), acq.next_block()]
            acq.stop()
            pattern_of = PatternSource(alice)
            results = []
            for blk in blocks:
                det = blk.valid & (blk.channels < 4)
                slots, chans = blk.slots[det], blk.channels[det]
                pat = pattern_of(slots)
                bob_basis, bob_bit = chans // 2, chans % 2     # H V | D A
                same = ((pat & PATTERN_BASIS_BIT) >> 1) == bob_basis
                errors = np.count_nonzero(((pat & PATTERN_VALUE_BIT) != bob_bit) & same)
                results.append((blk, int(same.sum()), errors / max(1, same.sum())))
        finally:
            alice.close()
            bob.close()
    assert board.clock_hz == params.clock_hz and board.sync_period > 0
    (b1, n1, q1), (b2, n2, q2) = results
    # A wrong slot mapping would give a QBER of 1/2; GYS misalignment gives about 3.3 %
    # (plus dark counts). With > 10^4 basis-matched clicks the 1-sigma spread of a 3.3 %
    # estimate is < 0.18 %, so 8 % is > 25 sigma above it and far below 50 %.
    assert n1 > 10_000 and n2 > 10_000
    assert q1 < 0.08 and q2 < 0.08
    assert b1.n_pulses >= BLOCK_PULSES and b2.n_pulses >= BLOCK_PULSES
    assert b1.slots[b1.valid].max() < b2.slots[b2.valid].min()      # no slot in two blocks
